using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Tests.Formats;

/// <summary>
/// The template engine piece by piece. Each expected string is what Jinja2 3.1 renders for the
/// template in an ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols)
/// with transformers' tojson, given x=True, xs=[{a:1,b:2},{a:0,b:3}], m={role:user, content:hi}.
/// </summary>
public class ChatTemplateEngineTests
{
    private static string Render(string template)
    {
        var vars = new Dictionary<string, object?>
        {
            ["x"] = true,
            ["xs"] = new List<object?> { new Dictionary<string, object?> { ["a"] = 1, ["b"] = 2 }, new Dictionary<string, object?> { ["a"] = 0, ["b"] = 3 } },
            ["m"] = new Dictionary<string, object?> { ["role"] = "user", ["content"] = "hi" },
        };
        return ChatTemplate.Parse(template).Render([], false, vars);
    }

    [Theory]
    [InlineData("a\n{% if true %}\nb\n{% endif %}\nc",
                "a\nb\nc")]
    [InlineData("a\n    {% if true %}\n    b\n    {% endif %}\nc",
                "a\n    b\nc")]
    [InlineData("  {{ 'x' }}\n  {% for i in [1, 2] %}\n  - {{ i }}\n  {% endfor %}\nend",
                "  x\n  - 1\n  - 2\nend")]
    [InlineData("a   {%- if true -%}   b   {%- endif %}\n\nc",
                "ab\nc")]
    [InlineData("x\n  {#- note -#}  \n  y\n  {# plain comment #}\nz",
                "xy\nz")]
    [InlineData("{%+ if true %}\n  z{% endif +%}\nq",
                "  z\nq")]
    [InlineData("{{- 'a' -}}\n\n   {{- 'b' }}  \n  {%- if true %} c {% endif -%}  \n d",
                "ab c d")]
    [InlineData("a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n",
                "a\nb\n")]
    [InlineData("{% raw %}{{ kept }}{% endraw %}\nafter",
                "{{ kept }}after")]
    public void WhitespaceControl(string template, string expected) => Assert.Equal(expected, Render(template));

    [Theory]
    [InlineData("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}|{% endfor %}",
                "10TrueFalse33|21FalseFalse32|32FalseTrue31|")]
    [InlineData("{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ x }}-{{ loop.nextitem }}|{% endfor %}",
                "-1-2|1-2-3|2-3-|")]
    [InlineData("{% for x in [1, 2, 3, 4] if x > 1 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}",
                "2:1/3 3:2/3 4:3/3 ")]
    [InlineData("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
                "empty")]
    [InlineData("{% for x in [1, 2, 3, 4, 5] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
                "13")]
    [InlineData("{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}",
                "113 214 1|123 224 2|")]
    [InlineData("{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}",
                "role=user;content=hi;")]
    [InlineData("{% set ns = namespace(found=false, n=0) %}{% for x in [0, 1, 2] %}{% if x %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
                "True 2")]
    [InlineData("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i * 10 %}{{ x }},{% endfor %}{{ x }}",
                "10,20,1")]
    [InlineData("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', p='Yo') }}",
                "Hi Bob! Yo Al!")]
    [InlineData("{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]{% filter upper %}abc{% endfilter %}",
                "[inner 2]ABC")]
    public void Loops(string template, string expected) => Assert.Equal(expected, Render(template));

