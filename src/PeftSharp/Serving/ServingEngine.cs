using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using PeftSharp.Formats;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Peft;

namespace PeftSharp.Serving;

/// <summary>One sequence to generate: prompt ids, the adapter its rows use (null: the base model) and resolved options.</summary>
public sealed record GenerationRequest(int[] PromptIds, string? Adapter, GenerationOptions Options)
{
    /// <summary>Which of a request's n choices this is: sampling draws from stream <see cref="Generator.SequenceSeed"/>(seed, index).</summary>
    public int ChoiceIndex { get; init; }
}

/// <summary>
/// One step of a sequence as it streams: the token chosen (-1 on the final update), the text now safe to show, and on the
/// last update why it finished.
/// </summary>
public sealed record GenerationUpdate(int TokenId, string Text, FinishReason? Finish);

/// <summary>A finished sequence: its text (cut before a stop string), its tokens (an eos included), why it ended.</summary>
public sealed record GenerationResult(string Text, int[] Tokens, int PromptTokens, FinishReason Finish);

/// <summary>
/// Continuous batching over one base model and many adapters: a single loop thread owns a <see cref="IBatchDecodeSession"/>
/// of <see cref="ServingOptions.MaxNumSeqs"/> rows. Between decode steps it runs adapter loads and unloads, admits waiting
/// requests into free rows (each prefilled alone), and drops rows whose caller cancelled; each step then decodes one token
/// for every running row at once, each row with its own adapter (the base GEMMs shared). Requests beyond the queue's
/// bound are refused (<see cref="ServingException"/> 429).
/// </summary>
public sealed class ServingEngine : IDisposable
{
    private readonly ICausalLM _model;
    private readonly PeftModel _peft;
    private readonly IBatchDecodeSession _session;
    private readonly ServingOptions _options;
    private readonly ConcurrentQueue<Sequence> _waiting = new();
    private readonly ConcurrentQueue<Action> _control = new();
    private readonly ConcurrentDictionary<string, string> _adapters = new(StringComparer.Ordinal);
    private readonly HashSet<string> _unloading = new(StringComparer.Ordinal);
    private readonly Sequence?[] _rows;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _loop;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private int _waitingCount;
    private int _reserved;
    private bool _accepting = true;
    private long _requests, _promptTokens, _generatedTokens, _cancelled, _failed;
    private readonly Queue<(long Ticks, long Tokens)> _rate = new();

    public ServingEngine(ICausalLM model, Tokenizer tokenizer, string modelName, ServingOptions? options = null,
        ChatTemplate? chatTemplate = null, GenerationConfig? generationConfig = null)
    {
        _options = options ?? new ServingOptions();
        _options.Validate();
        _model = model;
        Tokenizer = tokenizer;
        ModelName = modelName;
        ChatTemplate = chatTemplate;
        GenerationConfig = generationConfig;
        MaxModelLen = Math.Min(_options.MaxModelLen ?? model.Config.MaxPositionEmbeddings, model.Config.MaxPositionEmbeddings);
        MaxModelLen = Math.Min(MaxModelLen, _options.MaxNumTokens);
        _peft = PeftModel.WithoutAdapters(model);
        _session = model.StartDecoding(_options.MaxNumSeqs, MaxModelLen) as IBatchDecodeSession
            ?? throw new PeftSharpException($"{model.GetType().Name} cannot decode rows independently; serving needs a CausalLM.");
        _rows = new Sequence?[_options.MaxNumSeqs];
        _loop = new Thread(Loop) { IsBackground = true, Name = "peftsharp-serving" };
        _loop.Start();
    }

