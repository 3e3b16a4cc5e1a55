using System.CommandLine;
using System.Globalization;
using PeftSharp.Formats;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;

namespace PeftSharp.Cli.Commands;

/// <summary>What `peftsharp generate` was asked; null settings fall back to generation_config.json.</summary>
public sealed class GenerateArgs
{
    public required string Model { get; init; }
    public string? Adapter { get; init; }
    public string? Prompt { get; init; }
    public int[]? PromptIds { get; init; }
    public int? MaxNewTokens { get; init; }
    public double? Temperature { get; init; }
    public int? TopK { get; init; }
    public double? TopP { get; init; }
    public double? RepetitionPenalty { get; init; }
    public ulong? Seed { get; init; }
    public bool Chat { get; init; }
    public bool OutputIds { get; init; }
    /// <summary>Stop strings (transformers' stop_strings): generation ends at the first one; the text is cut before it.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];
}

/// <summary>
/// `peftsharp generate --model DIR [--adapter DIR] --prompt TEXT | --prompt-ids 1,2,3 [--chat] [--output-ids]
/// [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]...`:
/// prints the continuation as it is generated (with stop strings, holding back the last characters that could
/// still belong to one). Defaults come from the model's generation_config.json;
/// passing --temperature (above 0), --top-k or --top-p turns sampling on, --temperature 0 forces greedy.
/// </summary>
public static class GenerateCommand
{
    /// <summary>max_new_tokens when neither the command line nor generation_config.json sets it.</summary>
    public const int DefaultMaxNewTokens = 64;

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (or a Hugging Face id in the local cache).", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "PEFT adapter folder to apply." };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text." };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids (no tokenizer needed)." };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = $"Tokens to generate (default: generation_config.json, else {DefaultMaxNewTokens})." };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature; 0 means greedy." };
        var topK = new Option<int?>("--top-k") { Description = "Keep the k most likely tokens when sampling (0: off)." };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this probability." };
        var penalty = new Option<double?>("--repetition-penalty") { Description = "Penalty for tokens already in the sequence (1: off)." };
        var seed = new Option<ulong?>("--seed") { Description = "Sampling seed (default: random)." };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt in the model's chat template as a user message." };
        var outputIds = new Option<bool>("--output-ids") { Description = "Print the generated token ids as a JSON array instead of text." };
        var stop = new Option<string[]>("--stop") { Description = "Stop when the text contains this string (cut before it); repeat for several." };
        var command = new Command("generate", "Generate a continuation of a prompt with a model (and optionally an adapter).");
        var dtypeOption = ModelLoading.DtypeOption();
        foreach (var option in new Option[] { model, adapter, prompt, promptIds, maxNew, temperature, topK, topP, penalty, seed, chat, outputIds, stop, dtypeOption })
            command.Options.Add(option);
        command.SetAction(parseResult =>
        {
            var args = new GenerateArgs
            {
                Model = parseResult.GetValue(model)!,
                Adapter = parseResult.GetValue(adapter),
                Prompt = parseResult.GetValue(prompt),
                PromptIds = ParseIds(parseResult.GetValue(promptIds)),
                MaxNewTokens = parseResult.GetValue(maxNew),
                Temperature = parseResult.GetValue(temperature),
                TopK = parseResult.GetValue(topK),
                TopP = parseResult.GetValue(topP),
                RepetitionPenalty = parseResult.GetValue(penalty),
                Seed = parseResult.GetValue(seed),
                Chat = parseResult.GetValue(chat),
                OutputIds = parseResult.GetValue(outputIds),
                Stop = parseResult.GetValue(stop) ?? [],
            };
            Run(args, ModelLoading.LoaderFor(parseResult.GetValue(dtypeOption)!), Console.Out);
        });
        return command;
    }

    /// <summary>"1,2,3" → [1, 2, 3]; null stays null.</summary>
    public static int[]? ParseIds(string? text)
    {
        if (text == null) return null;
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
                throw new PeftSharpException($"--prompt-ids: '{parts[i]}' is not a token id; expected comma-separated non-negative integers such as 1,2,3.");
        if (ids.Length == 0) throw new PeftSharpException("--prompt-ids: no token ids given; expected e.g. 1,2,3.");
        return ids;
    }

    /// <summary>
    /// Generates and writes the continuation to <paramref name="output"/> (text streamed as it comes, or a
    /// JSON array of ids). The model comes from <paramref name="loadModel"/>, an adapter through
    /// <paramref name="applyAdapter"/> (default <see cref="ModelLoading.ApplyAdapter"/>). Returns the generated sequence.
    /// </summary>
    public static GeneratedSequence Run(GenerateArgs args, Func<string, ICausalLM> loadModel, TextWriter output,
        Func<ICausalLM, string, ICausalLM>? applyAdapter = null)
    {
        if ((args.Prompt == null) == (args.PromptIds == null))
            throw new PeftSharpException("give the prompt either as text (--prompt) or as token ids (--prompt-ids), not both.");
        if (args.Chat && args.Prompt == null) throw new PeftSharpException("--chat needs a text prompt (--prompt).");
        string folder = ModelFolder.Resolve(args.Model);
        if (args.Stop.Any(string.IsNullOrEmpty)) throw new PeftSharpException("--stop: a stop string must not be empty.");
        bool needsTokenizer = args.Prompt != null || !args.OutputIds || args.Stop.Count > 0;
        Tokenizer? tokenizer = needsTokenizer ? LoadTokenizer(folder) : null;
        int[] promptIds = args.PromptIds ?? EncodePrompt(tokenizer!, folder, args.Prompt!, args.Chat);

        var model = loadModel(folder);
        try
        {
            if (args.Adapter != null) model = (applyAdapter ?? ModelLoading.ApplyAdapter)(model, args.Adapter);
            var options = Options(args, GenerationConfig.TryLoad(folder), model.Config, tokenizer);
            int room = model.Config.MaxPositionEmbeddings - promptIds.Length;
            if (room <= 0)
                throw new PeftSharpException($"the prompt has {promptIds.Length} tokens but the model takes at most {model.Config.MaxPositionEmbeddings} positions.");
            options.MaxNewTokens = Math.Min(options.MaxNewTokens, room);

            using var session = model.StartDecoding(1, promptIds.Length + options.MaxNewTokens);
            string Decode(int[] ids) => tokenizer!.Decode(ids, skipSpecialTokens: true);
            var streamer = args.OutputIds ? null : new StreamingDecoder(Decode);
            // The stop check sees the same text the streamer prints (multi-byte characters completed first).
            var stopDecoder = options.StopStrings.Count > 0 ? new StreamingDecoder(Decode) : null;
            // onToken runs before the stop check sees the token: a stop string it completes lies in the last
            // (longest stop) characters, so those wait until the next token or the end.
            int holdBack = options.StopStrings.Count == 0 ? 0 : options.StopStrings.Max(t => t.Length);
            var pending = new System.Text.StringBuilder();
            int printed = 0;
            var result = Generator.Generate(session, [promptIds], options, onToken: streamer == null ? null : (_, id) =>
            {
                pending.Append(streamer.Push(id));
                if (pending.Length <= holdBack) return;
                string ready = pending.ToString(0, pending.Length - holdBack);
                pending.Remove(0, ready.Length);
                printed += ready.Length;
                output.Write(ready);
                output.Flush();
            }, decodeForStops: stopDecoder == null ? null : id => stopDecoder.Push(id))[0];
            if (streamer != null)
            {
                pending.Append(streamer.Flush());
                string rest = result.Reason == FinishReason.StopString ? result.Text![Math.Min(printed, result.Text!.Length)..] : pending.ToString();
                output.WriteLine(rest);
            }
            else output.WriteLine("[" + string.Join(",", result.Tokens) + "]");
            output.Flush();
            return result;
        }
        finally
        {
            model.Dispose();
        }
    }

    internal static Tokenizer LoadTokenizer(string folder)
    {
        bool hasTokenizer = File.Exists(Path.Combine(folder, "tokenizer.json"))
            || (File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt")));
        if (!hasTokenizer)
            throw new PeftSharpException($"{folder}: no tokenizer (tokenizer.json, or vocab.json + merges.txt); pass --prompt-ids and --output-ids to work with token ids.");
        return Tokenizer.FromFolder(folder);
    }

    private static int[] EncodePrompt(Tokenizer tokenizer, string folder, string prompt, bool chat)
    {
        if (chat)
        {
            var template = ChatTemplate.FromTokenizerConfig(folder);
            string text = template.Render([ChatMessage.User(prompt)], addGenerationPrompt: true);
            return tokenizer.Encode(text, addSpecialTokens: false);
        }
        var ids = tokenizer.Encode(prompt);
        if (ids.Length > 0) return ids;
        return tokenizer.BosTokenId is int bos ? [bos]
            : tokenizer.EosTokenId is int eos ? [eos]
            : throw new PeftSharpException("the prompt is empty and the tokenizer has no bos or eos token to start from; give some text.");
    }

    /// <summary>generation_config.json's settings (eos from the tokenizer when no config names one), overridden by the command line.</summary>
    public static GenerationOptions Options(GenerateArgs args, GenerationConfig? generation, ModelConfig? model, Tokenizer? tokenizer)
    {
        var options = GenerationOptions.FromConfig(generation, model, DefaultMaxNewTokens);
        if (options.EosTokenIds.Length == 0 && tokenizer?.EosTokenId is int eos) options.EosTokenIds = [eos];
        options.PadTokenId ??= tokenizer?.PadTokenId;
        if (args.MaxNewTokens is int n) options.MaxNewTokens = n;
        if (args.Temperature is double t)
        {
            options.Temperature = t;
            options.DoSample = t > 0;
        }
        if (args.TopK is int k)
        {
            options.TopK = k;
            options.DoSample |= args.Temperature is not 0.0;
        }
        if (args.TopP is double p)
        {
            options.TopP = p;
            options.DoSample |= args.Temperature is not 0.0;
        }
        if (args.RepetitionPenalty is double r) options.RepetitionPenalty = r;
        if (args.Stop.Count > 0) options.StopStrings = args.Stop.ToArray();
        options.Seed = args.Seed ?? BitConverter.ToUInt64(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
        options.Validate();
        return options;
    }
}
