using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Tests.Formats;

public class ChatTemplateSpanAndBuiltinTests
{
    private static readonly ChatMessage[] Conversation =
    [
        ChatMessage.System("Be brief."),
        ChatMessage.User(" Hi there "),
        ChatMessage.Assistant("Hello!"),
        ChatMessage.User("2+2?"),
        ChatMessage.Assistant("4"),
    ];

    // The formats as documented (and as Jinja2 renders our built-in templates).
    [Theory]
    [InlineData("chatml", false, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")]
    [InlineData("chatml", true, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>assistant\n")]
    [InlineData("llama3", false, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>")]
    [InlineData("llama3", true, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")]
    [InlineData("llama2", false, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] 2+2? [/INST] 4 </s>")]
    [InlineData("zephyr", false, "<|system|>\nBe brief.</s>\n<|user|>\n Hi there </s>\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n4</s>\n")]
    [InlineData("zephyr", true, "<|system|>\nBe brief.</s>\n<|user|>\n Hi there </s>\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n4</s>\n<|assistant|>\n")]
    public void BuiltinFormats(string name, bool addGenerationPrompt, string expected) =>
        Assert.Equal(expected, ChatTemplate.Builtin(name).Render(Conversation, addGenerationPrompt));

    [Fact]
    public void BuiltinSpecialTokensCanBeOverridden()
    {
        var template = ChatTemplate.Builtin("zephyr", new Dictionary<string, object?> { ["eos_token"] = "<eos>" });
        Assert.Equal("<|user|>\nhi<eos>\n", template.Render([ChatMessage.User("hi")], false));
        Assert.Equal("<|user|>\nhi[E]\n", template.Render([ChatMessage.User("hi")], false, new Dictionary<string, object?> { ["eos_token"] = "[E]" }));
    }

    [Fact]
    public void Llama2RequiresAlternatingTurns()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Builtin("llama2").Render([ChatMessage.User("a"), ChatMessage.User("b")], false));
        Assert.StartsWith("llama2 conversations must alternate", ex.Message);
    }

    [Fact]
    public void UnknownBuiltinListsTheKnownOnes()
    {
        var ex = Assert.Throws<PeftSharpException>(() => ChatTemplate.Builtin("vicuna"));
        Assert.Contains("chatml, llama3, llama2, zephyr", ex.Message);
    }

    [Theory]
    [InlineData("chatml", "<|im_end|>")]
    [InlineData("llama3", "<|eot_id|>")]
    [InlineData("llama2", " </s>")]
    [InlineData("zephyr", "</s>")]
    public void BuiltinSpansComeFromGenerationBlocksAndCoverAssistantContentAndEndOfTurn(string name, string endOfTurn)
    {
        var result = ChatTemplate.Builtin(name).RenderWithSpans(Conversation, false);
        Assert.True(result.FromGenerationBlocks);
        Assert.Equal(["Hello!" + endOfTurn, "4" + endOfTurn], result.AssistantSpans.Select(s => result.Text.Substring(s.Start, s.Length)));
        Assert.True(result.AssistantSpans[0].End <= result.AssistantSpans[1].Start);
    }

    [Fact]
    public void SpansWithoutGenerationBlocksPickTheAssistantOccurrence()
    {
        // "4" also appears earlier in the user turn; the span must be the assistant's one.
        var template = ChatTemplate.Parse("{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}");
        ChatMessage[] messages = [ChatMessage.User("Is it 4 or 5?"), ChatMessage.Assistant("4"), ChatMessage.User("Sure?"), ChatMessage.Assistant("Yes, 4.")];
        var result = template.RenderWithSpans(messages, false);
        Assert.False(result.FromGenerationBlocks);
        Assert.Equal("<user>Is it 4 or 5?</user><assistant>4</assistant><user>Sure?</user><assistant>Yes, 4.</assistant>", result.Text);
        int first = result.Text.IndexOf("<assistant>", StringComparison.Ordinal) + "<assistant>".Length;
        int second = result.Text.LastIndexOf("<assistant>", StringComparison.Ordinal) + "<assistant>".Length;
        Assert.Equal([new TextSpan(first, 1), new TextSpan(second, 7)], result.AssistantSpans);
        Assert.True(result.Text.IndexOf('4') < first);
    }

    [Fact]
    public void SpansFollowATemplateThatTrimsContent()
    {
        var template = ChatTemplate.Parse("{% for m in messages %}[{{ m.content | trim }}]{% endfor %}");
        var result = template.RenderWithSpans([ChatMessage.User("q"), ChatMessage.Assistant("  answer \n")], false);
        Assert.Equal("[q][answer]", result.Text);
        Assert.Equal([new TextSpan(4, 6)], result.AssistantSpans);
    }

    [Fact]
    public void SpansFallBackToSearchWhenTheTemplateRewritesContent()
    {
        // The template drops a reasoning prefix, so the placeholder rendering cannot be aligned.
        var template = ChatTemplate.Parse("{% for m in messages %}{{ m.role }}: {{ m.content.split('</think>')[-1] }}\n{% endfor %}");
        var result = template.RenderWithSpans([ChatMessage.User("q"), ChatMessage.Assistant("<think>x</think>final"), ChatMessage.Assistant("plain")], false);
        Assert.Equal("user: q\nassistant: final\nassistant: plain\n", result.Text);
        Assert.Equal(["plain"], result.AssistantSpans.Select(s => result.Text.Substring(s.Start, s.Length)));
    }

    [AssetTheory]
    [InlineData("qwen")]
    [InlineData("llama3")]
    [InlineData("llama2")]
    public void RealTemplateSpansEqualAssistantContent(string tokenizer)
    {
        var template = ChatTemplate.FromTokenizerConfig(TestAssets.Path("tokenizers", tokenizer));
        ChatMessage[] messages = [ChatMessage.User("Say 4."), ChatMessage.Assistant("4"), ChatMessage.User("Unicode: café 😀"), ChatMessage.Assistant("Noted: «ok» 😀")];
        foreach (bool gen in new[] { false, true })
        {
            var result = template.RenderWithSpans(messages, gen);
            Assert.Equal(template.Render(messages, gen), result.Text);
            Assert.Equal(["4", "Noted: «ok» 😀"], result.AssistantSpans.Select(s => result.Text.Substring(s.Start, s.Length)));
            Assert.True(result.Text.IndexOf("4", StringComparison.Ordinal) < result.AssistantSpans[0].Start);
        }
    }

    [AssetFact]
    public void TokenizerConfigSpecialTokensBecomeVariables()
    {
        var llama2 = ChatTemplate.FromTokenizerConfig(TestAssets.Path("tokenizers", "llama2", "tokenizer_config.json"));
        Assert.Equal("<s>", llama2.Variables["bos_token"]);
        Assert.Equal("</s>", llama2.Variables["eos_token"]);
        Assert.Equal("<unk>", llama2.Variables["unk_token"]);
        var qwen = ChatTemplate.FromTokenizerConfig(TestAssets.Path("tokenizers", "qwen"));
        Assert.False(qwen.Variables.ContainsKey("bos_token"));
        Assert.Equal("<|im_end|>", qwen.Variables["eos_token"]);
    }

    [Fact]
    public void TokenizerConfigVariants()
    {
        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-chat-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "tokenizer_config.json");
            File.WriteAllText(file, """
                {"eos_token": {"content": "<E>", "lstrip": false}, "bos_token": null,
                 "chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ bos_token is defined }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"}]}
                """);
            var template = ChatTemplate.FromTokenizerConfig(file);
            Assert.Equal("Falsehi<E>", template.Render([ChatMessage.User("hi")], false));
            Assert.Equal("tools", ChatTemplate.FromTokenizerConfig(dir, templateName: "tool_use").Render([], false));

            File.WriteAllText(file, """{"eos_token": "</s>"}""");
            var missing = Assert.Throws<PeftSharpException>(() => ChatTemplate.FromTokenizerConfig(dir));
            Assert.Contains("has no 'chat_template'", missing.Message);
            Assert.Equal("<|user|>\nhi</s>\n", ChatTemplate.FromTokenizerConfig(dir, fallback: "zephyr").Render([ChatMessage.User("hi")], false));

            File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "{{ messages | length }}");
            Assert.Equal("1", ChatTemplate.FromTokenizerConfig(dir).Render([ChatMessage.User("hi")], false));

            File.WriteAllText(file, """{"chat_template": "{% if %}"}""");
            var syntax = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromTokenizerConfig(file));
            Assert.Contains(file, syntax.Message);
            Assert.Contains("line 1", syntax.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