    /// <summary>
    /// Loads a model folder for serving: the model (through <paramref name="loadModel"/>, default <see cref="Quantization.QuantizedModel.Load"/>),
    /// its tokenizer, chat template (built-in ChatML when it has none) and generation_config.json.
    /// </summary>
    public static ServingEngine Load(string folderOrHubId, ServingOptions? options = null, Func<string, ICausalLM>? loadModel = null, string? modelName = null)
    {
        string folder = ModelFolder.Resolve(folderOrHubId);
        var tokenizer = Prompts.LoadTokenizer(folder);
        var template = ChatTemplates.Resolve(null, folder, ChatTemplates.DefaultFallback);
        var model = (loadModel ?? (f => Quantization.QuantizedModel.Load(f)))(folder);
        try
        {
            return new ServingEngine(model, tokenizer, modelName ?? folderOrHubId, options, template, GenerationConfig.TryLoad(folder)) { OwnsModel = true };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public Tokenizer Tokenizer { get; }
    public ChatTemplate? ChatTemplate { get; }
    public GenerationConfig? GenerationConfig { get; }
    public ModelConfig ModelConfig => _model.Config;

    /// <summary>The name clients give as "model" for the base model.</summary>
    public string ModelName { get; }

    /// <summary>Most tokens (prompt + generated) of one sequence.</summary>
    public int MaxModelLen { get; }

    public ServingOptions Options => _options;

    /// <summary>Disposes the model with the engine (set by <see cref="Load"/>).</summary>
    public bool OwnsModel { get; init; }

    /// <summary>The adapters loaded, by name, with the folder each came from.</summary>
    public IReadOnlyDictionary<string, string> Adapters => _adapters;

    /// <summary>True when <paramref name="name"/> is the base model's name or a loaded adapter.</summary>
    public bool HasModel(string name) => name == ModelName || _adapters.ContainsKey(name);

    /// <summary>The adapter a request's "model" names: null for the base model; an unknown name is a 404.</summary>
    public string? AdapterFor(string? model)
    {
        if (string.IsNullOrEmpty(model) || model == ModelName) return null;
        if (_adapters.ContainsKey(model)) return model;
        throw ServingException.NotFound($"The model `{model}` does not exist.", "model", "model_not_found");
    }

    /// <summary>generation_config.json's settings overridden by a request's (<see cref="GenerationSettings.Resolve"/>), max_tokens bounded.</summary>
    public GenerationOptions ResolveOptions(GenerationSettings settings)
    {
        if (settings.MaxNewTokens is int n && (n < 1 || n > _options.MaxNewTokensLimit))
            throw ServingException.BadRequest($"max_tokens must be between 1 and {_options.MaxNewTokensLimit} (got {n}).", "max_tokens");
        try
        {
            return settings.Resolve(GenerationConfig, _model.Config, Tokenizer, _options.DefaultMaxNewTokens);
        }
        catch (PeftSharpException e) when (e is not ServingException)
        {
            throw ServingException.BadRequest(e.Message);
        }
    }

    /// <summary>A conversation as prompt ids, through the model's chat template.</summary>
    public int[] EncodeChat(IReadOnlyList<ChatMessage> messages)
    {
        if (ChatTemplate == null) throw ServingException.BadRequest("this model has no chat template; use /v1/completions.");
        try
        {
            return Prompts.EncodeChat(Tokenizer, ChatTemplate, messages);
        }
        catch (PeftSharpException e) when (e is not ServingException)
        {
            throw ServingException.BadRequest(e.Message, "messages");
        }
    }

    public int[] EncodeText(string prompt) => Prompts.EncodeText(Tokenizer, prompt);

    /// <summary>
    /// Queues a sequence: checks the prompt against the model's length (400), then the queue (429). The returned reader yields
    /// an update per token and a last one with the finish reason; cancelling <paramref name="cancellationToken"/> frees the
    /// sequence's row at the next step.
    /// </summary>
    public ChannelReader<GenerationUpdate> Submit(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        int promptLength = request.PromptIds.Length;
        if (promptLength == 0) throw ServingException.BadRequest("the prompt is empty.", "prompt");
        foreach (int id in request.PromptIds)
            if ((uint)id >= (uint)_model.Config.VocabSize) throw ServingException.BadRequest($"the prompt holds token id {id}, outside the model's vocabulary of {_model.Config.VocabSize}.", "prompt");
        if (promptLength >= MaxModelLen)
            throw new ServingException(400, "invalid_request_error", $"This model's maximum context length is {MaxModelLen} tokens. However, your prompt has {promptLength} tokens; no room is left to generate.", "messages", "context_length_exceeded");
        if (request.Adapter != null && !_adapters.ContainsKey(request.Adapter))
            throw ServingException.NotFound($"The model `{request.Adapter}` does not exist.", "model", "model_not_found");
        if (!_accepting) throw new ServingException(503, "server_error", "the server is shutting down.");
        var options = request.Options;
        int maxNew = Math.Min(options.MaxNewTokens, MaxModelLen - promptLength);
        // Running and waiting together: the rows plus the queue.
        if (Interlocked.Increment(ref _waitingCount) > _options.MaxQueue + _options.MaxNumSeqs)
        {
            Interlocked.Decrement(ref _waitingCount);
            throw new ServingException(429, "rate_limit_error", $"the server is busy: {_options.MaxQueue} requests are already waiting; retry later.");
        }
        var sequence = new Sequence(request, maxNew, Tokenizer, _model.Config.VocabSize, cancellationToken);
        Interlocked.Increment(ref _requests);
        Interlocked.Add(ref _promptTokens, promptLength);
        _waiting.Enqueue(sequence);
        _wake.Release();
        return sequence.Output.Reader;
    }

    /// <summary>Generates a whole sequence (see <see cref="Submit"/>).</summary>
    public async Task<GenerationResult> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        var reader = Submit(request, cancellationToken);
        var text = new System.Text.StringBuilder();
        var tokens = new List<int>();
        await foreach (var update in reader.ReadAllAsync(CancellationToken.None))
        {
            text.Append(update.Text);
            if (update.TokenId >= 0) tokens.Add(update.TokenId);
            if (update.Finish is { } finish)
            {
                if (finish == FinishReason.Cancelled) cancellationToken.ThrowIfCancellationRequested();
                return new GenerationResult(text.ToString(), tokens.ToArray(), request.PromptIds.Length, finish);
            }
        }
        throw new OperationCanceledException("the engine stopped before the sequence finished.");
    }

    /// <summary>
    /// vLLM's load_lora_adapter: loads a PEFT adapter folder under <paramref name="name"/> between decode steps. Refused (400)
    /// when the name is taken, the folder is not an adapter, it was made for another base model (the reason says which tensor
    /// does not fit), or it needs what a mixed batch cannot do (DoRA, a trained bias, modules_to_save).
    /// </summary>
    public Task LoadAdapterAsync(string name, string path)
    {
        if (string.IsNullOrWhiteSpace(name)) throw ServingException.BadRequest("lora_name is required.", "lora_name");
        if (string.IsNullOrWhiteSpace(path)) throw ServingException.BadRequest("lora_path is required.", "lora_path");
        if (name == ModelName || _adapters.ContainsKey(name))
            throw ServingException.BadRequest($"The lora adapter '{name}' has already been loaded.", "lora_name");
        if (!Directory.Exists(path)) throw ServingException.BadRequest($"lora_path {path}: no such folder.", "lora_path");
        LoraConfig config;
        try
        {
            config = LoraConfig.Load(path);
        }
        catch (PeftSharpException e)
        {
            throw ServingException.BadRequest(e.Message, "lora_path");
        }
        if (config.UseDora) throw ServingException.BadRequest($"adapter {path} uses DoRA, which serving with per-row adapters does not support; merge it instead.", "lora_path");
        if (config.Bias != "none") throw ServingException.BadRequest($"adapter {path} trains biases (bias \"{config.Bias}\"), which a mixed-adapter batch cannot apply per row; merge it instead.", "lora_path");
        if (config.ModulesToSave is { Count: > 0 }) throw ServingException.BadRequest($"adapter {path} saves whole modules ({string.Join(", ", config.ModulesToSave)}), which a mixed-adapter batch cannot swap per row; merge it instead.", "lora_path");
        return RunOnLoop(() =>
        {
            try
            {
                _peft.LoadAdapter(path, name);
            }
            catch (PeftSharpException e)
            {
                throw ServingException.BadRequest(e.Message, "lora_path");
            }
            _adapters[name] = Path.GetFullPath(path);
        });
    }

    /// <summary>vLLM's unload_lora_adapter: new requests no longer find it at once; it is freed when no running sequence uses it.</summary>
    public Task UnloadAdapterAsync(string name)
    {
        if (!_adapters.TryRemove(name, out _))
            throw ServingException.NotFound($"The lora adapter '{name}' cannot be found.", "lora_name");
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void TryDelete()
        {
            bool inUse = _rows.Any(r => r?.Request.Adapter == name) || _waiting.Any(w => w.Request.Adapter == name);
            if (inUse)
            {
                _control.Enqueue(TryDelete);
                return;
            }
            try
            {
                _peft.DeleteAdapter(name);
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }
        _control.Enqueue(TryDelete);
        _wake.Release();
        return done.Task;
    }

    private Task RunOnLoop(Action action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _control.Enqueue(() =>
        {
            try
            {
                action();
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        });
        _wake.Release();
        return done.Task;
    }

    /// <summary>A snapshot of the engine's counters.</summary>
    public ServingMetrics Metrics
    {
        get
        {
            int running = _rows.Count(r => r != null);
            long kvUsed = 0;
            for (int r = 0; r < _rows.Length; r++) if (_rows[r] != null) kvUsed += _session.RowLength(r);
            double rate;
            lock (_rate)
            {
                rate = _rate.Count < 2 ? 0 : (_rate.Last().Tokens - _rate.Peek().Tokens) / Math.Max(1e-9, (_rate.Last().Ticks - _rate.Peek().Ticks) / (double)Stopwatch.Frequency);
            }
            return new ServingMetrics(Interlocked.Read(ref _requests), running, Math.Max(0, Volatile.Read(ref _waitingCount) - running),
                Interlocked.Read(ref _promptTokens), Interlocked.Read(ref _generatedTokens), rate,
                kvUsed, (long)_rows.Length * MaxModelLen, Volatile.Read(ref _reserved), _options.MaxNumTokens,
                Interlocked.Read(ref _cancelled), Interlocked.Read(ref _failed), _adapters.Count, _clock.Elapsed.TotalSeconds);
        }
    }

    /// <summary>
    /// Stops accepting requests, lets running and waiting ones finish for up to <paramref name="drain"/>, then cancels the rest.
    /// </summary>
    public async Task ShutdownAsync(TimeSpan drain)
    {
        _accepting = false;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < drain && (Volatile.Read(ref _waitingCount) > 0)) await Task.Delay(20).ConfigureAwait(false);
        _stop.Cancel();
        _wake.Release();
        await Task.Run(() => _loop.Join(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
    }

    private void Loop()
    {
        var logits = new float[_rows.Length * _model.Config.VocabSize];
        int vocab = _model.Config.VocabSize;
        var stepRows = new List<int>(_rows.Length);
        var stepTokens = new List<int>(_rows.Length);
        var stepAdapters = new List<string?>(_rows.Length);
        while (true)
        {
            bool busy = _rows.Any(r => r != null);
            if (!busy)
            {
                try { _wake.Wait(_stop.Token); }
                catch (OperationCanceledException) { break; }
            }
            if (_stop.IsCancellationRequested) break;

            int controls = _control.Count;
            for (int i = 0; i < controls && _control.TryDequeue(out var action); i++) action();

            // Leave: cancelled rows free their slot.
            for (int r = 0; r < _rows.Length; r++)
                if (_rows[r] is { } s && s.Cancellation.IsCancellationRequested) Finish(r, FinishReason.Cancelled);

            // Join: waiting requests take free rows while their reservation fits; each is prefilled alone.
            for (int r = 0; r < _rows.Length; r++)
            {
                if (_rows[r] != null) continue;
                if (!_waiting.TryPeek(out var next)) break;
                if (next.Cancellation.IsCancellationRequested)
                {
                    _waiting.TryDequeue(out _);
                    Interlocked.Decrement(ref _waitingCount);
                    Interlocked.Increment(ref _cancelled);
                    next.Complete(FinishReason.Cancelled);
                    r--;
                    continue;
                }
                if (_reserved + next.Reservation > _options.MaxNumTokens && _rows.Any(x => x != null)) break;
                _waiting.TryDequeue(out _);
                _session.ResetRow(r);
                _rows[r] = next;
                _reserved += next.Reservation;
                try
                {
                    var prompt = next.Request.PromptIds;
                    _session.AppendRows([r], prompt, prompt.Length, [next.Request.Adapter], logits.AsSpan(0, vocab));
                    Choose(r, logits.AsSpan(0, vocab));
                }
                catch (Exception e)
                {
                    Fail(r, e);
                }
            }

            // Step: one token for every running row, each with its own adapter.
            stepRows.Clear();
            stepTokens.Clear();
            stepAdapters.Clear();
            // Rows sharing an adapter go next to each other, so each adapter's B·A runs as one GEMM over its rows.
            foreach (int r in Enumerable.Range(0, _rows.Length).Where(r => _rows[r] != null).OrderBy(r => _rows[r]!.Request.Adapter, StringComparer.Ordinal))
            {
                var s = _rows[r]!;
                stepRows.Add(r);
                stepTokens.Add(s.LastToken);
                stepAdapters.Add(s.Request.Adapter);
            }
            if (stepRows.Count == 0) continue;
            try
            {
                var span = logits.AsSpan(0, stepRows.Count * vocab);
                _session.AppendRows(stepRows.ToArray(), stepTokens.ToArray(), 1, stepAdapters, span);
                for (int i = 0; i < stepRows.Count; i++) Choose(stepRows[i], span.Slice(i * vocab, vocab));
            }
            catch (Exception e)
            {
                foreach (int r in stepRows) Fail(r, e);
            }
        }
        // Shutdown: whatever still runs or waits is cancelled.
        for (int r = 0; r < _rows.Length; r++) if (_rows[r] != null) Finish(r, FinishReason.Cancelled);
        while (_waiting.TryDequeue(out var w))
        {
            Interlocked.Decrement(ref _waitingCount);
            w.Complete(FinishReason.Cancelled);
        }
    }

    /// <summary>Chooses row <paramref name="row"/>'s next token from its logits; finishes it on eos, a stop string or its length.</summary>
    private void Choose(int row, Span<float> logits)
    {
        var s = _rows[row]!;
        int next = s.Sampler.Choose(logits, s.State);
        s.State.Add(next);
        s.Generated++;
        RecordTokens(1);
        var options = s.Request.Options;
        if (Array.IndexOf(options.EosTokenIds, next) >= 0)
        {
            s.Emit(next, "");
            Finish(row, FinishReason.Eos);
            return;
        }
        string text = s.Stream.Push(next);
        s.Emit(next, text);
        if (s.Stream.Stopped) Finish(row, FinishReason.StopString);
        else if (s.Generated >= s.MaxNewTokens) Finish(row, FinishReason.Length);
        else s.LastToken = next;
    }

    private void RecordTokens(long n)
    {
        long total = Interlocked.Add(ref _generatedTokens, n);
        long now = Stopwatch.GetTimestamp();
        lock (_rate)
        {
            _rate.Enqueue((now, total));
            while (_rate.Count > 2 && now - _rate.Peek().Ticks > Stopwatch.Frequency * 10) _rate.Dequeue();
        }
    }

    private void Finish(int row, FinishReason reason)
    {
        var s = _rows[row]!;
        _rows[row] = null;
        _reserved -= s.Reservation;
        Interlocked.Decrement(ref _waitingCount);
        if (reason == FinishReason.Cancelled) Interlocked.Increment(ref _cancelled);
        s.Complete(reason);
    }

    private void Fail(int row, Exception e)
    {
        var s = _rows[row];
        if (s == null) return;
        _rows[row] = null;
        _reserved -= s.Reservation;
        Interlocked.Decrement(ref _waitingCount);
        Interlocked.Increment(ref _failed);
        s.Output.Writer.TryComplete(e);
    }

    public void Dispose()
    {
        if (!_stop.IsCancellationRequested)
        {
            _accepting = false;
            _stop.Cancel();
            _wake.Release();
        }
        _loop.Join(TimeSpan.FromSeconds(10));
        _session.Dispose();
        if (OwnsModel)
        {
            _peft.Dispose();
            _model.Dispose();
        }
    }

    /// <summary>A request's state while it waits or runs; touched only by the loop thread once queued.</summary>
    private sealed class Sequence
    {
        public Sequence(GenerationRequest request, int maxNewTokens, Tokenizer tokenizer, int vocab, CancellationToken cancellation)
        {
            Request = request;
            MaxNewTokens = maxNewTokens;
            Cancellation = cancellation;
            var options = request.Options;
            // The per-sequence state keeps max_new_tokens slots; the request's own bound applies.
            var bounded = Clone(options, maxNewTokens);
            State = new Generator.SequenceState(request.PromptIds, bounded, vocab, request.ChoiceIndex, decodes: false);
            Sampler = new Generator.Sampler(bounded, vocab);
            Stream = new TextStream(ids => tokenizer.Decode(ids, skipSpecialTokens: true), options.StopStrings);
        }

        public GenerationRequest Request { get; }
        public int MaxNewTokens { get; }
        public int Reservation => Request.PromptIds.Length + MaxNewTokens;
        public CancellationToken Cancellation { get; }
        public Generator.SequenceState State { get; }
        public Generator.Sampler Sampler { get; }
        public TextStream Stream { get; }
        public Channel<GenerationUpdate> Output { get; } = Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleWriter = true });
        public int Generated { get; set; }
        public int LastToken { get; set; }

        public void Emit(int token, string text) => Output.Writer.TryWrite(new GenerationUpdate(token, text, null));

        public void Complete(FinishReason reason)
        {
            string rest = reason == FinishReason.Cancelled ? "" : Stream.Finish();
            Output.Writer.TryWrite(new GenerationUpdate(-1, rest, reason));
            Output.Writer.TryComplete();
        }

        private static GenerationOptions Clone(GenerationOptions o, int maxNew) => new()
        {
            MaxNewTokens = maxNew, DoSample = o.DoSample, Temperature = o.Temperature, TopK = o.TopK, TopP = o.TopP,
            RepetitionPenalty = o.RepetitionPenalty, Seed = o.Seed, EosTokenIds = o.EosTokenIds, PadTokenId = o.PadTokenId, StopStrings = o.StopStrings,
        };
    }
}

/// <summary>The engine's counters: requests, queue, tokens and tokens/s (last 10 s), KV-cache use, failures.</summary>
public sealed record ServingMetrics(long RequestsTotal, int Running, int Waiting, long PromptTokensTotal, long GeneratedTokensTotal,
    double TokensPerSecond, long KvCacheTokensUsed, long KvCacheTokensCapacity, long TokensReserved, long MaxNumTokens,
    long RequestsCancelled, long RequestsFailed, int Adapters, double UptimeSeconds);
