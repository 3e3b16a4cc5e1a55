using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>
/// transformers' <c>BitsAndBytesConfig</c>: the <c>quantization_config</c> a bitsandbytes-quantized model
/// carries in config.json. Names and defaults are transformers' (note: quant type defaults to "fp4" there;
/// QLoRA uses "nf4" with double quantization and a bfloat16 compute dtype).
/// </summary>
public sealed class BitsAndBytesConfig
{
    public static readonly string[] AllowedQuantStorage = ["float16", "float32", "int8", "uint8", "float64", "bfloat16"];
    public static readonly string[] AllowedComputeDtypes = ["float32", "float16", "bfloat16"];

    public bool LoadIn8bit { get; init; }
    public bool LoadIn4bit { get; init; }
    public double LlmInt8Threshold { get; init; } = 6.0;
    public IReadOnlyList<string>? LlmInt8SkipModules { get; init; }
    public bool LlmInt8EnableFp32CpuOffload { get; init; }
    public bool LlmInt8HasFp16Weight { get; init; }
    /// <summary><c>bnb_4bit_compute_dtype</c>: "float32" (default), "float16" or "bfloat16".</summary>
    public string Bnb4bitComputeDtype { get; init; } = "float32";
    /// <summary><c>bnb_4bit_quant_type</c>: "fp4" (transformers' default) or "nf4".</summary>
    public string Bnb4bitQuantType { get; init; } = "fp4";
    public bool Bnb4bitUseDoubleQuant { get; init; }
    public string Bnb4bitQuantStorage { get; init; } = "uint8";

    public QuantType QuantType => QuantTypeNames.Parse(Bnb4bitQuantType, "bnb_4bit_quant_type");

    /// <summary>The 4-bit block size. Not a transformers key: transformers always quantizes in blocks of 64; the CLI's --blocksize sets it.</summary>
    public int Bnb4bitBlockSize { get; init; } = 64;

    /// <summary><see cref="Bnb4bitComputeDtype"/> as a <see cref="DType"/>: F32, F16 or BF16.</summary>
    public DType ComputeDType => Bnb4bitComputeDtype switch
    {
        "float32" => DType.F32,
        "float16" => DType.F16,
        "bfloat16" => DType.BF16,
        _ => throw new PeftSharpException($"bnb_4bit_compute_dtype: expected one of {string.Join(", ", AllowedComputeDtypes)}, got \"{Bnb4bitComputeDtype}\"."),
    };

    /// <summary><see cref="Bnb4bitQuantStorage"/> as a <see cref="DType"/>: the element type the packed bytes are saved as.</summary>
    public DType QuantStorageDType => Bnb4bitQuantStorage switch
    {
        "uint8" => DType.U8,
        "int8" => DType.I8,
        "float16" => DType.F16,
        "bfloat16" => DType.BF16,
        "float32" => DType.F32,
        "float64" => DType.F64,
        _ => throw new PeftSharpException($"bnb_4bit_quant_storage: expected one of {string.Join(", ", AllowedQuantStorage)}, got \"{Bnb4bitQuantStorage}\"."),
    };

    /// <summary>
    /// Whether <paramref name="module"/> stays in full precision: with <c>llm_int8_skip_modules</c> unset, the output
    /// layer (transformers' <c>get_keys_to_not_convert</c>: lm_head); else a module whose short or full name equals an
    /// entry, or whose full name contains "entry." (transformers' <c>_replace_with_bnb_linear</c> test).
    /// </summary>
    public bool Skips(LinearModuleInfo module) => LlmInt8SkipModules is null
        ? module.IsOutputLayer
        : LlmInt8SkipModules.Any(key => module.ShortName == key || module.Name == key || module.Name.Contains(key + ".", StringComparison.Ordinal));

    /// <summary>Checks the values as transformers and bitsandbytes do; the message names the key and the allowed values.</summary>
    public void Validate()
    {
        if (LoadIn4bit && LoadIn8bit)
            throw new PeftSharpException("load_in_4bit and load_in_8bit are both true, but only one can be used at the same time.");
        _ = QuantType;
        if (Array.IndexOf(AllowedComputeDtypes, Bnb4bitComputeDtype) < 0)
            throw new PeftSharpException($"bnb_4bit_compute_dtype: expected one of {string.Join(", ", AllowedComputeDtypes)}, got \"{Bnb4bitComputeDtype}\".");
        if (Array.IndexOf(AllowedQuantStorage, Bnb4bitQuantStorage) < 0)
            throw new PeftSharpException($"bnb_4bit_quant_storage: expected one of {string.Join(", ", AllowedQuantStorage)}, got \"{Bnb4bitQuantStorage}\".");
        QuantState.ValidateBlockSize(Bnb4bitBlockSize, "blocksize");
        if (double.IsNaN(LlmInt8Threshold))
            throw new PeftSharpException("llm_int8_threshold: must be a number.");
    }

