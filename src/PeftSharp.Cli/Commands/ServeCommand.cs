using System.CommandLine;
using PeftSharp.Server;
using PeftSharp.Serving;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp serve --model DIR [--adapter NAME=DIR]... [--host 127.0.0.1] [--port 8000] [--api-key KEY]
/// [--max-num-seqs N] [--max-num-tokens N] [--max-model-len N] [--max-queue N] [--max-tokens-limit N] [--request-timeout S]`:
/// an OpenAI-compatible server (<see cref="OpenAiServer"/>, in PeftSharp.Server so the library stays free of ASP.NET) over
/// one base model and many LoRA adapters, each request naming its adapter in "model". Runs until Ctrl+C / SIGTERM.
/// </summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (or a Hugging Face id in the local cache).", Required = true };
        var adapters = new Option<string[]>("--adapter") { Description = "A LoRA adapter to serve, as NAME=DIR; repeat for several. Requests pick it with \"model\": \"NAME\"." };
        var name = new Option<string?>("--served-model-name") { Description = "The name clients use for the base model (default: the --model value)." };
        var host = new Option<string>("--host") { Description = "Address to bind (default loopback; another address needs --api-key).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0: a free one).", DefaultValueFactory = _ => 8000 };
        var apiKey = new Option<string?>("--api-key") { Description = $"Every /v1 request must send `Authorization: Bearer KEY` (default: ${ServerOptions.ApiKeyVariable})." };
        var maxSeqs = new Option<int>("--max-num-seqs") { Description = "Sequences decoded together (rows of the running batch; KV cache = rows × max-model-len).", DefaultValueFactory = _ => 8 };
        var maxTokens = new Option<int>("--max-num-tokens") { Description = "Tokens (prompt + max new) running sequences may reserve together.", DefaultValueFactory = _ => 16384 };
        var maxModelLen = new Option<int?>("--max-model-len") { Description = "Most tokens of one sequence (default: the model's positions)." };
        var maxQueue = new Option<int>("--max-queue") { Description = "Requests that may wait for a row; more are answered 429.", DefaultValueFactory = _ => 64 };
        var maxNew = new Option<int>("--max-tokens-limit") { Description = "Largest max_tokens a request may ask for.", DefaultValueFactory = _ => 2048 };
        var timeout = new Option<double>("--request-timeout") { Description = "Seconds before a running request is cancelled.", DefaultValueFactory = _ => 300 };
        var noLoading = new Option<bool>("--disable-runtime-lora-updating") { Description = "Refuse /v1/load_lora_adapter and /v1/unload_lora_adapter." };
        var dtypeOption = ModelLoading.DtypeOption();
        var command = new Command("serve", "Serve a model and its LoRA adapters over an OpenAI-compatible HTTP API (chat, completions, streaming, adapters per request).");
        foreach (var option in new Option[] { model, adapters, name, host, port, apiKey, maxSeqs, maxTokens, maxModelLen, maxQueue, maxNew, timeout, noLoading, dtypeOption })
            command.Options.Add(option);
        command.SetAction(parseResult =>
        {
            var serving = new ServingOptions
            {
                MaxNumSeqs = parseResult.GetValue(maxSeqs),
                MaxNumTokens = parseResult.GetValue(maxTokens),
                MaxModelLen = parseResult.GetValue(maxModelLen),
                MaxQueue = parseResult.GetValue(maxQueue),
                MaxNewTokensLimit = parseResult.GetValue(maxNew),
            };
            var server = new ServerOptions
            {
                Host = parseResult.GetValue(host)!,
                Port = parseResult.GetValue(port),
                ApiKey = parseResult.GetValue(apiKey) ?? Environment.GetEnvironmentVariable(ServerOptions.ApiKeyVariable),
                RequestTimeout = TimeSpan.FromSeconds(parseResult.GetValue(timeout)),
                AllowRuntimeLoraUpdating = !parseResult.GetValue(noLoading),
            };
            Run(parseResult.GetValue(model)!, ParseAdapters(parseResult.GetValue(adapters) ?? []), parseResult.GetValue(name), serving, server,
                ModelLoading.LoaderFor(parseResult.GetValue(dtypeOption)!), Console.Out, CancellationToken.None).GetAwaiter().GetResult();
        });
        return command;
    }

    /// <summary>NAME=DIR pairs; a bare DIR is named after its folder.</summary>
    public static IReadOnlyList<(string Name, string Folder)> ParseAdapters(IEnumerable<string> values) => values.Select(v =>
    {
        int eq = v.IndexOf('=');
        if (eq == 0 || eq == v.Length - 1) throw new PeftSharpException($"--adapter {v}: expected NAME=DIR.");
        return eq < 0 ? (Path.GetFileName(Path.TrimEndingDirectorySeparator(v)), v) : (v[..eq], v[(eq + 1)..]);
    }).ToList();

    /// <summary>Loads the model and adapters, starts the server and runs until <paramref name="stop"/> or the host's shutdown signal.</summary>
    public static async Task Run(string modelFolder, IReadOnlyList<(string Name, string Folder)> adapters, string? servedName, ServingOptions serving,
        ServerOptions server, Func<string, Models.ICausalLM> loadModel, TextWriter output, CancellationToken stop)
    {
        server.Validate();
        var engine = ServingEngine.Load(modelFolder, serving, loadModel, servedName);
        try
        {
            foreach (var (name, folder) in adapters) await engine.LoadAdapterAsync(name, folder);
            await using var host = await OpenAiServer.StartAsync(engine, server, stop);
            output.WriteLine($"peftsharp serve: {engine.ModelName}{(adapters.Count > 0 ? " + " + string.Join(", ", adapters.Select(a => a.Name)) : "")} on {host.Address} " +
                $"(max-num-seqs {serving.MaxNumSeqs}, max-model-len {engine.MaxModelLen}{(server.ApiKey is { Length: > 0 } ? ", API key required" : "")}); Ctrl+C stops.");
            output.Flush();
            await host.WaitForShutdownAsync(stop);
        }
        finally
        {
            engine.Dispose();
        }
    }
}
