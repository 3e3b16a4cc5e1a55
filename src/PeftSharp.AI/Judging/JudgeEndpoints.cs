using System.ClientModel;
using System.ClientModel.Primitives;
using Microsoft.Extensions.AI;
using OpenAI;

namespace PeftSharp.AI.Judging;

/// <summary>Judges' chat clients: an OpenAI-compatible endpoint (Microsoft.Extensions.AI.OpenAI) or a PeftSharp model in process.</summary>
public static class JudgeEndpoints
{
    public const string DefaultBaseUrl = "https://api.openai.com/v1";
    public const string DefaultApiKeyVariable = "OPENAI_API_KEY";

    /// <summary>
    /// An OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, `peftsharp serve`) at <paramref name="baseUrl"/> (the
    /// /v1 root), with the API key read from the environment variable <paramref name="apiKeyVariable"/>. A loopback endpoint may go
    /// without one. The SDK's own retries are off: <see cref="ChatJudge"/> retries, so a failure is counted once.
    /// </summary>
    public static IChatClient OpenAi(string baseUrl, string model, string apiKeyVariable = DefaultApiKeyVariable, TimeSpan? networkTimeout = null)
    {
        if (!Uri.TryCreate(baseUrl, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new PeftSharpException($"judge.base_url: expected an http(s) URL such as {DefaultBaseUrl}, got \"{baseUrl}\".");
        if (string.IsNullOrWhiteSpace(model)) throw new PeftSharpException("judge.model: the endpoint's model name is required.");
        string? key = Environment.GetEnvironmentVariable(apiKeyVariable);
        if (string.IsNullOrEmpty(key))
        {
            if (!uri.IsLoopback)
                throw new PeftSharpException($"judge.api_key_env: the environment variable {apiKeyVariable} is not set; {baseUrl} needs an API key.");
            key = "none";
        }
        var options = new OpenAIClientOptions { Endpoint = uri, RetryPolicy = new ClientRetryPolicy(0) };
        if (networkTimeout is { } t) options.NetworkTimeout = t;
        return new OpenAIClient(new ApiKeyCredential(key), options).GetChatClient(model).AsIChatClient();
    }

    /// <summary>A model folder (and an adapter, served under the name "judge") in process through <see cref="PeftSharpChatClient"/>.</summary>
    public static (IChatClient Client, string? ModelId) Local(string modelFolder, string? adapterFolder)
    {
        var adapters = adapterFolder != null ? new Dictionary<string, string> { ["judge"] = adapterFolder } : null;
        return (PeftSharpChatClient.Load(modelFolder, adapters), adapterFolder != null ? "judge" : null);
    }
}