    [Theory]
    [InlineData("{{ '  hi  ' | trim }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ [1, 2, 3] | length }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}|{{ [1, 2] | first }}{{ [1, 2] | last }}|{{ ['a', 'b'] | join(', ') }}|{{ 'aaa' | replace('a', 'b', 2) }}",
                "hi|ABC|abc|3|Hello World|Hello|12|a, b|bba")]
    [InlineData("{{ x | default('d') }}|{{ nothing | default('d') }}|{{ none | default('d') }}|{{ '' | default('d', true) }}|{{ 3.7 | int }}|{{ '42' | int }}|{{ 5 | string }}|{{ 'ab' | list }}|{{ {'a': 1, 'b': 2} | items | list }}",
                "True|d|None|d|3|42|5|['a', 'b']|[('a', 1), ('b', 2)]")]
    [InlineData("{{ {'a': 'é', 'b': [1, 2.5, none, true]} | tojson }}|{{ {'b': 1, 'a': {'c': []}} | tojson(indent=2) }}|{{ 'x\"y\\n' | tojson }}|{{ {'z': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ 'é' | tojson(ensure_ascii=true) }}",
                "{\"a\": \"é\", \"b\": [1, 2.5, null, true]}|{\n  \"b\": 1,\n  \"a\": {\n    \"c\": []\n  }\n}|\"x\\\"y\\n\"|{\"a\": 2, \"z\": 1}|\"\\u00e9\"")]
    [InlineData("{{ xs | selectattr('a') | list }}|{{ xs | map(attribute='b') | list }}|{{ xs | rejectattr('a') | map(attribute='b') | join }}|{{ xs | selectattr('b', 'equalto', 3) | list | length }}",
                "[{'a': 1, 'b': 2}]|[2, 3]|3|1")]
    [InlineData("{{ [3, 1, 2] | sort }}|{{ [1, 2, 3] | sum }}|{{ [3, 1, 2] | max }}|{{ [1, 1, 2] | unique | list }}|{{ [1, 2] | reverse | list }}|{{ range(1, 7, 2) | list }}|{{ 'a\nb' | indent(2, first=true) }}",
                "[1, 2, 3]|6|3|[1, 2]|[2, 1]|[1, 3, 5]|  a\n  b")]
    public void Filters(string template, string expected) => Assert.Equal(expected, Render(template));

