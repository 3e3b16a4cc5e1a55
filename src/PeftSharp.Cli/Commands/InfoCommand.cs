using System.CommandLine;
using PeftSharp.Kernels;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp info`: what the engine sees of this machine.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "Print the SIMD path and core count the kernels will use.");
        command.SetAction(_ =>
        {
            Console.WriteLine($"simd: {Simd.Best}");
            Console.WriteLine($"cores: {Environment.ProcessorCount}");
            Console.WriteLine($"runtime: {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}");
        });
        return command;
    }
}
