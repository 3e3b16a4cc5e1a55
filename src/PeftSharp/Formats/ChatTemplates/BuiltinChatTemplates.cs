namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// Our own Jinja2 renderings of common chat formats, for model folders that ship no template.
/// Assistant content and the end-of-turn token after it sit in <c>{% generation %}</c> blocks (as in TRL's training
/// templates), so assistant spans come straight from them and assistant_only_loss trains the model to stop.
/// </summary>
internal static class BuiltinChatTemplates
{
    public static readonly string[] Names = ["chatml", "llama3", "llama2", "zephyr"];

    /// <summary>ChatML: &lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n per turn.</summary>
    private const string ChatMl =
        """
        {%- for message in messages %}
            {{- '<|im_start|>' + message['role'] + '\n' }}
            {%- if message['role'] == 'assistant' %}
                {%- generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}
            {%- else %}
                {{- message['content'] + '<|im_end|>' }}
            {%- endif %}
            {{- '\n' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}
        """;

    /// <summary>Llama 3: BOS, then a header per turn and the trimmed content closed by &lt;|eot_id|&gt;.</summary>
    private const string Llama3 =
        """
        {{- bos_token }}
        {%- for message in messages %}
            {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
            {%- if message['role'] == 'assistant' %}
                {%- generation %}{{ (message['content'] | trim) + '<|eot_id|>' }}{% endgeneration %}
            {%- else %}
                {{- (message['content'] | trim) + '<|eot_id|>' }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {%- endif %}
        """;

    /// <summary>
    /// Llama 2 chat: each user turn is "&lt;s&gt;[INST] text [/INST]", each answer " text &lt;/s&gt;"; a leading
    /// system message is folded into the first user turn inside &lt;&lt;SYS&gt;&gt; markers. Turns must alternate.
    /// </summary>
    private const string Llama2 =
        """
        {%- if messages and messages[0]['role'] == 'system' %}
            {%- set system_text = messages[0]['content'] | trim %}
            {%- set turns = messages[1:] %}
        {%- else %}
            {%- set system_text = none %}
            {%- set turns = messages %}
        {%- endif %}
        {%- for message in turns %}
            {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                {{- raise_exception('llama2 conversations must alternate user and assistant turns (after an optional system message)') }}
            {%- endif %}
            {%- if message['role'] == 'user' %}
                {%- set text = message['content'] | trim %}
                {%- if loop.first and system_text is not none %}
                    {%- set text = '<<SYS>>\n' + system_text + '\n<</SYS>>\n\n' + text %}
                {%- endif %}
                {{- bos_token + '[INST] ' + text + ' [/INST]' }}
            {%- else %}
                {{- ' ' }}
                {%- generation %}{{ (message['content'] | trim) + ' ' + eos_token }}{% endgeneration %}
            {%- endif %}
        {%- endfor %}
        """;

    /// <summary>Zephyr: &lt;|role|&gt;\ncontent followed by EOS and a newline per turn.</summary>
    private const string Zephyr =
        """
        {%- for message in messages %}
            {{- '<|' + message['role'] + '|>\n' }}
            {%- if message['role'] == 'assistant' %}
                {%- generation %}{{ message['content'] + eos_token }}{% endgeneration %}
            {%- else %}
                {{- message['content'] + eos_token }}
            {%- endif %}
            {{- '\n' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|assistant|>\n' }}
        {%- endif %}
        """;

    public static (string Source, Dictionary<string, object?> Defaults) Get(string name) => name.ToLowerInvariant() switch
    {
        "chatml" => (ChatMl, new() { ["eos_token"] = "<|im_end|>" }),
        "llama3" => (Llama3, new() { ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>" }),
        "llama2" => (Llama2, new() { ["bos_token"] = "<s>", ["eos_token"] = "</s>" }),
        "zephyr" => (Zephyr, new() { ["eos_token"] = "</s>" }),
        _ => throw new PeftSharpException($"unknown chat format '{name}'; expected one of {string.Join(", ", Names)}"),
    };
}
