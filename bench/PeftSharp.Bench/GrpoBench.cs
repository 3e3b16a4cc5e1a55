using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Training.Optimizers;
using PeftSharp.Training.Preference;
using PeftSharp.Training.Rl;

namespace PeftSharp.Bench;

/// <summary>
/// `grpo [--model distilgpt2] [--prompts 8] [--generations 8] [--new 128] [--prompt-len 32] [--steps 2] [--beta 0.04]
/// --tokenizer DIR`: GRPO steps (LoRA c_attn r 8, random f32 weights, random prompts, a length reward, sampling at temperature 1
/// with no eos so every completion has --new tokens) split into generation, reward, reference and training time after one
/// warm-up step; then plain batched Generator.Generate on the same prompts and options, for rollout tokens/s against it.
/// </summary>
public static class GrpoBench
{
    public static int Run(string[] args)
    {
        string name = Option(args, "--model", "distilgpt2");
        int promptCount = int.Parse(Option(args, "--prompts", "8")), g = int.Parse(Option(args, "--generations", "8"));
        int newTokens = int.Parse(Option(args, "--new", "128")), promptLength = int.Parse(Option(args, "--prompt-len", "32"));
        int steps = int.Parse(Option(args, "--steps", "2"));
        double beta = double.Parse(Option(args, "--beta", "0.04"), System.Globalization.CultureInfo.InvariantCulture);
        var tokenizer = Tokenizer.FromFolder(Option(args, "--tokenizer", "../shared/assets/tokenizers/gpt2"));
        var config = ModelBench.Config(name);
        using var model = CausalLM.CreateRandom(config, new Rng(1));
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = TargetModules.FromNames(["c_attn"]) }, rng: new Rng(2));
        using var optimizer = new AdamW(peft.TrainableParameters, learningRate: 1e-4f);
        var rng = new Rng(3);
        // Prompts of random words that encode to about --prompt-len tokens.
        var prompts = Enumerable.Range(0, promptCount).Select(_ =>
            new GrpoPrompt(tokenizer.Decode(Enumerable.Range(0, promptLength).Select(_ => 256 + rng.NextInt(20000)).ToArray()), new JsonObject())).ToList();
        var options = new GrpoOptions { NumGenerations = g, MaxCompletionLength = newTokens, Beta = beta, MaxPromptLength = promptLength, RewardFuncs = [$"length:{newTokens / 2}"] };
        var objective = new GrpoObjective(model, tokenizer, options, prompts, Rewards.Parse(options.RewardFuncs), new DisabledAdapterReference(peft), eosTokenIds: []);
        using var tape = new Tape(1 << 20);
        var rows = Enumerable.Range(0, promptCount).ToArray();
        void Step(int i)
        {
            objective.BeforeCollate(i + 1, 0, (ulong)i);
            var batch = objective.Collate(rows);
            objective.Accumulate(tape, batch, 1.0);
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        Step(0);
        var t0 = new { objective.Timings.Generation, objective.Timings.Reward, objective.Timings.Reference, objective.Timings.Training, objective.Timings.GeneratedTokens };
        var watch = Stopwatch.StartNew();
        for (int i = 1; i <= steps; i++) Step(i);
        double total = watch.Elapsed.TotalSeconds / steps;
        double Per(double now, double before) => Math.Round((now - before) / steps * 1e3, 1);
        long rolloutTokens = (objective.Timings.GeneratedTokens - t0.GeneratedTokens) / steps;
        double genSeconds = (objective.Timings.Generation - t0.Generation) / steps;

        // Plain batched generation of the same batch with the same sampling options.
        int[] Encoded(string text) { var e = tokenizer.Encode(text, addSpecialTokens: false); return e.Length > promptLength ? e[^promptLength..] : e; }
        var ids = prompts.SelectMany(p => Enumerable.Repeat(Encoded(p.Text), g)).ToList();
        var gen = new GenerationOptions { DoSample = true, Temperature = 1, TopK = 0, MaxNewTokens = newTokens, Seed = 7, EosTokenIds = [], PadTokenId = 0 };
        watch.Restart();
        long plainTokens;
        using (var session = model.StartDecoding(ids.Count, ids.Max(p => p.Length) + newTokens))
            plainTokens = Generator.Generate(session, ids, gen).Sum(s => (long)s.Tokens.Length);
        double plainSeconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            op = "grpo",
            model = name,
            prompts = promptCount,
            generations = g,
            new_tokens = newTokens,
            prompt_len = promptLength,
            beta,
            step_ms = Math.Round(total * 1e3, 1),
            generation_ms = Per(objective.Timings.Generation, t0.Generation),
            reward_ms = Per(objective.Timings.Reward, t0.Reward),
            reference_ms = Per(objective.Timings.Reference, t0.Reference),
            training_ms = Per(objective.Timings.Training, t0.Training),
            rollout_tok_per_s = Math.Round(rolloutTokens / genSeconds, 1),
            plain_generate_tok_per_s = Math.Round(plainTokens / plainSeconds, 1),
            rollout_vs_plain = Math.Round(rolloutTokens / genSeconds / (plainTokens / plainSeconds), 3),
            peak_rss_mb = ModelBench.PeakRssMib(),
        }));
        return 0;
    }

    private static string Option(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}
