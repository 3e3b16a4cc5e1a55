using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

/// <summary>
/// Exact resume and determinism in the configurations people run, through `peftsharp train`'s path
/// (RunConfig → FineTuning.Run): lora_dropout 0.1, gradient accumulation 2, chat data, packing, a cosine
/// schedule, LoRA / DoRA / QLoRA with gradient checkpointing, on GPT-2 and Llama tiny models; a run stopped
/// by Ctrl+C mid-epoch and resumed (its rows read from the memory-mapped tokenization cache) gives the uninterrupted run's adapter bytes.
/// </summary>
public sealed class ExactResumeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-resume").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model(string arch)
    {
        string dir = Path.Combine(_root, "model-" + arch);
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = arch, Preset = "tiny", Seed = 3 });
        return dir;
    }

    private string ChatData()
    {
        string path = Path.Combine(_root, "chat.jsonl");
        if (!File.Exists(path))
            File.WriteAllLines(path, Enumerable.Range(0, 40).Select(i =>
                $$"""{"messages": [{"role": "user", "content": "I like topic {{i % 7}} and {{i}}."}, {"role": "assistant", "content": "Watch video {{i}} about {{i % 7}}."}]}"""));
        return path;
    }

    private RunConfig Config(string arch, string name, string extraLora = "", string quantization = "", string extraData = "", string extraTraining = "",
        int maxSteps = 20)
    {
        string targets = arch == "gpt2" ? "[c_attn]" : "[q_proj, v_proj]";
        var yaml = $"""
            model:
              name_or_path: "{Model(arch)}"
            lora:
              r: 8
              lora_alpha: 16
              lora_dropout: 0.1
              target_modules: {targets}
            {extraLora}
            {quantization}
            data:
              train_file: "{ChatData()}"
              chat_template: chatml
              max_length: 64
            {extraData}
            training:
              output_dir: "{Path.Combine(_root, name)}"
              max_steps: {maxSteps}
              per_device_train_batch_size: 4
              gradient_accumulation_steps: 2
              learning_rate: 2.0e-3
              lr_scheduler_type: cosine
              warmup_steps: 2
              save_strategy: steps
              save_steps: 10
              logging_steps: 5
              seed: 7
            {extraTraining}
            """;
        return RunConfig.FromTree(ConfigTree.ParseYaml(yaml));
    }

    private static byte[] Adapter(FineTuningResult r) => File.ReadAllBytes(Path.Combine(r.OutputDir, "adapter_model.safetensors"));

    private sealed class CancelAt(CancellationTokenSource cts, int step) : ITrainerCallback
    {
        public void OnStep(TrainingProgress progress, TrainerControl control) { if (progress.Step == step) cts.Cancel(); }
    }

    /// <summary>The uninterrupted run, a run from scratch resumed from checkpoint-10, and one stopped by Ctrl+C at step 13 and resumed.</summary>
    private void AssertResumeIsExact(string arch, string extraLora = "", string quantization = "", string extraData = "", string extraTraining = "")
    {
        string tag = Guid.NewGuid().ToString("N")[..6];
        RunConfig C(string name, string more = "") => Config(arch, tag + name, extraLora, quantization, extraData, extraTraining + "\n  " + more);
        var full = TrainCommand.Run(C("full"), TextWriter.Null);
        Assert.Equal(20, full.Train.GlobalStep);
        var again = FineTuning.Run(C("again"), generationSamples: 0);
        Assert.Equal(Adapter(full), Adapter(again)); // the same config twice: the same bytes

        // Resume the uninterrupted run's own checkpoint-10 into a fresh output folder.
        string part = Path.Combine(_root, tag + "from10");
        CopyDirectory(Path.Combine(full.OutputDir, "checkpoint-10"), Path.Combine(part, "checkpoint-10"));
        var resumed = FineTuning.Run(C("from10", "resume_from_checkpoint: true"), generationSamples: 0);
        Assert.EndsWith("checkpoint-10", resumed.Train.ResumedFrom);
        Assert.Equal(full.Train.StepLosses.Skip(10), resumed.Train.StepLosses);
        Assert.Equal(Adapter(full), Adapter(resumed));

        // Ctrl+C at step 13, mid-epoch: a checkpoint is saved there, and the resumed run ends where the uninterrupted one did.
        using var cts = new CancellationTokenSource();
        var stopped = FineTuning.Run(C("ctrlc"), [new CancelAt(cts, 13)], cts.Token, generationSamples: 0);
        Assert.Equal(13, stopped.Train.GlobalStep);
        Assert.True(Directory.Exists(Path.Combine(stopped.OutputDir, "checkpoint-13")));
        var rest = TrainCommand.Run(C("ctrlc", "resume_from_checkpoint: true"), TextWriter.Null);
        Assert.EndsWith("checkpoint-13", rest.Train.ResumedFrom);
        // The resumed run trains from the memory-mapped tokenization cache the stopped run wrote in its output folder.
        Assert.DoesNotContain(stopped.Notices, n => n.StartsWith("tokenized training data read from the cache", StringComparison.Ordinal));
        Assert.Contains(rest.Notices, n => n.StartsWith("tokenized training data read from the cache", StringComparison.Ordinal));
        Assert.Equal(full.Train.StepLosses.Skip(13), rest.Train.StepLosses);
        Assert.Equal(Adapter(full), Adapter(rest));
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    [Fact]
    public void LlamaLoraWithDropoutAccumulationAndChatDataResumesExactly() => AssertResumeIsExact("llama");

    [Fact]
    public void Gpt2LoraWithPackingResumesExactly() => AssertResumeIsExact("gpt2", extraData: "  packing: true");

    [Fact]
    public void LlamaDoraResumesExactly() => AssertResumeIsExact("llama", extraLora: "  use_dora: true");

    [Fact]
    public void QloraWithGradientCheckpointingResumesExactly() => AssertResumeIsExact("llama", quantization: """
        quantization:
          load_in_4bit: true
          bnb_4bit_quant_type: nf4
          bnb_4bit_use_double_quant: true
        """);
}
