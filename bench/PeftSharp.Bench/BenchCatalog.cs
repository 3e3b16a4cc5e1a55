namespace PeftSharp.Bench;

/// <summary>
/// `dotnet run -c Release --project bench/PeftSharp.Bench -- NAME [options]`. Each benchmark prints
/// one JSON line per case, so results can be collected and compared by scripts.
/// </summary>
public static class BenchCatalog
{
    private static readonly Dictionary<string, Func<string[], int>> Benches = new(StringComparer.Ordinal)
    {
        ["tokenizer"] = TokenizerBench.Run,
        ["quant"] = QuantBench.Run,
        ["ops"] = OpsBench.Run,
        ["gemm"] = GemmBench.Run,
        ["model"] = ModelBench.Run,
        ["train"] = TrainBench.Run,
        ["grpo"] = GrpoBench.Run,
        ["data"] = DataBench.Run,
        ["serve"] = ServeBench.Run,
        ["fuzz"] = FuzzBench.Run,
        ["allreduce"] = AllReduceBench.Run,
        ["stream"] = StreamBench.Run,
        ["peak"] = PeakBench.Run,
        ["llama"] = LlamaPeerBench.Run,
    };

    public static int Run(string[] args)
    {
        if (args.Length == 0 || !Benches.TryGetValue(args[0], out var bench))
        {
            Console.Error.WriteLine($"usage: PeftSharp.Bench <{string.Join('|', Benches.Keys.Order())}> [options]");
            return 1;
        }
        return bench(args[1..]);
    }
}
