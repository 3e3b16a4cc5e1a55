namespace PeftSharp.Serving;

/// <summary>What a <see cref="ServingEngine"/> may hold and accept (vLLM's names where they exist).</summary>
public sealed class ServingOptions
{
    /// <summary>--max-num-seqs: rows of the running batch (sequences decoded together).</summary>
    public int MaxNumSeqs { get; set; } = 8;

    /// <summary>
    /// --max-num-tokens: tokens (prompt + max new tokens) the running sequences may reserve together; a request waits in the
    /// queue until its reservation fits.
    /// </summary>
    public int MaxNumTokens { get; set; } = 16384;

    /// <summary>--max-model-len: most tokens (prompt + generated) of one sequence; default and cap: the model's positions.</summary>
    public int? MaxModelLen { get; set; }

    /// <summary>Requests waiting for a row; one more is refused (the server answers 429).</summary>
    public int MaxQueue { get; set; } = 64;

    /// <summary>Most new tokens one request may ask for.</summary>
    public int MaxNewTokensLimit { get; set; } = 2048;

    /// <summary>New tokens when a request names none and generation_config.json sets none.</summary>
    public int DefaultMaxNewTokens { get; set; } = 256;

    public void Validate()
    {
        if (MaxNumSeqs < 1) throw new PeftSharpException($"--max-num-seqs must be at least 1 (got {MaxNumSeqs}).");
        if (MaxNumTokens < 2) throw new PeftSharpException($"--max-num-tokens must be at least 2 (got {MaxNumTokens}).");
        if (MaxModelLen is < 2) throw new PeftSharpException($"--max-model-len must be at least 2 (got {MaxModelLen}).");
        if (MaxQueue < 0) throw new PeftSharpException($"the queue size must be 0 or more (got {MaxQueue}).");
        if (MaxNewTokensLimit < 1) throw new PeftSharpException($"the max_tokens limit must be at least 1 (got {MaxNewTokensLimit}).");
    }
}

/// <summary>A request the engine refuses before it starts: <see cref="StatusCode"/> is the HTTP status a server answers with.</summary>
public sealed class ServingException(int statusCode, string type, string message, string? param = null, string? code = null) : PeftSharpException(message)
{
    public int StatusCode { get; } = statusCode;
    /// <summary>OpenAI's error type: invalid_request_error, not_found_error, rate_limit_error, …</summary>
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static ServingException BadRequest(string message, string? param = null) => new(400, "invalid_request_error", message, param);
    public static ServingException NotFound(string message, string? param = null, string? code = null) => new(404, "not_found_error", message, param, code);
}
