namespace PeftSharp.Server;

/// <summary>How `peftsharp serve` listens and what one request may cost.</summary>
public sealed class ServerOptions
{
    /// <summary>The environment variable read for the API key when --api-key is not given (vLLM reads VLLM_API_KEY).</summary>
    public const string ApiKeyVariable = "PEFTSHARP_API_KEY";

    /// <summary>Address to bind: loopback unless told otherwise.</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Port; 0 picks a free one (see <see cref="OpenAiServer.Address"/>).</summary>
    public int Port { get; set; } = 8000;

    /// <summary>With a key every /v1 request needs `Authorization: Bearer KEY`; /health and /metrics stay open.</summary>
    public string? ApiKey { get; set; }

    /// <summary>Largest request body accepted (413 beyond).</summary>
    public long MaxBodyBytes { get; set; } = 1 << 20;

    /// <summary>Most prompt tokens a request may send (400 beyond); null: the model's length less one.</summary>
    public int? MaxPromptTokens { get; set; }

    /// <summary>Most choices (n) one request may ask for.</summary>
    public int MaxChoices { get; set; } = 8;

    /// <summary>A request still running after this long is cancelled (its row freed) and answered 504 (streams just end).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>On shutdown, running requests get this long to finish before they are cancelled.</summary>
    public TimeSpan ShutdownDrain { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Allow /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING).</summary>
    public bool AllowRuntimeLoraUpdating { get; set; } = true;

    public void Validate()
    {
        if (Port is < 0 or > 65535) throw new PeftSharpException($"--port must be 0..65535 (got {Port}).");
        if (MaxBodyBytes < 1024) throw new PeftSharpException($"the body limit must be at least 1024 bytes (got {MaxBodyBytes}).");
        if (RequestTimeout <= TimeSpan.Zero) throw new PeftSharpException("--request-timeout must be positive.");
        if (!IsLoopback(Host) && string.IsNullOrEmpty(ApiKey))
            throw new PeftSharpException($"--host {Host} is reachable from other machines; give --api-key (or {ApiKeyVariable}) so that only clients with the key are served.");
    }

    public static bool IsLoopback(string host) =>
        host is "localhost" or "127.0.0.1" or "::1" or "[::1]" || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));
}
