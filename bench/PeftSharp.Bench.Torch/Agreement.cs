using PeftSharp.Models;
using PeftSharp.Peft;
using Tape = PeftSharp.Autograd.Tape;
using Ops = PeftSharp.Autograd.Ops;
using Rng = PeftSharp.Tensors.Rng;
using static TorchSharp.torch;

namespace PeftSharp.Bench.Torch;

/// <summary>
/// `--modes check`: PeftSharp and LibTorch on the same checkpoint, in this process. The logits of the 32-token benchmark
/// prompt (1×32, every position), the causal-LM loss of a 4×256 batch, and 32 greedy tokens from the prompt through each
/// engine's KV cache; then LoRA on c_attn (r 8, alpha 16) with PeftSharp's A matrices copied into LibTorch's and B zero
/// on both sides, as PEFT initializes it: the gradient of the loss of a 2×64 batch by every lora_B. One JSON line: the
/// largest |difference| of the logits (and relative to the largest |logit|), both losses, how many leading greedy
/// tokens agree, and the largest |difference| of the LoRA gradients (relative to the largest |gradient|).
/// </summary>
public static class Agreement
{
    public static unsafe void Check(Program.Context context, Gpt2LMHead torchModel, string folder, bool sdpa)
    {
        torchModel.eval();
        using var ours = CausalLM.Load(folder);
        int vocab = ours.VocabSize;
        var prompt = Program.PromptIds(vocab, 32);
        var rng = new Rng(2);
        var batch = new TokenBatch(4, 256, Enumerable.Range(0, 4 * 256).Select(_ => rng.NextInt(vocab)).ToArray());

        using var tape = new Tape(1 << 20) { GradEnabled = false, Training = false };
        var ops = new Ops(tape);
        var ourLogits = ours.Forward(ops, new TokenBatch(1, prompt.Length, prompt));
        var mine = new ReadOnlySpan<float>(ourLogits.Data, prompt.Length * vocab).ToArray();
        tape.Reset();
        double ourLoss = *ours.Loss(ops, batch).Data;
        tape.Reset();

        float[] theirs;
        double theirLoss;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            theirs = torchModel.forward(Ids(prompt, 1, prompt.Length)).reshape(-1).data<float>().ToArray();
            var ids = Ids(batch.InputIds, 4, 256);
            theirLoss = Program.CausalLoss(torchModel.forward(ids), ids).item<float>();
        }
        double maxDiff = 0, maxLogit = 0;
        for (int i = 0; i < mine.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(mine[i] - theirs[i]));
            maxLogit = Math.Max(maxLogit, Math.Abs(theirs[i]));
        }
        int sameArgmax = 0;
        for (int t = 0; t < prompt.Length; t++)
            if (ArgMax(mine.AsSpan(t * vocab, vocab)) == ArgMax(theirs.AsSpan(t * vocab, vocab))) sameArgmax++;

        const int steps = 32;
        var torchTokens = Program.Greedy(torchModel, prompt, steps).Tokens;
        var ourTokens = OurGreedy(ours, prompt, steps);
        int leading = 0;
        while (leading < steps && torchTokens[leading] == ourTokens[leading]) leading++;

        var (gradDiff, gradMax, gradCount) = LoraGradients(ours, folder, sdpa, batch);

        var line = context.Line("check");
        line["logits_positions"] = prompt.Length;
        line["logits_max_abs_diff"] = maxDiff;
        line["logits_max_abs"] = Math.Round(maxLogit, 4);
        line["logits_max_rel_diff"] = maxDiff / maxLogit;
        line["same_argmax_positions"] = sameArgmax;
        line["loss_batch"] = "4x256";
        line["loss_peftsharp"] = Math.Round(ourLoss, 6);
        line["loss_libtorch"] = Math.Round(theirLoss, 6);
        line["loss_abs_diff"] = Math.Abs(ourLoss - theirLoss);
        line["greedy_steps"] = steps;
        line["greedy_same_leading_tokens"] = leading;
        line["greedy_tokens_libtorch"] = torchTokens;
        line["greedy_tokens_peftsharp"] = ourTokens;
        line["lora_grad_values"] = gradCount;
        line["lora_grad_max_abs_diff"] = gradDiff;
        line["lora_grad_max_abs"] = gradMax;
        line["lora_grad_max_rel_diff"] = gradDiff / gradMax;
        Program.Print(line);
    }

    /// <summary>dL/dB of every c_attn LoRA (A from PeftSharp's initialization, B zero) on the first 2×64 tokens of the batch, in both engines.</summary>
    private static unsafe (double MaxDiff, double MaxAbs, long Count) LoraGradients(CausalLM ours, string folder, bool sdpa, TokenBatch batch)
    {
        var small = new TokenBatch(2, 64, batch.InputIds[..128]);
        var peft = PeftModel.Wrap(ours, new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = TargetModules.FromNames(["c_attn"]) }, rng: new Rng(2));
        var mine = peft.TrainableParameters.ToDictionary(p => p.Name.Replace(".default.", "."));
        using (var tape = new Tape(1 << 20))
            tape.Backward(peft.Model.Loss(new Ops(tape), small));

        using var lora = Program.Build(folder, sdpa, new LoraSpec(8, 16, 0));
        lora.eval();
        var theirs = lora.named_parameters().Where(p => p.name.Contains(".lora_")).ToArray();
        if (theirs.Length != mine.Count) throw new InvalidOperationException($"{theirs.Length} LoRA matrices in LibTorch, {mine.Count} in PeftSharp.");
        using (no_grad())
            foreach (var (name, p) in theirs.Where(p => p.name.Contains(".lora_A.")))
            {
                var a = mine[name];
                if (a.Length != p.numel()) throw new InvalidOperationException($"{name}: {a.ShapeText} in PeftSharp, [{string.Join(", ", p.shape)}] in LibTorch.");
                fixed (byte* storage = p.bytes) new ReadOnlySpan<float>(a.Data, (int)a.Length).CopyTo(new Span<float>(storage, (int)a.Length));
            }
        using (var scope = NewDisposeScope())
        {
            var ids = Ids(small.InputIds, 2, 64);
            Program.CausalLoss(lora.forward(ids), ids).backward();
        }
        double maxDiff = 0, maxAbs = 0;
        long count = 0;
        foreach (var (name, p) in theirs.Where(p => p.name.Contains(".lora_B.")))
        {
            var grad = p.grad!.data<float>().ToArray();
            var ourGrad = mine[name].GradSpan();
            for (int i = 0; i < grad.Length; i++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(grad[i] - ourGrad[i]));
                maxAbs = Math.Max(maxAbs, Math.Abs(grad[i]));
            }
            count += grad.Length;
        }
        peft.Dispose();
        return (maxDiff, maxAbs, count);
    }

    private static Tensor Ids(int[] ids, int batch, int seqLen) => tensor(ids.Select(i => (long)i).ToArray(), [batch, seqLen]);

    /// <summary>PeftSharp's greedy decode through its KV-cache session (as `model --modes greedy_decode` runs it).</summary>
    private static int[] OurGreedy(CausalLM lm, int[] ids, int generate)
    {
        var logits = new float[lm.VocabSize];
        var tokens = new int[generate];
        using var session = lm.StartDecoding(1, ids.Length + generate);
        session.Append(ids, [], ids.Length, logits);
        for (int i = 0; i < generate; i++)
        {
            int next = tokens[i] = ArgMax(logits);
            session.Append([next], [], 1, logits);
        }
        return tokens;
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int v = 1; v < values.Length; v++) if (values[v] > values[best]) best = v;
        return best;
    }
}
