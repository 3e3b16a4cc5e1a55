using System.CommandLine;
using System.Text.Json;
using PeftSharp.Formats;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;

namespace PeftSharp.Cli.Commands;

/// <summary>What `peftsharp chat` was asked; null settings fall back to generation_config.json.</summary>
public sealed class ChatArgs
{
    public required string Model { get; init; }
    public string? Adapter { get; init; }
    public string? System { get; init; }
    public int? MaxNewTokens { get; init; }
    public double? Temperature { get; init; }
    public double? TopP { get; init; }
    public ulong? Seed { get; init; }
}

/// <summary>
/// `peftsharp chat --model DIR [--adapter DIR] [--system TEXT] [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]`:
/// a conversation on the terminal. Each user line is added to the history, the whole conversation is rendered
/// with the model's chat template (built-in ChatML when the folder has none) and the reply is streamed as it is
/// generated. An empty line, "/exit" or the end of input ends the chat; "/reset" forgets the history.
/// </summary>
public static class ChatCommand
{
    public const string ExitCommand = "/exit";
    public const string ResetCommand = "/reset";
    public const string Prompt = "> ";

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (or a Hugging Face id in the local cache).", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "PEFT adapter folder to apply." };
        var system = new Option<string?>("--system") { Description = "System message that starts the conversation." };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = $"Most tokens per reply (default: generation_config.json, else {GenerateCommand.DefaultMaxNewTokens})." };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature; 0 means greedy." };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this probability." };
        var seed = new Option<ulong?>("--seed") { Description = "Sampling seed (default: random)." };
        var command = new Command("chat", "Chat with a model (and optionally an adapter) on the terminal; /reset clears the history, /exit or an empty line ends.");
        var dtypeOption = ModelLoading.DtypeOption();
        foreach (var option in new Option[] { model, adapter, system, maxNew, temperature, topP, seed, dtypeOption })
            command.Options.Add(option);
        command.SetAction(parseResult =>
        {
            var args = new ChatArgs
            {
                Model = parseResult.GetValue(model)!,
                Adapter = parseResult.GetValue(adapter),
                System = parseResult.GetValue(system),
                MaxNewTokens = parseResult.GetValue(maxNew),
                Temperature = parseResult.GetValue(temperature),
                TopP = parseResult.GetValue(topP),
                Seed = parseResult.GetValue(seed),
            };
            Run(args, ModelLoading.LoaderFor(parseResult.GetValue(dtypeOption)!), Console.In, Console.Out);
        });
        return command;
    }

    /// <summary>
    /// Runs the conversation: reads user lines from <paramref name="input"/>, writes the replies to
    /// <paramref name="output"/> as they are generated. The model comes from <paramref name="loadModel"/>, an
    /// adapter through <paramref name="applyAdapter"/> (default <see cref="ModelLoading.ApplyAdapter"/>).
    /// Returns the conversation as it stands when the chat ends (system message included).
    /// </summary>
    public static IReadOnlyList<ChatMessage> Run(ChatArgs args, Func<string, ICausalLM> loadModel, TextReader input, TextWriter output,
        Func<ICausalLM, string, ICausalLM>? applyAdapter = null)
    {
        string folder = ModelFolder.Resolve(args.Model);
        var tokenizer = GenerateCommand.LoadTokenizer(folder);
        var template = LoadTemplate(folder, out string? notice);
        if (notice != null) output.WriteLine(notice);

        var model = loadModel(folder);
        try
        {
            if (args.Adapter != null) model = (applyAdapter ?? ModelLoading.ApplyAdapter)(model, args.Adapter);
            var options = GenerateCommand.Options(
                new GenerateArgs { Model = args.Model, MaxNewTokens = args.MaxNewTokens, Temperature = args.Temperature, TopP = args.TopP, Seed = args.Seed },
                GenerationConfig.TryLoad(folder), model.Config, tokenizer);
            ulong seed = options.Seed;
            var history = NewHistory(args.System);
            for (int turn = 0; ; turn++)
            {
                output.Write(Prompt);
                output.Flush();
                string? line = input.ReadLine();
                if (line == null)
                {
                    output.WriteLine();
                    break;
                }
                string text = line.Trim();
                if (text.Length == 0 || text == ExitCommand) break;
                if (text == ResetCommand)
                {
                    history = NewHistory(args.System);
                    output.WriteLine("(history cleared)");
                    continue;
                }

                history.Add(ChatMessage.User(line));
                int[] promptIds = tokenizer.Encode(template.Render(history, addGenerationPrompt: true), addSpecialTokens: false);
                int room = model.Config.MaxPositionEmbeddings - promptIds.Length;
                if (room <= 0)
                {
                    history.RemoveAt(history.Count - 1);
                    output.WriteLine($"(the conversation is {promptIds.Length} tokens long but the model takes at most {model.Config.MaxPositionEmbeddings}; type {ResetCommand} to start over)");
                    continue;
                }
                options.MaxNewTokens = Math.Min(args.MaxNewTokens ?? options.MaxNewTokens, room);
                options.Seed = Generator.SequenceSeed(seed, turn);
                history.Add(ChatMessage.Assistant(Reply(model, tokenizer, promptIds, options, output)));
            }
            output.Flush();
            return history;
        }
        finally
        {
            model.Dispose();
        }
    }

    private static string Reply(ICausalLM model, Tokenizer tokenizer, int[] promptIds, GenerationOptions options, TextWriter output)
    {
        using var session = model.StartDecoding(1, promptIds.Length + options.MaxNewTokens);
        var streamer = new StreamingDecoder(ids => tokenizer.Decode(ids, skipSpecialTokens: true));
        var result = Generator.Generate(session, [promptIds], options, onToken: (_, id) =>
        {
            output.Write(streamer.Push(id));
            output.Flush();
        })[0];
        output.WriteLine(streamer.Flush());
        output.Flush();
        return tokenizer.Decode(result.Tokens, skipSpecialTokens: true);
    }

    private static List<ChatMessage> NewHistory(string? system) => string.IsNullOrEmpty(system) ? [] : [ChatMessage.System(system)];

    /// <summary>The folder's chat template, or the built-in ChatML with a notice when it has none.</summary>
    public static ChatTemplate LoadTemplate(string folder, out string? notice)
    {
        notice = null;
        string config = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(config) && (File.Exists(Path.Combine(folder, "chat_template.jinja")) || HasTemplateKey(config)))
            return ChatTemplate.FromTokenizerConfig(folder);
        notice = $"({folder} has no chat template; using the built-in chatml format)";
        return File.Exists(config) ? ChatTemplate.FromTokenizerConfig(folder, fallback: "chatml") : ChatTemplate.Builtin("chatml");
    }

    private static bool HasTemplateKey(string file)
    {
        using var doc = JsonInput.ParseDocumentFile(file);
        return doc.RootElement.ValueKind == JsonValueKind.Object
            && doc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind != JsonValueKind.Null;
    }
}