    [Theory]
    [InlineData("{{ 'abcdef'[::-1] }}|{{ [1, 2, 3, 4][1:] }}|{{ [1, 2, 3, 4][:-1] }}|{{ 'abcdef'[1:5:2] }}|{{ [1, 2, 3][-1] }}|{{ [1, 2, 3, 4][::-2] }}|{{ [1, 2, 3][5] }}|",
                "fedcba|[2, 3, 4]|[1, 2, 3]|bd|3|[4, 2]||")]
    [InlineData("{{ '  a b  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('lo', 'x')) }}|{{ 'xxhixx'.lstrip('x') }}|{{ 'xxhixx'.rstrip('x') }}|{{ 'Hi'.upper() }}|{{ 'a-b-c'.rsplit('-', 1) }}",
                "a b|['a', 'b', '', 'c']|['a', 'b']|True|True|hixx|xxhi|HI|['a-b', 'c']")]
    [InlineData("{{ 1 + 2 }}|{{ 'a' ~ 1 ~ none }}|{{ 3 * 'ab' }}|{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 1 < 2 < 3 }}|{{ 'a' in 'cat' }}|{{ 3 not in [1, 2] }}|{{ 'y' if false else 'n' }}|{{ 'y' if false }}|{{ not 0 and 1 or 2 }}",
                "3|a1None|ababab|3.5|3|-4|2|1024|True|True|True|n||1")]
    [InlineData("{{ none }} {{ true }} {{ [1, 'a', none, 1.5, {'k': \"it's\"}] }} {{ 1e20 }} {{ 1.0 }} {{ 0.0001 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ -0.0 }} {{ 'x' ~ undefined_name ~ 'y' }} {{ (1,) }}",
                "None True [1, 'a', None, 1.5, {'k': \"it's\"}] 1e+20 1.0 0.0001 1e-05 0.30000000000000004 -0.0 xy (1,)")]
    [InlineData("{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 3 is odd }}{{ 6 is divisibleby 3 }}{{ x is not none }}{{ 1 == 1.0 }}{{ true == 1 }}",
                "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrue")]
    [InlineData("{{ m.content }}|{{ m['role'] }}|{{ m.missing }}|{{ m.missing is defined }}|{{ m.get('zz', 'dflt') }}|{{ 'a\\tb\\\\n\\x41\\u00e9' }}|{{ {'a': {'b': 1}} }}|{{ '%}' }}",
                "hi|user||False|dflt|a\tb\\nAé|{'a': {'b': 1}}|%}")]
    public void Expressions(string template, string expected) => Assert.Equal(expected, Render(template));
    [Fact]
    public void UnknownFilterIsASyntaxErrorNamingItAndTheLine()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("line one\n\n{{ messages | shout }}"));
        Assert.Contains("no filter named 'shout'", ex.Message);
        Assert.Contains("line 3", ex.Message);
        Assert.Equal(3, ex.Line);
    }

    [Fact]
    public void UnknownTestIsASyntaxError()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% if x is loud %}{% endif %}"));
        Assert.Contains("no test named 'loud'", ex.Message);
    }

    [Fact]
    public void UnclosedBlockNamesWhatWasExpected()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% for m in messages %}\n{% if m %}x{% endif %}\n"));
        Assert.Contains("'else' or 'endfor'", ex.Message);
        Assert.Contains("'for' opened at line 1", ex.Message);
    }

    [Fact]
    public void MismatchedEndTagNamesTheExpectedOnes()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% if x %}\na\n{% endfor %}"));
        Assert.Equal(3, ex.Line);
        Assert.Contains("unknown tag 'endfor'", ex.Message);
        Assert.Contains("'elif' or 'else' or 'endif'", ex.Message);
    }

    [Fact]
    public void MissingExpressionIsReportedWithTheLine()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("a\n{{ 1 + }}"));
        Assert.Equal(2, ex.Line);
        Assert.Contains("expected an expression", ex.Message);
    }

    [Fact]
    public void BreakOutsideALoopIsRejected()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% break %}"));
        Assert.Contains("unknown tag 'break'", ex.Message);
    }

    [Fact]
    public void RaiseExceptionThrowsWithExactlyTheTemplatesMessage()
    {
        var template = ChatTemplate.Parse("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok");
        var ex = Assert.Throws<ChatTemplateException>(() => template.Render([ChatMessage.Assistant("hi")], false));
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", ex.Message);
        Assert.Equal("ok", template.Render([ChatMessage.User("hi")], false));
    }

    [Fact]
    public void AttributeOfUndefinedFailsLikeJinja()
    {
        var template = ChatTemplate.Parse("a\n{{ m.missing.deeper }}");
        var ex = Assert.Throws<ChatTemplateException>(() => template.Render([], false, new Dictionary<string, object?> { ["m"] = new Dictionary<string, object?>() }));
        Assert.Contains("'dict object' has no attribute 'missing'", ex.Message);
        Assert.Equal(2, ex.Line);
        var ex2 = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{{ nope.attr }}").Render([], false));
        Assert.Contains("'nope' is undefined", ex2.Message);
    }

    [Fact]
    public void StringPlusNoneIsATypeError()
    {
        var ex = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{{ 'a' + none }}").Render([], false));
        Assert.Contains("can only concatenate str (not \"NoneType\") to str", ex.Message);
    }

    [Fact]
    public void MessagesExposeExtraKeysAndJsonValues()
    {
        using var doc = System.Text.Json.JsonDocument.Parse("""[{"function": {"name": "f", "arguments": {"city": "Paris", "days": 2}}}]""");
        var message = new ChatMessage("assistant", null, new Dictionary<string, object?> { ["tool_calls"] = doc.RootElement.Clone() });
        var template = ChatTemplate.Parse("{{ messages[0].content }}|{% for c in messages[0].tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}");
        Assert.Equal("None|f{\"city\": \"Paris\", \"days\": 2}", template.Render([message], false));
    }

    [Fact]
    public void StrftimeNowUsesTheGivenClock()
    {
        var template = ChatTemplate.Parse("{{ strftime_now('%d %B %Y, %a') }}").WithNow(new DateTime(2026, 11, 22));
        Assert.Equal("22 November 2026, Sun", template.Render([], false));
    }

    [Fact]
    public void ParseCachesTheSyntaxTree()
    {
        var a = ChatTemplate.Parse("{{ 'cached' }}");
        var b = ChatTemplate.Parse("{{ 'cached' }}");
        Assert.Equal(a.Render([], false), b.Render([], false));
        Assert.Equal("cached", b.Render([], false));
    }
}
