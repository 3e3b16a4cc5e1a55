using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using PeftSharp.Formats;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp tokenize --tokenizer DIR [--add-special-tokens true|false]`: JSON lines {"text": ...} on
/// standard input, one {"ids": [...], "decoded": "..."} line out per input line.
/// </summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizerOption = new Option<string>("--tokenizer")
        {
            Description = "Tokenizer folder (tokenizer.json, or vocab.json + merges.txt).",
            Required = true,
        };
        var specialOption = new Option<bool>("--add-special-tokens")
        {
            Description = "Add the tokenizer's bos/eos around each text (true|false, default true).",
            DefaultValueFactory = _ => true,
        };
        var command = new Command("tokenize", "Encode JSON lines {\"text\": ...} from standard input into token ids.");
        command.Options.Add(tokenizerOption);
        command.Options.Add(specialOption);
        command.SetAction(parseResult =>
        {
            var tokenizer = Tokenizer.FromFolder(parseResult.GetValue(tokenizerOption)!);
            Run(tokenizer, Console.In, Console.Out, parseResult.GetValue(specialOption));
        });
        return command;
    }

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Encodes every line of <paramref name="input"/>; blank lines are skipped. A malformed line throws naming its number.</summary>
    public static void Run(Tokenizer tokenizer, TextReader input, TextWriter output, bool addSpecialTokens)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        int lineNumber = 0;
        string? line;
        while ((line = input.ReadLine()) != null)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string text = ReadText(line, lineNumber);
            var ids = tokenizer.Encode(text, addSpecialTokens);
            buffer.Clear();
            using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
            {
                writer.WriteStartObject();
                writer.WriteStartArray("ids");
                foreach (int id in ids) writer.WriteNumberValue(id);
                writer.WriteEndArray();
                writer.WriteString("decoded", tokenizer.Decode(ids));
                writer.WriteEndObject();
            }
            output.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan));
        }
        output.Flush();
    }

    private static string ReadText(string line, int lineNumber)
    {
        JsonDocument document;
        try { document = JsonInput.ParseDocument(line, "", firstLine: lineNumber); }
        catch (PeftSharpException e) { throw new PeftSharpException($"standard input {e.Message.TrimEnd('.')}; expected {{\"text\": \"...\"}}.", e); }
        using (var doc = document)
        {
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
                return t.GetString()!;
        }
        throw new PeftSharpException($"standard input line {lineNumber}: expected a JSON object with a string \"text\".");
    }
}
