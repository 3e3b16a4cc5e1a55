using PeftSharp.Config;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

/// <summary>
/// assistant_only_loss trains each assistant turn's end-of-turn token, so a tiny model fine-tuned on conversations
/// learns to stop: greedy generation after the chat prompt ends with &lt;|im_end|&gt; instead of running to the limit.
/// </summary>
public sealed class LearnsToStopTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-stop").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void AssistantOnlyLossTeachesTheEndOfTurnToken()
    {
        string model = Path.Combine(_root, "model");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "qwen2", Preset = "tiny", Seed = 6 });
        string data = Path.Combine(_root, "chat.jsonl");
        string[] topics = ["cooking", "travel", "music", "games", "science", "sports"];
        File.WriteAllLines(data, Enumerable.Range(0, 48).Select(i =>
            $$"""{"messages": [{"role": "user", "content": "I like {{topics[i % 6]}}."}, {"role": "assistant", "content": "Watch {{topics[i % 6]}} {{i % 4}}."}]}"""));
        var config = RunConfig.FromTree(ConfigTree.ParseYaml($"""
            model:
              name_or_path: "{model}"
            lora:
              r: 16
              lora_alpha: 32
              lora_dropout: 0.05
              target_modules: all-linear
            data:
              train_file: "{data}"
              chat_template: chatml
              assistant_only_loss: true
            training:
              output_dir: "{Path.Combine(_root, "out")}"
              max_steps: 120
              per_device_train_batch_size: 8
              learning_rate: 5.0e-3
              lr_scheduler_type: constant
              save_strategy: "no"
              logging_steps: 40
              seed: 1
            """));
        var result = FineTuning.Run(config, generationSamples: 0);

        using var trained = CausalLM.Load(model, new LoadOptions());
        using var peft = PeftModel.FromPretrained(trained, result.OutputDir);
        var tokenizer = PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(model);
        int endOfTurn = tokenizer.TokenToId("<|im_end|>")!.Value;
        var prompt = Prompts.EncodeChat(tokenizer, ChatTemplate.Builtin("chatml"), [ChatMessage.User("I like music.")]);
        using var session = trained.StartDecoding(1, prompt.Length + 40);
        var generated = Generator.Generate(session, [prompt], new GenerationOptions { MaxNewTokens = 40, EosTokenIds = [endOfTurn] })[0];
        Assert.Equal(FinishReason.Eos, generated.Reason);
        Assert.Equal(endOfTurn, generated.Tokens[^1]);
        Assert.InRange(generated.Tokens.Length, 2, 20);
    }
}
