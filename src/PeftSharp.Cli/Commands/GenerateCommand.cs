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
            GeneratedSequence result;
            if (args.OutputIds)
            {
                var stream = tokenizer == null ? null : new TextStream(ids => tokenizer.Decode(ids, skipSpecialTokens: true), options.StopStrings);
                result = Generator.Generate(session, [promptIds], options, decodeForStops: stream == null ? null : id => { stream.Push(id); return stream.LastPiece; })[0];
                output.WriteLine("[" + string.Join(",", result.Tokens) + "]");
            }
            else
            {
                // The text is printed as it streams; the generator's stop check sees the same pieces.
                var stream = new TextStream(ids => tokenizer!.Decode(ids, skipSpecialTokens: true), options.StopStrings);
                result = Generator.Generate(session, [promptIds], options, decodeForStops: id =>
                {
                    output.Write(stream.Push(id));
                    output.Flush();
                    return stream.LastPiece;
                })[0];
                output.WriteLine(stream.Finish());
            }
            output.Flush();
            return result;
        }
        finally
        {
            model.Dispose();
        }
    }

    internal static Tokenizer LoadTokenizer(string folder) =>
        Prompts.LoadTokenizer(folder, "pass --prompt-ids and --output-ids to work with token ids");

    private static int[] EncodePrompt(Tokenizer tokenizer, string folder, string prompt, bool chat) => chat
        ? Prompts.EncodeChat(tokenizer, ChatTemplates.Resolve(null, folder)!, [ChatMessage.User(prompt)])
        : Prompts.EncodeText(tokenizer, prompt);

    /// <summary>generation_config.json's settings (eos from the tokenizer when no config names one), overridden by the command line.</summary>
    public static GenerationOptions Options(GenerateArgs args, GenerationConfig? generation, ModelConfig? model, Tokenizer? tokenizer) =>
        new GenerationSettings
        {
            MaxNewTokens = args.MaxNewTokens, Temperature = args.Temperature, TopK = args.TopK, TopP = args.TopP,
            RepetitionPenalty = args.RepetitionPenalty, Seed = args.Seed, Stop = args.Stop,
        }.Resolve(generation, model, tokenizer, DefaultMaxNewTokens);
}
