using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace PeftSharp.Training.Rl;

/// <summary>A host-built reward named in grpo.reward_funcs as KIND:ARGUMENT, and the unique name it logs under.</summary>
public sealed record RewardSpec(string Kind, string Argument, string Name);

/// <summary>One sampled completion as a reward function sees it: the prompt text, the completion text, its token count, and the dataset row's fields.</summary>
public sealed record RewardInput(string Prompt, string Completion, int CompletionTokens, JsonObject Row);

/// <summary>
/// A reward function (TRL's reward_funcs): a score for each completion of a batch; NaN means "does not apply" (left out of the
/// weighted sum, as TRL's nansum of None). .NET programs implement it or wrap a delegate with <see cref="Rewards.FromFunc"/>.
/// </summary>
public interface IRewardFunction
{
    /// <summary>The name its metrics are logged under (rewards/NAME/mean).</summary>
    string Name { get; }
    double[] Score(IReadOnlyList<RewardInput> completions);
}

/// <summary>
/// The built-in verifiable rewards, named in the config's grpo.reward_funcs as KIND or KIND:ARGUMENT:
/// <list type="bullet">
/// <item><c>exact_match:COLUMN</c>: 1 when the completion equals the row's COLUMN after normalisation (trimmed, lower case, runs of
/// white space made one space, trailing . ! ? removed), or any string of it when COLUMN is a list (the acceptable answers), else 0;</item>
/// <item><c>numeric:COLUMN</c>: 1 when the completion's answer (the content of its last \boxed{...}, else its last number) equals the
/// number in the row's COLUMN (its last number, or the JSON number), within 1e-6; else 0;</item>
/// <item><c>contains:COLUMN</c>: 1 when the normalised completion contains the row's COLUMN (normalised), or any string of it when
/// COLUMN is a list (e.g. the acceptable answers), else 0;</item>
/// <item><c>regex:PATTERN</c>: 1 when the completion matches PATTERN (.NET syntax, searched anywhere, dot matches new lines; anchor with ^ $), else 0;</item>
/// <item><c>json</c>: 1 when the trimmed completion parses as JSON, else 0; <c>json:SCHEMA_FILE</c>: and is valid against that JSON Schema;</item>
/// <item><c>length:N</c>: −max(0, tokens − N) / N: 0 up to N completion tokens, more negative the longer past it;</item>
/// <item><c>reward_model:PATH</c>: a trained reward model's score of prompt + completion (<see cref="RewardModelReward"/>).</item>
/// </list>
/// </summary>
public static class Rewards
{
    public static readonly string[] Kinds = ["exact_match", "contains", "numeric", "regex", "json", "length", "reward_model"];

    /// <summary>
    /// Kinds a host builds (the library cannot): <c>judge:FILE</c>, an LLM judge's score (PeftSharp.AI's JudgeReward, which `peftsharp
    /// train` supplies). A config may name them; <see cref="Parse"/> hands them to its <c>host</c> resolver and refuses them without one.
    /// </summary>
    public static readonly string[] HostKinds = ["judge"];

    public static IRewardFunction FromFunc(string name, Func<RewardInput, double> score) => new Delegate(name, score);

    /// <summary>The built-in reward a config names; unique names (a repeated kind gets _2, _3). <paramref name="host"/> builds the <see cref="HostKinds"/>.</summary>
    public static List<IRewardFunction> Parse(IReadOnlyList<string> specs, Func<RewardSpec, IRewardFunction>? host = null)
    {
        var list = new List<IRewardFunction>();
        var seen = new Dictionary<string, int>();
        foreach (var spec in specs)
        {
            int colon = spec.IndexOf(':');
            string kind = colon < 0 ? spec : spec[..colon], arg = colon < 0 ? "" : spec[(colon + 1)..];
            int k = seen[kind] = seen.GetValueOrDefault(kind) + 1;
            string name = k == 1 ? kind : $"{kind}_{k}";
            string Need(string what) => arg.Length > 0 ? arg : throw new PeftSharpException($"grpo.reward_funcs: '{spec}' needs {what} ({kind}:{what.ToUpperInvariant()}).");
            list.Add(kind switch
            {
                "exact_match" => new Delegate(name, ExactMatchScorer(Need("column"))),
                "contains" => new Delegate(name, ContainsScorer(Need("column"))),
                "numeric" => new Delegate(name, NumericScorer(Need("column"))),
                "regex" => new Delegate(name, RegexScorer(Need("pattern"))),
                "json" => new Delegate(name, arg.Length == 0 ? r => IsJson(r.Completion) ? 1 : 0 : SchemaScorer(arg)),
                "length" => new Delegate(name, LengthScorer(int.TryParse(Need("tokens"), CultureInfo.InvariantCulture, out int n) && n > 0 ? n
                    : throw new PeftSharpException($"grpo.reward_funcs: '{spec}': the length must be a whole number of tokens above 0."))),
                "reward_model" => new RewardModelReward(name, Need("path")),
                _ when HostKinds.Contains(kind) => host?.Invoke(new RewardSpec(kind, Need("file"), name))
                    ?? throw new PeftSharpException($"grpo.reward_funcs: '{spec}' is built by the host: `peftsharp train` builds it; a program passes GrpoTuning.Run a resolver."),
                _ => throw new PeftSharpException($"grpo.reward_funcs: unknown reward '{kind}'.{Suggestions.DidYouMean(kind, Kinds)} Built in: {string.Join(", ", Kinds)}."),
            });
        }
        return list;
    }

