using System.Diagnostics;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

/// <summary>
/// `peftsharp train` killed with SIGKILL at random moments (while stepping, saving a checkpoint, rotating, writing the
/// final adapter): every folder left is complete or absent, the resumed run ends with the uninterrupted run's adapter
/// bytes, and no temporary survives the next run. A full disk is a user error that leaves the previous run intact.
/// PEFTSHARP_CRASH_TRIALS sets the number of trials (default 3 here; bench/crash-safety.sh runs 20).
/// </summary>
public sealed class CrashSafetyTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-crash").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static string Cli => Path.Combine(AppContext.BaseDirectory, "PeftSharp.Cli.dll");

    private string Setup(string outputDir, int maxSteps = 12)
    {
        string model = Path.Combine(_root, "model");
        if (!Directory.Exists(model)) ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 4 });
        string data = Path.Combine(_root, "data.jsonl");
        if (!File.Exists(data))
            File.WriteAllLines(data, Enumerable.Range(0, 32).Select(i => $$"""{"prompt": "Topic {{i % 5}}?", "completion": " Video {{i}}."}"""));
        string config = Path.Combine(_root, Path.GetFileName(outputDir) + ".yaml");
        File.WriteAllText(config, $"""
            model:
              name_or_path: "{model}"
            lora:
              r: 4
              lora_alpha: 8
              lora_dropout: 0.1
              target_modules: [q_proj, v_proj]
            data:
              train_file: "{data}"
            training:
              output_dir: "{outputDir}"
              max_steps: {maxSteps}
              per_device_train_batch_size: 4
              gradient_accumulation_steps: 2
              learning_rate: 1.0e-3
              save_strategy: steps
              save_steps: 2
              save_total_limit: 2
              logging_steps: 1
              seed: 3
            """);
        return config;
    }

    private static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Cli);
        foreach (var a in args) info.ArgumentList.Add(a);
        var p = Process.Start(info)!;
        p.OutputDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        return p;
    }

    private static (int Code, string Error) Run(params string[] args)
    {
        using var p = Start(args);
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, error);
    }

    /// <summary>Every checkpoint folder holds all its files; a top-level adapter config implies its weights.</summary>
    private static void AssertNothingTorn(string dir)
    {
        foreach (var checkpoint in Directory.GetDirectories(dir, "checkpoint-*"))
        {
            foreach (var f in new[] { TrainerState.FileName, "optimizer.safetensors", "scheduler.json", "adapter_config.json", PeftModel.WeightsFileName, "trainable.safetensors" })
                Assert.True(File.Exists(Path.Combine(checkpoint, f)), $"{checkpoint} lacks {f}");
            TrainerState.Read(Path.Combine(checkpoint, TrainerState.FileName));
            LoraConfig.Load(checkpoint);
        }
        if (File.Exists(Path.Combine(dir, LoraConfig.FileName)))
        {
            Assert.True(File.Exists(Path.Combine(dir, PeftModel.WeightsFileName)));
            using var weights = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFileName));
            Assert.NotEmpty(weights.Tensors);
        }
    }

    [Fact]
    public void KilledRunsLeaveNothingTornAndResumeToTheUninterruptedAdapter()
    {
        Assert.True(File.Exists(Cli), $"{Cli} not built");
        string reference = Path.Combine(_root, "reference");
        var clock = Stopwatch.StartNew();
        var (code, error) = Run("train", Setup(reference));
        Assert.True(code == 0, error);
        double seconds = clock.Elapsed.TotalSeconds;
        var expected = File.ReadAllBytes(Path.Combine(reference, PeftModel.WeightsFileName));

        int trials = int.TryParse(Environment.GetEnvironmentVariable("PEFTSHARP_CRASH_TRIALS"), out int t) ? t : 3;
        var rng = new Random(20261205);
        for (int trial = 0; trial < trials; trial++)
        {
            string dir = Path.Combine(_root, $"trial{trial}");
            string config = Setup(dir);
            // Kill somewhere between the process start and the end of a full run (startup included), then resume; a resumed
            // run may be killed again once before it is let to finish.
            for (int attempt = 0; attempt < 2; attempt++)
            {
                bool resume = Directory.Exists(dir) && SftCheckpoints(dir).Count > 0;
                using var p = Start(resume ? ["train", config, "--set", "training.resume_from_checkpoint=true"] : ["train", config]);
                Thread.Sleep(TimeSpan.FromSeconds(rng.NextDouble() * seconds));
                if (!p.HasExited) p.Kill();
                p.WaitForExit();
                if (Directory.Exists(dir)) AssertNothingTorn(dir);
            }
            bool canResume = Directory.Exists(dir) && SftCheckpoints(dir).Count > 0;
            var (c, e) = canResume ? Run("train", config, "--set", "training.resume_from_checkpoint=true") : Run("train", config);
            Assert.True(c == 0, $"trial {trial}: {e}");
            AssertNothingTorn(dir);
            Assert.DoesNotContain(Directory.GetFileSystemEntries(dir).Select(Path.GetFileName),
                n => n!.StartsWith(".checkpoint-") || n.StartsWith(".deleting-") || n.EndsWith(".tmp"));
            Assert.Equal(expected, File.ReadAllBytes(Path.Combine(dir, PeftModel.WeightsFileName)));
        }
    }

    private static List<(int Step, string Path)> SftCheckpoints(string dir) => Checkpointing.List(dir);

    /// <summary>A fact that needs root (it mounts a small tmpfs to fill).</summary>
    public sealed class RootFactAttribute : FactAttribute
    {
        public RootFactAttribute()
        {
            if (Environment.UserName != "root") Skip = "mounting a tmpfs to fill needs root (CI runs as root).";
        }
    }

    [RootFact]
    public void AFullDiskIsAUserErrorThatLeavesThePreviousRunIntact()
    {
        string mount = Path.Combine(_root, "tmpfs");
        Directory.CreateDirectory(mount);
        var (mounted, why) = Run2("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount);
        Assert.True(mounted == 0, $"mount -t tmpfs failed as root: {why.Trim()}");
        try
        {
            string dir = Path.Combine(mount, "run");
            string config = Setup(dir, maxSteps: 4);
            var (code, error) = Run("train", config);
            Assert.True(code == 0, error);
            var before = new[] { PeftModel.WeightsFileName, LoraConfig.FileName, "metrics.jsonl", TrainerState.FileName }
                .ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(dir, f)));
            // Fill the disk, leaving a few KB, then train again into the same folder.
            using (var filler = new FileStream(Path.Combine(mount, "filler"), FileMode.Create))
            {
                var block = new byte[4096];
                try { while (true) filler.Write(block); } catch (IOException) { }
            }
            (code, error) = Run("train", config);
            Assert.Equal(1, code);
            Assert.Contains("space", error, StringComparison.OrdinalIgnoreCase);
            foreach (var (file, bytes) in before) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(dir, file)));
        }
        finally
        {
            Run2("umount", mount);
        }
    }

    private static (int Code, string Error) Run2(string file, params string[] args)
    {
        try
        {
            var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args) info.ArgumentList.Add(a);
            using var p = Process.Start(info)!;
            string e = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, e);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, e.Message);
        }
    }
}
