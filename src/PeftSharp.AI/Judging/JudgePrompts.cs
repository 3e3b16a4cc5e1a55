using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.AI.Judging;

/// <summary>
/// The judges' prompt templates and verdict parsers. Templates use Python's str.format fields as TRL's do ({prompt},
/// {response0}, {{ and }} for literal braces), so a prompt written for TRL's judges works here unchanged.
/// </summary>
public static class JudgePrompts
{
    /// <summary>
    /// TRL's DEFAULT_PAIRWISE_SYSTEM_PROMPT (trl/trainer/judges.py, Apache-2.0), the prompt of OpenAIPairwiseJudge: it is sent as
    /// the user message, and the answer "0" or "1" names the better output.
    /// </summary>
    public const string Pairwise = """"
        I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

        ## Instruction

        {{
            "instruction": """{prompt}""",
        }}

        ## Model Outputs

        Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

        {{
            {{
                "model_identifier": "0",
                "output": """{response0}"""
            }},
            {{
                "model_identifier": "1",
                "output": """{response1}"""
            }}
        }}

        ## Task

        Evaluate the models on the basis of the quality and relevance of their results, and select the model that generated the best result. Reply with the identifier of the best model. Our evaluation will only take into account the first character of your answer, so make sure it contains only one of the identifiers and nothing else (no quotation marks, no spaces, no new lines, ...).

        """";

    /// <summary>
    /// The rank prompt: TRL's pairwise prompt widened to K outputs ({outputs} is the list of model_identifier/output entries,
    /// identifiers 0 … K−1), asking for every identifier, best first, separated by commas.
    /// </summary>
    public const string Rank = """"
        I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and rank the models from a human perspective.

        ## Instruction

        {{
            "instruction": """{prompt}""",
        }}

        ## Model Outputs

        Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

        {{
        {outputs}
        }}

        ## Task

        Evaluate the models on the basis of the quality and relevance of their results, and rank them from best to worst. Reply with the identifiers of all the models, best first, separated by commas (for example: 2,0,1), and nothing else.

        """";

    /// <summary>The judge reward's default template: a score from 0 to 10 for one completion.</summary>
    public const string Score = """
        Rate how well the response answers the instruction, from a human perspective, on a scale from 0 (useless or off topic) to 10 (excellent).

        ## Instruction

        {prompt}

        ## Response

        {completion}

        ## Task

        Reply with the score alone: a whole number from 0 to 10, and nothing else.
        """;

    /// <summary>The {outputs} entries of <see cref="Rank"/>.</summary>
    public static string RankOutputs(IReadOnlyList<string> answers) => string.Join(",\n", answers.Select((a, i) =>
        "    {\n        \"model_identifier\": \"" + i.ToString(CultureInfo.InvariantCulture) + "\",\n        \"output\": \"\"\"" + a + "\"\"\"\n    }"));

    /// <summary>
    /// Python's str.format with named fields only: {name} is replaced, {{ and }} are literal braces; a field not in
    /// <paramref name="values"/>, an empty or positional field, or a lone brace is an error naming <paramref name="what"/>.
    /// </summary>
    public static string Format(string template, IReadOnlyDictionary<string, string> values, string what)
    {
        var sb = new StringBuilder(template.Length + values.Values.Sum(v => v.Length));
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c == '}') throw new PeftSharpException($"{what}: a lone '}}' at character {i} (write }}}} for a literal brace).");
            if (c != '{') { sb.Append(c); continue; }
            int end = template.IndexOf('}', i + 1);
            if (end < 0) throw new PeftSharpException($"{what}: the field opened at character {i} is not closed (write {{{{ for a literal brace).");
            string name = template[(i + 1)..end];
            if (!values.TryGetValue(name, out var value))
                throw new PeftSharpException($"{what}: unknown field {{{name}}}; expected {string.Join(", ", values.Keys.Select(k => "{" + k + "}"))}.");
            sb.Append(value);
            i = end;
        }
        return sb.ToString();
    }

    /// <summary>Checks that <paramref name="template"/> formats with exactly the fields <paramref name="fields"/> allowed and uses each of <paramref name="required"/>.</summary>
    public static void Check(string template, IReadOnlyList<string> fields, IReadOnlyList<string> required, string what)
    {
        var marked = fields.ToDictionary(f => f, f => "\u0001" + f + "\u0002");
        string text = Format(template, marked, what);
        foreach (var r in required)
            if (!text.Contains(marked[r], StringComparison.Ordinal))
                throw new PeftSharpException($"{what}: the template never uses {{{r}}}.");
    }

    /// <summary>TRL's parse of a pairwise answer: "0" or "1" (surrounding white space ignored), else −1 (unparseable).</summary>
    public static int ParsePairwise(string? raw) => raw?.Trim() switch
    {
        "0" => 0,
        "1" => 1,
        _ => -1,
    };

    /// <summary>A rank answer: every identifier 0 … count−1 once, best first, separated by commas or white space; else null.</summary>
    public static int[]? ParseRanking(string? raw, int count)
    {
        if (raw == null) return null;
        var parts = raw.Trim().Split([',', ' ', '\n', '\r', '\t', '>'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != count) return null;
        var ranking = new int[count];
        var seen = new bool[count];
        for (int i = 0; i < count; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id >= count || seen[id]) return null;
            seen[id] = true;
            ranking[i] = id;
        }
        return ranking;
    }

    /// <summary>A score answer: a number alone (optionally "Score:" before it or "/ N" after it), when inside [min, max]; else NaN.</summary>
    public static double ParseScore(string? raw, double min, double max)
    {
        if (raw == null) return double.NaN;
        var m = Regex.Match(raw.Trim(), @"^(?:score\s*[:=]?\s*)?(-?\d+(?:\.\d+)?)(?:\s*/\s*\d+(?:\.\d+)?)?\s*[.!]?\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
        if (!m.Success) return double.NaN;
        double v = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return v >= min && v <= max ? v : double.NaN;
    }
}
