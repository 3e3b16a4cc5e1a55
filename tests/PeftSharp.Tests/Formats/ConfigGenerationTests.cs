using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Tests.Formats;

public sealed class ConfigGenerationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-gen-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ReadsQwenStyleGenerationConfig()
    {
        // Qwen2.5-Instruct's published generation_config.json.
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """
            {
              "bos_token_id": 151643,
              "pad_token_id": 151643,
              "do_sample": true,
              "eos_token_id": [151645, 151643],
              "repetition_penalty": 1.1,
              "temperature": 0.7,
              "top_p": 0.8,
              "top_k": 20,
              "transformers_version": "4.37.0"
            }
            """);
        var config = GenerationConfig.TryLoad(_dir)!;
        Assert.Equal(151643, config.BosTokenId);
        Assert.Equal([151645, 151643], config.EosTokenIds);
        Assert.Equal(151643, config.PadTokenId);
        Assert.True(config.DoSample);
        Assert.Equal((0.7, 20, 0.8, 1.1), (config.Temperature, config.TopK, config.TopP, config.RepetitionPenalty));
        Assert.Null(config.MaxNewTokens);

        config.MaxNewTokens = 64;
        string copy = Path.Combine(_dir, "copy.json");
        config.Write(copy);
        var back = GenerationConfig.Load(copy);
        Assert.Equal([151645, 151643], back.EosTokenIds);
        Assert.Equal((0.7, 20, 0.8, 1.1, 64), (back.Temperature, back.TopK, back.TopP, back.RepetitionPenalty, back.MaxNewTokens!.Value));
        Assert.Contains("\"transformers_version\": \"4.37.0\"", File.ReadAllText(copy));
    }

    [Fact]
    public void DefaultsAndAbsence()
    {
        Assert.Null(GenerationConfig.TryLoad(_dir));
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{"eos_token_id": 2}""");
        var config = GenerationConfig.Load(_dir);
        Assert.Equal([2], config.EosTokenIds);
        Assert.False(config.DoSample);
        Assert.Equal((1.0, 50, 1.0, 1.0), (config.Temperature, config.TopK, config.TopP, config.RepetitionPenalty));
        File.WriteAllText(Path.Combine(_dir, "generation_config.json"), """{"top_k": "many"}""");
        Assert.Contains("'top_k'", Assert.Throws<PeftSharpException>(() => GenerationConfig.Load(_dir)).Message);
    }
}
