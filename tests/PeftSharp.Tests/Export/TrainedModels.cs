using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Export;

/// <summary>
/// Tiny init-model models (gpt2, llama, qwen2) with a LoRA trained on them by PeftSharp's own pipeline, made once per
/// test run and shared by the GGUF tests (the training takes a few seconds).
/// </summary>
public sealed class TrainedModels : IDisposable
{
    public const string Collection = "GGUF trained models";

    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-gguf-trained-").FullName;
    private readonly Dictionary<string, (string Model, string Adapter)> _made = new();
    private readonly object _gate = new();

    public string Root => _root;

    public (string Model, string Adapter) Get(string arch)
    {
        lock (_gate)
        {
            if (_made.TryGetValue(arch, out var made)) return made;
            string model = Path.Combine(_root, arch), adapter = Path.Combine(_root, arch + "-lora");
            ModelInitializer.Write(model, new InitModelOptions { Architecture = arch, Preset = "tiny", Seed = 21 });
            var yaml = $"""
                model:
                  name_or_path: "{model}"
                lora:
                  r: 4
                  lora_alpha: 16
                  target_modules: all-linear
                data:
                  train_file: "{Path.Combine(TestAssets.RepoRoot, "examples", "youtube-recs", "train.jsonl")}"
                  max_length: 32
                training:
                  output_dir: "{adapter}"
                  max_steps: 8
                  per_device_train_batch_size: 4
                  learning_rate: 2.0e-2
                  lr_scheduler_type: constant
                  save_strategy: "no"
                  logging_steps: 50
                  seed: 5
                """;
            FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)), generationSamples: 0);
            return _made[arch] = (model, adapter);
        }
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }
}

/// <summary>The test classes that share <see cref="TrainedModels"/> (each architecture is trained once per run).</summary>
[CollectionDefinition(TrainedModels.Collection)]
public sealed class TrainedModelsCollection : ICollectionFixture<TrainedModels>;
