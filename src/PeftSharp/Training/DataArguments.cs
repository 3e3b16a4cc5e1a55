using System.Text.Json.Nodes;
using PeftSharp.Config;

namespace PeftSharp.Training;

/// <summary>The `data` section: files, format and TRL's SFTConfig data options (max_length, packing, ...).</summary>
public sealed class DataArguments
{
    public static readonly string[] Formats = ["auto", "text", "prompt_completion", "conversational"];
    public static readonly string[] TextFileModes = ["lines", "whole"];

    public string? TrainFile { get; set; }
    public string? EvalFile { get; set; }
    /// <summary>TRL's ScriptArguments: a dataset folder or hub id, its config, and the splits to train and evaluate on.</summary>
    public string? DatasetName { get; set; }
    public string? DatasetConfig { get; set; }
    public string DatasetTrainSplit { get; set; } = "train";
    /// <summary>null: "test" when the dataset has it.</summary>
    public string? DatasetTestSplit { get; set; }
    public string Format { get; set; } = "auto";
    public string DatasetTextField { get; set; } = "text";
    public int MaxLength { get; set; } = 1024;
    public bool Packing { get; set; }
    /// <summary>null: on for prompt-completion data, as TRL does.</summary>
    public bool? CompletionOnlyLoss { get; set; }
    public bool AssistantOnlyLoss { get; set; }
    public double? TestSize { get; set; }
    public bool Shuffle { get; set; } = true;
    public bool SkipMalformed { get; set; }
    public string? ChatTemplate { get; set; }
    /// <summary>Plain-text files: "lines" (one example per non-empty line) or "whole" (the file cut into max_length chunks).</summary>
    public string TextFileMode { get; set; } = "lines";
    /// <summary>SFTConfig.eos_token: the token appended to text and completions (default: the tokenizer's eos_token).</summary>
    public string? EosToken { get; set; }
    /// <summary>SFTConfig.chat_template_path: a Jinja template file, or a tokenizer folder (or its tokenizer_config.json) whose template to use.</summary>
    public string? ChatTemplatePath { get; set; }
    /// <summary>SFTConfig.packing_strategy: "bfd" (best-fit decreasing, examples whole) or "wrapped" (one stream cut into max_length rows).</summary>
    public string PackingStrategy { get; set; } = "bfd";
    /// <summary>SFTConfig.padding_free: a batch is one row of its sequences end to end (no padding; attention stays within each).</summary>
    public bool PaddingFree { get; set; }

    public static readonly string[] PackingStrategies = ["bfd", "wrapped"];

    public static IEnumerable<KeySpec> Keys =>
    [
        new("train_file", ValueKind.String, "training data: .jsonl, .json, .csv, .txt, .parquet or .arrow"),
        new("dataset_name", ValueKind.String, "a dataset folder, or ORG/NAME in the Hugging Face cache (TRL's ScriptArguments)"),
        new("dataset_config", ValueKind.String, "the dataset card's config (datasets' `name`)"),
        new("dataset_train_split", ValueKind.String, "the split to train on (default train)"),
        new("dataset_test_split", ValueKind.String, "the split to evaluate on (default test, when the dataset has it)"),
        new("eval_file", ValueKind.String, "evaluation data (else test_size splits train_file)"),
        new("format", ValueKind.Enum, "data format; auto detects it as TRL does", Allowed: Formats),
        new("dataset_text_field", ValueKind.String, "the text column for language-modelling data"),
        new("max_length", ValueKind.Int, "truncate tokenized examples to this many tokens", Min: 1),
        new("packing", ValueKind.Bool, "pack several examples per sequence (no attention across them)"),
        new("completion_only_loss", ValueKind.Bool, "loss on the completion only (prompt-completion data)"),
        new("assistant_only_loss", ValueKind.Bool, "loss on assistant turns only (conversational data)"),
        new("test_size", ValueKind.Number, "held-out fraction (< 1) or count (>= 1) of train_file for evaluation", Min: 0, MinExclusive: true),
        new("shuffle", ValueKind.Bool, "shuffle the training data every epoch (with the seed)"),
        new("skip_malformed", ValueKind.Bool, "skip malformed lines (and say how many) instead of stopping"),
        new("chat_template", ValueKind.String, "a built-in template name (chatml, llama3, llama2, zephyr) or a Jinja template"),
        new("eos_token", ValueKind.String, "the token appended to text and completions (default: the tokenizer's eos_token)"),
        new("chat_template_path", ValueKind.String, "a Jinja template file, or a tokenizer folder whose chat template to use"),
        new("packing_strategy", ValueKind.Enum, "bfd: best-fit decreasing, examples kept whole; wrapped: one stream cut into max_length rows", Allowed: PackingStrategies),
        new("padding_free", ValueKind.Bool, "batch sequences end to end in one row instead of padding them (same loss, less compute)"),
        new("text_file_mode", ValueKind.Enum, "plain-text files: one example per line, or the whole file in max_length chunks", Allowed: TextFileModes),
    ];

    public static DataArguments FromJson(JsonObject o) => new()
    {
        TrainFile = o.Str("train_file"),
        EvalFile = o.Str("eval_file"),
        DatasetName = o.Str("dataset_name"),
        DatasetConfig = o.Str("dataset_config"),
        DatasetTrainSplit = o.Str("dataset_train_split", "train")!,
        DatasetTestSplit = o.Str("dataset_test_split"),
        Format = o.Str("format", "auto")!,
        DatasetTextField = o.Str("dataset_text_field", "text")!,
        MaxLength = o.Int("max_length", 1024),
        Packing = o.Bool("packing", false),
        CompletionOnlyLoss = o.BoolOrNull("completion_only_loss"),
        AssistantOnlyLoss = o.Bool("assistant_only_loss", false),
        TestSize = o.NumOrNull("test_size"),
        Shuffle = o.Bool("shuffle", true),
        SkipMalformed = o.Bool("skip_malformed", false),
        ChatTemplate = o.Str("chat_template"),
        TextFileMode = o.Str("text_file_mode", "lines")!,
        EosToken = o.Str("eos_token"),
        ChatTemplatePath = o.Str("chat_template_path"),
        PackingStrategy = o.Str("packing_strategy", "bfd")!,
        PaddingFree = o.Bool("padding_free", false),
    };
}
