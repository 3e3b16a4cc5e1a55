using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>transformers' *ForSequenceClassification: the score head on the last non-padding token, and PEFT's real SEQ_CLS adapter.</summary>
public sealed unsafe class SequenceClassifierTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-seqcls").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>gpt2's shape (12 layers, 768 wide; a 1024-token vocabulary to keep it small: the adapter does not touch the embedding).</summary>
    private static SequenceClassifier Gpt2Shaped(int labels, int? padTokenId = 0)
    {
        var config = new Gpt2Config { VocabSize = 1024, PadTokenId = padTokenId };
        var decoder = CausalLM.CreateRandom(config, new Rng(11));
        var w = Parameter.Create("score.weight", [labels, 768], false);
        new Rng(12).FillNormal(w.AsSpan(), 0f, 0.02f);
        return new SequenceClassifier(decoder, labels, w);
    }

    [AssetFact]
    public void ThePeftSeqClsAdapterLoadsRunsAndRoundTrips()
    {
        string src = TestAssets.Path("adapters", "gpt2-seqcls-c_attn");
        using var model = Gpt2Shaped(6);
        Assert.Equal("score", model.Linears[^1].Name);
        Assert.DoesNotContain(model.Linears, s => s.Name == "lm_head");
        using var peft = PeftModel.FromPretrained(model, src);
        Assert.Equal(12, peft.LoraLayers.Count());
        float[] scoreWeight;
        using (var st = SafetensorsFile.Open(Path.Combine(src, PeftModel.WeightsFileName)))
            scoreWeight = st["base_model.model.score.weight"].ToFloat32();

        int[] ids = [5, 17, 300, 42, 7, 0, 7, 9, 88, 0, 0, 0];
        var batch = new TokenBatch(2, 6, ids) { AttentionMask = [1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0] };
        using var tape = new Tape { GradEnabled = false };
        var ops = new Ops(tape);
        var logits = model.Classify(ops, batch).AsSpan().ToArray();
        Assert.Equal(12, logits.Length); // 2 rows × 6 labels
        Assert.Equal([4, 8], model.PoolRows(batch)); // the last token that is not pad_token_id 0
        // The same numbers by hand: the adapted decoder's hidden state at the pooled token, times the adapter's score weight.
        var hidden = model.Decoder.HiddenStates(ops, batch);
        for (int b = 0; b < 2; b++)
        {
            int row = b == 0 ? 4 : 8;
            for (int k = 0; k < 6; k++)
            {
                double dot = 0;
                for (int c = 0; c < 768; c++) dot += hidden.Data[(long)row * 768 + c] * scoreWeight[k * 768 + c];
                Assert.Equal(dot, logits[b * 6 + k], 4);
            }
        }
        // Right padding does not change a row's logits: the second row alone gives the same 6 numbers.
        var alone = model.Classify(ops, new TokenBatch(1, 3, [7, 9, 88])).AsSpan().ToArray();
        for (int k = 0; k < 6; k++) Assert.True(Math.Abs(logits[6 + k] - alone[k]) < 1e-4, $"label {k}: {logits[6 + k]} padded, {alone[k]} alone");
        // The adapter changes the output: with it off the logits differ.
        peft.AdaptersDisabled = true;
        var off = model.Classify(ops, batch).AsSpan().ToArray();
        Assert.NotEqual(logits, off);
        peft.AdaptersDisabled = false;

        string saved = Path.Combine(_dir, "saved");
        peft.SaveAdapter(saved);
        using (var a = SafetensorsFile.Open(Path.Combine(src, PeftModel.WeightsFileName)))
        using (var b = SafetensorsFile.Open(Path.Combine(saved, PeftModel.WeightsFileName)))
            foreach (var t in a.Tensors) Assert.Equal(t.ToFloat32(), b[t.Name].ToFloat32());
        Assert.Equal("SEQ_CLS", LoraConfig.Load(saved).TaskType);
        using var again = Gpt2Shaped(6);
        using var peft2 = PeftModel.FromPretrained(again, saved);
        Assert.Equal(logits, again.Classify(new Ops(tape), batch).AsSpan().ToArray());
    }

    [Fact]
    public void NumLabelsComesFromConfigJson()
    {
        Assert.Equal(3, SequenceClassifier.NumLabelsOf(new JsonObject { ["id2label"] = new JsonObject { ["0"] = "a", ["1"] = "b", ["2"] = "c" } }));
        Assert.Equal(1, SequenceClassifier.NumLabelsOf(new JsonObject { ["num_labels"] = 1, ["id2label"] = new JsonObject { ["0"] = "a", ["1"] = "b" } }));
        Assert.Equal(2, SequenceClassifier.NumLabelsOf(new JsonObject()));
    }

    [Fact]
    public void WithoutAPadTokenTheAttentionMaskFindsTheLastToken()
    {
        using var model = Gpt2Shaped(2, padTokenId: null);
        Assert.Equal([2, 3], model.PoolRows(new TokenBatch(2, 3, [1, 2, 3, 4, 0, 0]) { AttentionMask = [1, 1, 1, 1, 0, 0] }));
    }
}
