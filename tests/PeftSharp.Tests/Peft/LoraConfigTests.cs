using System.Text.Json.Nodes;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Peft;

public class LoraConfigTests
{
    public static TheoryData<string> PeftAdapters => new()
    {
        "gpt2-causal-c_attn-c_proj", "gpt2-seqcls-c_attn", "qwen2.5-0.5b-instruct-q_proj-v_proj",
    };

    [AssetTheory]
    [MemberData(nameof(PeftAdapters))]
    public void RealPeftConfigRoundTripsByteForByte(string adapter)
    {
        var source = TestAssets.Path("adapters", adapter, LoraConfig.FileName);
        var config = LoraConfig.Load(source);
        var dir = Directory.CreateTempSubdirectory("peftsharp-cfg").FullName;
        try
        {
            config.Save(dir);
            Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(Path.Combine(dir, LoraConfig.FileName)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [AssetFact]
    public void ReadsPeftFieldsWithTheirMeaning()
    {
        var c = LoraConfig.Load(TestAssets.Path("adapters", "gpt2-causal-c_attn-c_proj"));
        Assert.Equal(8, c.R);
        Assert.Equal(32, c.LoraAlpha);
        Assert.Equal(["c_attn", "c_proj"], c.TargetModules!.Names);
        Assert.True(c.FanInFanOut);
        Assert.Equal(0.05, c.LoraDropout);
        Assert.Equal("CAUSAL_LM", c.TaskType);
        Assert.Equal(4.0, c.ScalingFor("transformer.h.0.attn.c_attn"));
    }

    [Fact]
    public void NewConfigWritesPeftsKeySetAndDefaults()
    {
        var c = new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = TargetModules.FromNames(["v_proj", "q_proj"]), LoraDropout = 0.05 };
        var json = c.ToJson();
        Assert.Equal(16, json["r"]!.GetValue<int>());
        Assert.Equal("[\"q_proj\",\"v_proj\"]", json["target_modules"]!.ToJsonString());
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.True(json.ContainsKey("megatron_core"));
        var back = LoraConfig.FromJson(json);
        Assert.Equal(32, back.LoraAlpha);
        Assert.Equal(0.05, back.LoraDropout);
    }

    [Fact]
    public void UnknownKeysFromNewerPeftSurvive()
    {
        var json = new LoraConfig().ToJson();
        json["some_future_option"] = new JsonArray(1, 2);
        var back = LoraConfig.FromJson(json).ToJson();
        Assert.Equal("[1,2]", back["some_future_option"]!.ToJsonString());
    }

    [Fact]
    public void RsloraAndPatternsChangeScaling()
    {
        var c = new LoraConfig
        {
            R = 16, LoraAlpha = 32, UseRslora = true,
            RankPattern = new() { ["layers.1.self_attn.q_proj"] = 4 },
            AlphaPattern = new() { ["v_proj"] = 8 },
        };
        Assert.Equal(32 / 4.0, c.ScalingFor("model.layers.0.self_attn.q_proj"), 12);
        Assert.Equal(4, c.RankFor("model.layers.1.self_attn.q_proj"));
        Assert.Equal(32 / 2.0, c.ScalingFor("model.layers.1.self_attn.q_proj"), 12);
        Assert.Equal(16, c.RankFor("model.layers.11.self_attn.q_proj"));
        Assert.Equal(8 / 4.0, c.ScalingFor("model.layers.0.self_attn.v_proj"), 12);
    }

    [Theory]
    [InlineData("r", "0", "r must be a positive integer")]
    [InlineData("lora_dropout", "1.0", "lora_dropout must be in [0, 1)")]
    [InlineData("lora_dropout", "-0.1", "lora_dropout must be in [0, 1)")]
    [InlineData("bias", "\"some\"", "bias must be one of")]
    [InlineData("task_type", "\"CAUSAL\"", "task_type must be one of")]
    [InlineData("r", "\"eight\"", "r must be an integer")]
    [InlineData("target_modules", "\"q_proj(\"", "is not a valid regular expression")]
    public void BadValuesNameTheKey(string key, string value, string message)
    {
        var json = new LoraConfig().ToJson();
        json[key] = JsonNode.Parse(value);
        var e = Assert.Throws<PeftSharpException>(() => LoraConfig.FromJson(json));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void RefusesOtherPeftTypes()
    {
        var json = new LoraConfig().ToJson();
        json["peft_type"] = "IA3";
        Assert.Contains("only \"LORA\"", Assert.Throws<PeftSharpException>(() => LoraConfig.FromJson(json)).Message);
    }
}