    /// <summary><c>BitsAndBytesConfig.to_dict()</c>: every attribute, including the private <c>_load_in_4bit</c>/<c>_load_in_8bit</c> transformers writes too.</summary>
    public JsonObject ToJson()
    {
        Validate();
        return new JsonObject
        {
            ["_load_in_4bit"] = LoadIn4bit,
            ["_load_in_8bit"] = LoadIn8bit,
            ["bnb_4bit_compute_dtype"] = Bnb4bitComputeDtype,
            ["bnb_4bit_quant_storage"] = Bnb4bitQuantStorage,
            ["bnb_4bit_quant_type"] = Bnb4bitQuantType,
            ["bnb_4bit_use_double_quant"] = Bnb4bitUseDoubleQuant,
            ["llm_int8_enable_fp32_cpu_offload"] = LlmInt8EnableFp32CpuOffload,
            ["llm_int8_has_fp16_weight"] = LlmInt8HasFp16Weight,
            ["llm_int8_skip_modules"] = LlmInt8SkipModules is null ? null : new JsonArray(LlmInt8SkipModules.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray()),
            ["llm_int8_threshold"] = LlmInt8Threshold,
            ["load_in_4bit"] = LoadIn4bit,
            ["load_in_8bit"] = LoadIn8bit,
            ["quant_method"] = "bitsandbytes",
        };
    }

    /// <summary>Reads a <c>quantization_config</c> object; unknown keys are ignored as transformers ignores them.</summary>
    public static BitsAndBytesConfig FromJson(JsonObject json)
    {
        string? method = OptionalString(json, "quant_method");
        if (method is not null && method != "bitsandbytes")
            throw new PeftSharpException($"quant_method: expected \"bitsandbytes\", got \"{method}\".");
        var config = new BitsAndBytesConfig
        {
            LoadIn4bit = Bool(json, "load_in_4bit") ?? Bool(json, "_load_in_4bit") ?? false,
            LoadIn8bit = Bool(json, "load_in_8bit") ?? Bool(json, "_load_in_8bit") ?? false,
            LlmInt8Threshold = Number(json, "llm_int8_threshold") ?? 6.0,
            LlmInt8SkipModules = StringList(json, "llm_int8_skip_modules"),
            LlmInt8EnableFp32CpuOffload = Bool(json, "llm_int8_enable_fp32_cpu_offload") ?? false,
            LlmInt8HasFp16Weight = Bool(json, "llm_int8_has_fp16_weight") ?? false,
            Bnb4bitComputeDtype = OptionalString(json, "bnb_4bit_compute_dtype") ?? "float32",
            Bnb4bitQuantType = OptionalString(json, "bnb_4bit_quant_type") ?? "fp4",
            Bnb4bitUseDoubleQuant = Bool(json, "bnb_4bit_use_double_quant") ?? false,
            Bnb4bitQuantStorage = OptionalString(json, "bnb_4bit_quant_storage") ?? "uint8",
        };
        config.Validate();
        return config;
    }

    private static JsonNode? Node(JsonObject json, string key) => json.TryGetPropertyValue(key, out var node) ? node : null;

    private static bool? Bool(JsonObject json, string key) => Node(json, key) switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out bool b) => b,
        var other => throw new PeftSharpException($"{key}: expected true or false, got {other.ToJsonString()}."),
    };

    private static double? Number(JsonObject json, string key) => Node(json, key) switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        var other => throw new PeftSharpException($"{key}: expected a number, got {other.ToJsonString()}."),
    };

    private static string? OptionalString(JsonObject json, string key) => Node(json, key) switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        var other => throw new PeftSharpException($"{key}: expected a string, got {other.ToJsonString()}."),
    };

    private static IReadOnlyList<string>? StringList(JsonObject json, string key) => Node(json, key) switch
    {
        null => null,
        JsonArray a when a.All(n => n is JsonValue v && v.TryGetValue(out string? _)) => a.Select(n => n!.GetValue<string>()).ToList(),
        var other => throw new PeftSharpException($"{key}: expected a list of module names, got {other.ToJsonString()}."),
    };
}
