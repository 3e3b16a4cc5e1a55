using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Training.Preference;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>
/// DPO (each loss type), KTO, ORPO and reward losses and their gradients by every LoRA parameter against a PyTorch reference
/// written from TRL's formulas (Golden/preference/reference.py, torch 1.13) on the same tiny GPT-2 (init-model --arch gpt2
/// --preset tiny --seed 5), the same adapter (adapter/, B ≠ 0 so policy and reference differ) and the same batch (batch.json).
/// To regenerate: PEFTSHARP_PREFERENCE_GOLDEN=1 runs <see cref="WriteInputs"/>, then
/// `python3 reference.py MODEL_DIR Golden/preference` writes reference.json.
/// </summary>
public sealed unsafe class PreferenceReferenceTests : IDisposable
{
    private static readonly string Golden = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "preference");
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-prefref").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model()
    {
        string dir = Path.Combine(_root, "model");
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        return dir;
    }

    [Fact]
    public void WriteInputs()
    {
        if (Environment.GetEnvironmentVariable("PEFTSHARP_PREFERENCE_GOLDEN") is not { Length: > 0 } target) return;
        string model = Path.Combine(target, "model");
        if (!Directory.Exists(model)) ModelInitializer.Write(model, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        using var m = CausalLM.Load(model);
        using var peft = PeftModel.Wrap(m, new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.FromNames(["c_attn"]) }, rng: new Rng(21));
        var rng = new Rng(22);
        foreach (var layer in peft.LoraLayers) rng.FillNormal(layer["default"].B.AsSpan(), 0f, 0.3f);
        peft.SaveAdapter(Path.Combine(Golden, "adapter"));
        var score = new float[m.Config.HiddenSize];
        rng.FillNormal(score, 0f, 0.5f);
        var batch = new JsonObject
        {
            ["prompts"] = new JsonArray(new JsonArray(11, 40, 7, 93), new JsonArray(5, 61), new JsonArray(200, 3, 17, 8, 44)),
            ["chosen"] = new JsonArray(new JsonArray(70, 12, 99, 1), new JsonArray(8, 8, 150, 2, 31, 1), new JsonArray(64, 1)),
            ["rejected"] = new JsonArray(new JsonArray(33, 1), new JsonArray(120, 4, 1), new JsonArray(9, 77, 210, 13, 1)),
            ["margins"] = new JsonArray(0.0, 0.5, 0.0),
            ["score"] = new JsonArray(score.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray()),
        };
        File.WriteAllText(Path.Combine(Golden, "batch.json"), batch.ToJsonString());
    }

    private static int[][] Ids(JsonNode node) => node.AsArray().Select(a => a!.AsArray().Select(v => (int)v!).ToArray()).ToArray();

    private sealed record Case(string Name, double Loss, Dictionary<string, float[]> Grads);

    private static IEnumerable<Case> Reference()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Golden, "reference.json")))!.AsObject();
        foreach (var (name, node) in json)
            yield return new Case(name, (double)node!["loss"]!,
                node["grads"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(v => (float)(double)v!).ToArray()));
    }

    /// <summary>The adapter's parameters by PEFT's key (transformer.h.L.attn.c_attn.lora_A.weight).</summary>
    private static Dictionary<string, Parameter> LoraParameters(PeftModel peft) =>
        peft.LoraLayers.SelectMany(l => new[] { ($"{l.Info.Name}.lora_A.weight", l["default"].A), ($"{l.Info.Name}.lora_B.weight", l["default"].B) })
            .ToDictionary(p => p.Item1, p => p.Item2);

    [Fact]
    public void LossesAndGradientsMatchTheTorchReference()
    {
        var batch = JsonNode.Parse(File.ReadAllText(Path.Combine(Golden, "batch.json")))!.AsObject();
        var prompts = Ids(batch["prompts"]!);
        var chosen = Ids(batch["chosen"]!);
        var rejected = Ids(batch["rejected"]!);
        var margins = batch["margins"]!.AsArray().Select(v => (double)v!).ToArray();
        int n = prompts.Length;
        var pairs = Enumerable.Range(0, n).Select(i => new TokenizedPair(i,
            new TokenizedSequence([.. prompts[i], .. chosen[i]], prompts[i].Length), new TokenizedSequence([.. prompts[i], .. rejected[i]], prompts[i].Length), margins[i])).ToList();
        var cases = Reference().ToList();
        Assert.Equal(8, cases.Count);
        const int pad = 656; // the tiny model's pad_token_id: the classifier pools at the last token that is not it

        using var decoder = CausalLM.Load(Model());
        var scoreWeight = Parameter.Create("score.weight", [1, decoder.Config.HiddenSize], false);
        batch["score"]!.AsArray().Select(v => (float)(double)v!).ToArray().CopyTo(scoreWeight.AsSpan());
        using var model = new SequenceClassifier(decoder, 1, scoreWeight);
        using var peft = PeftModel.FromPretrained(model, Path.Combine(Golden, "adapter"), isTrainable: true);
        var parameters = LoraParameters(peft);
        var reference = new DisabledAdapterReference(peft);
        using var tape = new Tape();
        foreach (var c in cases)
        {
            foreach (var p in parameters.Values) p.ZeroGrad();
            double loss;
            if (c.Name.StartsWith("dpo") || c.Name.StartsWith("orpo"))
            {
                var options = Options(c.Name);
                var pb = PairBatch.Build(pairs, pad);
                // The causal LM is the classifier's decoder with the same adapter in its slots.
                ICausalLM lm = decoder;
                loss = c.Name.StartsWith("dpo")
                    ? new DpoObjective(lm, options, pairs, null, 8, pad, reference).Accumulate(tape, pb, 1.0).Loss
                    : new OrpoObjective(lm, options, pairs, null, 8, pad).Accumulate(tape, pb, 1.0).Loss;
            }
            else if (c.Name.StartsWith("kto"))
            {
                var examples = Enumerable.Range(0, n).Select(i => pairs[i].Chosen).Concat(Enumerable.Range(0, n).Select(i => pairs[i].Rejected)).ToList();
                var unpaired = examples.Select((s, i) => new TokenizedUnpaired(i, s, i < n,
                    new TokenizedSequence([.. s.Ids[..s.PromptLength], .. Completion(examples[(i + examples.Count - 1) % examples.Count])], s.PromptLength))).ToList();
                loss = new KtoObjective(decoder, Options(c.Name), unpaired, null, 8, pad, reference).Accumulate(tape, UnpairedBatch.Build(unpaired, pad), 1.0).Loss;
            }
            else
            {
                var whole = pairs.Select(p => new TokenizedPair(p.Index, p.Chosen with { PromptLength = 0 }, p.Rejected with { PromptLength = 0 }, p.Margin)).ToList();
                loss = new RewardObjective(model, Options(c.Name), whole, null, 8, pad).Accumulate(tape, PairBatch.Build(whole, pad), 1.0).Loss;
            }
            Assert.True(Math.Abs(loss - c.Loss) <= 1e-5 * Math.Max(1, Math.Abs(c.Loss)), $"{c.Name}: loss {loss:R}, torch {c.Loss:R}");
            double scale = Math.Max(1e-3, c.Grads.Values.SelectMany(g => g).Max(Math.Abs));
            foreach (var (name, expected) in c.Grads)
            {
                var actual = parameters[name].GradSpan().ToArray();
                Assert.Equal(expected.Length, actual.Length);
                for (int i = 0; i < expected.Length; i++)
                    Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-5 * scale, $"{c.Name} {name}[{i}]: {actual[i]:R}, torch {expected[i]:R} (scale {scale:G3})");
            }
        }
    }

    private static int[] Completion(TokenizedSequence s) => s.Ids[s.PromptLength..];

    private static PreferenceOptions Options(string name) => name switch
    {
        "dpo_sigmoid" => new() { Beta = 0.1, DisableDropout = true },
        "dpo_sigmoid_smoothed_rpo" => new() { Beta = 0.5, LabelSmoothing = 0.1, RpoAlpha = 0.5 },
        "dpo_ipo" => new() { Beta = 0.1, LossType = "ipo" },
        "dpo_hinge" => new() { Beta = 0.5, LossType = "hinge" },
        "dpo_robust" => new() { Beta = 0.5, LossType = "robust", LabelSmoothing = 0.2 },
        "kto" => new() { Beta = 0.5, DesirableWeight = 1.3, UndesirableWeight = 0.7 },
        "orpo" => new() { Beta = 0.5 },
        "reward" => new() { CenterRewardsCoefficient = 0.01 },
        _ => throw new ArgumentException(name),
    };
}