    public static string Normalize(string s)
    {
        s = Regex.Replace(s.Trim().ToLowerInvariant(), @"\s+", " ");
        return s.TrimEnd('.', '!', '?').TrimEnd();
    }

    /// <summary>The answer of a text: the content of its last \boxed{...} (nested braces allowed), else its last number; null when none.</summary>
    public static double? ExtractNumber(string text)
    {
        int at = text.LastIndexOf(@"\boxed{", StringComparison.Ordinal);
        if (at >= 0)
        {
            int start = at + 7, depth = 1, i = start;
            for (; i < text.Length && depth > 0; i++) depth += text[i] == '{' ? 1 : text[i] == '}' ? -1 : 0;
            if (depth == 0) return LastNumber(text[start..(i - 1)]);
        }
        return LastNumber(text);
    }

    private static double? LastNumber(string text)
    {
        var matches = Regex.Matches(text, @"-?\d[\d,]*(?:\.\d+)?|-?\.\d+");
        if (matches.Count == 0) return null;
        return double.TryParse(matches[^1].Value.Replace(",", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : null;
    }

    /// <summary><c>json:SCHEMA_FILE</c>: 1 when the trimmed completion parses as JSON and is valid against the JSON Schema in the file (JsonSchema.Net: drafts 6 to 2020-12), else 0.</summary>
    private static Func<RewardInput, double> SchemaScorer(string file)
    {
        if (!File.Exists(file)) throw new PeftSharpException($"grpo.reward_funcs: json:{file}: no such schema file (a relative path is read beside the config file).");
        Json.Schema.JsonSchema schema;
        // Built into a registry of its own: JsonSchema.Net registers a schema by its URI (its `$id`, else the base URI), and
        // the global registry refuses an overwrite, so the same file loaded twice in one process (a second run, an edited
        // schema) would be refused.
        var options = new Json.Schema.BuildOptions { SchemaRegistry = new Json.Schema.SchemaRegistry() };
        try { schema = Json.Schema.JsonSchema.FromText(File.ReadAllText(file), options, new Uri($"urn:peftsharp:reward-schema:{Guid.NewGuid():N}")); }
        catch (Exception e) when (e is JsonException or Json.Schema.JsonSchemaException or ArgumentException or InvalidOperationException)
        {
            throw new PeftSharpException($"grpo.reward_funcs: json:{file}: not a JSON Schema: {e.Message}", e);
        }
        return r =>
        {
            JsonDocument document;
            try { document = JsonDocument.Parse(r.Completion.Trim()); }
            catch (JsonException) { return 0; }
            using (document) return schema.Evaluate(document.RootElement).IsValid ? 1 : 0;
        };
    }

    public static bool IsJson(string text)
    {
        try { JsonNode.Parse(text.Trim()); return text.Trim().Length > 0; }
        catch (JsonException) { return false; }
    }

    private static string Column(JsonObject row, string column) => row[column] switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        null => throw new PeftSharpException($"grpo.reward_funcs: the dataset has no column \"{column}\"."),
        var node => node.ToJsonString(),
    };

    /// <summary>The row's COLUMN as the answers it accepts: each string of a list, else the one value.</summary>
    private static IEnumerable<string> Answers(JsonObject row, string column) => row[column] is JsonArray list
        ? list.Select(x => x is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : x?.ToJsonString() ?? "")
        : [Column(row, column)];

    private static Func<RewardInput, double> ExactMatchScorer(string column) => r =>
    {
        string completion = Normalize(r.Completion);
        return Answers(r.Row, column).Any(a => Normalize(a) == completion) ? 1 : 0;
    };

    private static Func<RewardInput, double> ContainsScorer(string column) => r =>
    {
        string completion = Normalize(r.Completion);
        return Answers(r.Row, column).Any(w => Normalize(w) is { Length: > 0 } n && completion.Contains(n, StringComparison.Ordinal)) ? 1 : 0;
    };

    private static Func<RewardInput, double> NumericScorer(string column) => r =>
    {
        var expected = ExtractNumber(Column(r.Row, column));
        var got = ExtractNumber(r.Completion);
        return expected is double e && got is double g && Math.Abs(e - g) <= 1e-6 ? 1 : 0;
    };

    private static Func<RewardInput, double> RegexScorer(string pattern)
    {
        Regex regex;
        try { regex = new Regex(pattern, RegexOptions.Singleline | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)); }
        catch (ArgumentException e) { throw new PeftSharpException($"grpo.reward_funcs: regex '{pattern}' does not compile: {e.Message}"); }
        return r => regex.IsMatch(r.Completion) ? 1 : 0;
    }

    private static Func<RewardInput, double> LengthScorer(int n) => r => -Math.Max(0, r.CompletionTokens - n) / (double)n;

    private sealed class Delegate(string name, Func<RewardInput, double> score) : IRewardFunction
    {
        public string Name => name;
        public double[] Score(IReadOnlyList<RewardInput> completions) => completions.Select(score).ToArray();
    }
}
