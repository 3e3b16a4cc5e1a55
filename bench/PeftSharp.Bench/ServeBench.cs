using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Server;
using PeftSharp.Serving;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `serve [--preset distilgpt2] [--seconds 20] [--max-tokens 32] [--cases 1x1,8x1,8x4,32x4] [--soak-seconds 0] [--sample-seconds 30]`: the OpenAI
/// server in process on a free loopback port over an init-model model with 4 LoRA adapters (r 8, c_attn/q_proj+v_proj);
/// for each case CLIENTSxADAPTERS, that many streaming clients send /v1/completions (ignore_eos, max_tokens) back to back
/// for the given seconds, client i using adapter i mod ADAPTERS. One JSON line per case: aggregate tokens/s, p50/p99 time
/// to first token and inter-token latency, errors, peak and current RSS. Bounded in time and count; loopback only.
/// </summary>
public static class ServeBench
{
    public static int Run(string[] args)
    {
        string preset = Arg(args, "--preset") ?? "distilgpt2";
        double seconds = double.Parse(Arg(args, "--seconds") ?? "20", System.Globalization.CultureInfo.InvariantCulture);
        int maxTokens = int.Parse(Arg(args, "--max-tokens") ?? "32");
        double soak = double.Parse(Arg(args, "--soak-seconds") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        var cases = (Arg(args, "--cases") ?? "1x1,8x1,8x4,32x4").Split(',').Select(c => c.Split('x')).Select(p => (Clients: int.Parse(p[0]), Adapters: int.Parse(p[1]))).ToArray();
        string root = Path.Combine(Path.GetTempPath(), "peftsharp-serve-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            string model = Path.Combine(root, "model");
            var init = ModelInitializer.Write(model, new InitModelOptions { Preset = preset, Architecture = preset is "tiny" or "small" ? "gpt2" : null, Seed = 1 });
            string[] targets = init.Config.ModelType == "gpt2" ? ["c_attn"] : ["q_proj", "v_proj"];
            var adapters = new List<string>();
            using (var m = Quantization.QuantizedModel.Load(model))
                for (int i = 0; i < 4; i++)
                {
                    using var peft = PeftModel.Wrap(m, new LoraConfig { R = 8, LoraAlpha = 16, InitLoraWeights = "false", TargetModules = TargetModules.FromNames(targets) }, rng: new Rng((ulong)i + 10));
                    string dir = Path.Combine(root, "adapter" + i);
                    peft.SaveAdapter(dir);
                    adapters.Add(dir);
                }
            int maxSeqs = cases.Max(c => c.Clients);
            using var engine = ServingEngine.Load(model, new ServingOptions { MaxNumSeqs = Math.Min(maxSeqs, 32), MaxModelLen = 256, MaxQueue = 256 }, modelName: preset);
            for (int i = 0; i < adapters.Count; i++) engine.LoadAdapterAsync("adapter" + i, adapters[i]).GetAwaiter().GetResult();
            var server = OpenAiServer.StartAsync(engine, new ServerOptions { Port = 0 }).GetAwaiter().GetResult();
            try
            {
                foreach (var (clients, adapterCount) in cases)
                    Console.WriteLine(RunCase(server.Address, preset, clients, adapterCount, seconds, maxTokens).ToJsonString());
                if (soak > 0)
                {
                    long before = Environment.WorkingSet;
                    // Every --sample-seconds: RSS, the managed heap and the engine's KV cache, so a slow leak shows as a trend
                    // over the soak's second half rather than as the difference between two points.
                    double every = double.Parse(Arg(args, "--sample-seconds") ?? "30", System.Globalization.CultureInfo.InvariantCulture);
                    var samples = new List<(double T, double Rss)>();
                    using var stop = new CancellationTokenSource();
                    var clock = Stopwatch.StartNew();
                    var sampler = Task.Run(async () =>
                    {
                        while (!stop.IsCancellationRequested)
                        {
                            try { await Task.Delay(TimeSpan.FromSeconds(every), stop.Token); } catch (OperationCanceledException) { break; }
                            var gc = GC.GetGCMemoryInfo();
                            double t = clock.Elapsed.TotalSeconds, rss = Environment.WorkingSet / (double)(1 << 20);
                            lock (samples) samples.Add((t, rss));
                            var m = engine.Metrics;
                            Console.WriteLine(new JsonObject
                            {
                                ["bench"] = "serve_soak_sample", ["t_s"] = Math.Round(t, 1), ["rss_mib"] = Math.Round(rss, 1),
                                ["gc_heap_mib"] = Math.Round(gc.HeapSizeBytes / (double)(1 << 20), 1),
                                ["gc_committed_mib"] = Math.Round(gc.TotalCommittedBytes / (double)(1 << 20), 1),
                                ["gen2_collections"] = GC.CollectionCount(2), ["requests"] = m.RequestsTotal, ["kv_cache_tokens_used"] = m.KvCacheTokensUsed,
                            }.ToJsonString());
                        }
                    });
                    var result = RunCase(server.Address, preset, 8, 4, soak, maxTokens);
                    stop.Cancel();
                    sampler.GetAwaiter().GetResult();
                    result["case"] = "soak";
                    result["rss_before_mib"] = before / (1 << 20);
                    // Least-squares slope of RSS over the second half of the soak (after the heap and arenas have grown to their working size).
                    var late = samples.Where(x => x.T >= soak / 2).ToList();
                    if (late.Count >= 3)
                    {
                        double mt = late.Average(x => x.T), mr = late.Average(x => x.Rss);
                        double slope = late.Sum(x => (x.T - mt) * (x.Rss - mr)) / late.Sum(x => (x.T - mt) * (x.T - mt));
                        result["rss_slope_second_half_mib_per_min"] = Math.Round(slope * 60, 2);
                        result["rss_second_half_min_max_mib"] = $"{late.Min(x => x.Rss):F0}-{late.Max(x => x.Rss):F0}";
                    }
                    Console.WriteLine(result.ToJsonString());
                }
            }
            finally
            {
                server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            return 0;
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }

    private static JsonObject RunCase(Uri address, string preset, int clients, int adapterCount, double seconds, int maxTokens)
    {
        var ttft = new List<double>();
        var itl = new List<double>();
        long tokens = 0, errors = 0, requests = 0;
        var clock = Stopwatch.StartNew();
        var deadline = TimeSpan.FromSeconds(seconds);
        using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(5) };
        var tasks = Enumerable.Range(0, clients).Select(i => Task.Run(async () =>
        {
            string body = new JsonObject
            {
                ["model"] = "adapter" + (i % adapterCount), ["prompt"] = $"Client {i} asks: what should I watch next?", ["max_tokens"] = maxTokens,
                ["temperature"] = 0, ["stream"] = true, ["ignore_eos"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true },
            }.ToJsonString();
            while (clock.Elapsed < deadline)
            {
                try
                {
                    var start = clock.Elapsed.TotalSeconds;
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                    if (!response.IsSuccessStatusCode)
                    {
                        if (Interlocked.Increment(ref errors) == 1) Console.Error.WriteLine($"serve bench: first error: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
                        continue;
                    }
                    using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                    double last = start;
                    bool first = true;
                    int got = 0;
                    while (await reader.ReadLineAsync() is { } line)
                    {
                        if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
                        var chunk = JsonNode.Parse(line["data: ".Length..])!;
                        if (chunk["usage"] is { } usage && usage.GetValueKind() == JsonValueKind.Object)
                        {
                            got = usage["completion_tokens"]!.GetValue<int>();
                            continue;
                        }
                        double now = clock.Elapsed.TotalSeconds;
                        lock (ttft) { if (first) ttft.Add(now - start); else itl.Add(now - last); }
                        first = false;
                        last = now;
                    }
                    Interlocked.Add(ref tokens, got);
                    Interlocked.Increment(ref requests);
                }
                catch (Exception e)
                {
                    if (Interlocked.Increment(ref errors) == 1) Console.Error.WriteLine($"serve bench: first error: {e.Message}");
                }
            }
        })).ToArray();
        Task.WaitAll(tasks);
        double elapsed = clock.Elapsed.TotalSeconds;
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        return new JsonObject
        {
            ["bench"] = "serve", ["model"] = preset, ["clients"] = clients, ["adapters"] = adapterCount, ["max_tokens"] = maxTokens,
            ["seconds"] = Math.Round(elapsed, 1), ["requests"] = requests, ["tokens"] = tokens, ["tokens_per_s"] = Math.Round(tokens / elapsed, 1),
            ["ttft_p50_ms"] = Pct(ttft, 0.5), ["ttft_p99_ms"] = Pct(ttft, 0.99), ["itl_p50_ms"] = Pct(itl, 0.5), ["itl_p99_ms"] = Pct(itl, 0.99),
            ["errors"] = errors, ["peak_rss_mib"] = self.PeakWorkingSet64 / (1 << 20), ["rss_mib"] = self.WorkingSet64 / (1 << 20),
            ["cores"] = Environment.ProcessorCount,
        };
    }

    private static double? Pct(List<double> values, double p)
    {
        if (values.Count == 0) return null;
        var sorted = values.Order().ToArray();
        return Math.Round(sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))] * 1000, 2);
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
