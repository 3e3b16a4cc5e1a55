using System.Diagnostics;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Tests.Hostile;

/// <summary>
/// Issue 19, items 1, 2 and 5: a chat template from a downloaded tokenizer_config.json must not abort the
/// process (stack overflow), hang, or exhaust memory. Each case ran away (or aborted with exit 134) before
/// the limits; now each is a <see cref="ChatTemplateException"/> naming the limit.
/// </summary>
public class ChatTemplateLimitTests
{
    private static ChatTemplateException RenderFails(string template, string expectedInMessage)
    {
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template).Render([], false));
        Assert.Contains(expectedInMessage, e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed}");
        return e;
    }

    [Theory]
    [InlineData("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "macro call depth")]
    [InlineData("{% set ns = namespace(x=1) %}{% set ns.x = ns %}{{ ns }}", "value nesting")]
    [InlineData("{{ 2 ** 100000000000 }}", "integer size")]
    [InlineData("{{ 9223372036854775807 + 1 }}", "integer size")]
    [InlineData("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loop iterations")]
    [InlineData("{{ 'a' * 2000000000 }}", "string length")]
    [InlineData("{{ ([1] * 1000000000) | length }}", "list length")]
    [InlineData("{{ {'a': [1]} | tojson(indent=1000000000) }}", "tojson indent")]
    [InlineData("{{ 'x' | center(2000000000) }}", "string length")]
    [InlineData("{% set s = namespace(v='ab') %}{% for i in range(40) %}{% set s.v = s.v + s.v %}{% endfor %}{{ s.v | length }}", "string length")]
    [InlineData("{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v == ns.v }}", "value nesting")]
    [InlineData("{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | tojson }}", "value nesting")]
    [InlineData("{{ ('ab' * 30000000) | list | length }}", "list length")]
    [InlineData("{{ ('a b ' * 10000000).split() | length }}", "list length")]
    public void A_runaway_render_is_a_template_error_naming_the_limit(string template, string limit) => RenderFails(template, limit);

    [Fact]
    public void Quadratic_work_in_a_filter_stops_at_the_time_budget()
    {
        // 100,000 distinct items through unique: 5e9 comparisons, with no template loop to count.
        var e = RenderFails("{{ range(100000) | list | unique | length }}", "render time");
        Assert.Contains("10 s per render", e.Message);
    }

    [Fact]
    public void Slicing_a_long_string_stays_a_string()
    {
        Assert.Equal("20000000 cba", ChatTemplate.Parse("{{ ('a' * 20000000)[::-1] | length }} {{ 'abc'[::-1] }}").Render([], false));
    }

    [Theory]
    [InlineData(100_000, "(", ")")]
    [InlineData(100_000, "[", "]")]
    [InlineData(100_000, "-", "")]
    [InlineData(100_000, "not ", "")]
    public void Deep_nesting_in_the_source_is_refused_at_parse_time(int depth, string open, string close)
    {
        string template = "{{ " + string.Concat(Enumerable.Repeat(open, depth)) + "1" + string.Concat(Enumerable.Repeat(close, depth)) + " }}";
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template));
        Assert.Contains("nesting deeper than the limit of 100 levels", e.Message);
        Assert.Equal(1, e.Line);
    }

    [Fact]
    public void Deeply_nested_blocks_are_refused_at_parse_time()
    {
        string template = string.Concat(Enumerable.Repeat("{% if true %}", 50_000)) + "x" + string.Concat(Enumerable.Repeat("{% endif %}", 50_000));
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template));
        Assert.Contains("nesting deeper than the limit", e.Message);
    }

    [Fact]
    public void A_long_flat_chain_is_an_error_not_a_stack_overflow()
    {
        // Left-nested operator and attribute chains are parsed in a loop but evaluated recursively.
        string plus = "{{ " + string.Join(" + ", Enumerable.Repeat("1", 200_000)) + " }}";
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(plus).Render([], false));
        Assert.Contains("nesting", e.Message);
    }

    [Fact]
    public void Nesting_within_the_limits_still_renders()
    {
        string template = "{{ " + new string('(', 60) + "1" + new string(')', 60) + " }}"
            + "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% else %}done{% endif %}{% endmacro %}{{ f(50) }}"
            + "{{ 2 ** 62 }} {{ 'ab' * 3 }} {{ [1, 2] * 2 }}";
        Assert.Equal("1done4611686018427387904 ababab [1, 2, 1, 2]", ChatTemplate.Parse(template).Render([], false));
    }

    [Fact]
    public void Sorting_values_that_cannot_be_compared_is_a_template_error()
    {
        var e = RenderFails("{{ [1, 'a'] | sort }}", "'<' not supported between instances of");
        Assert.Equal(1, e.Line);
    }

    [Fact]
    public void A_render_error_names_the_tokenizer_config_it_came_from()
    {
        string dir = Directory.CreateTempSubdirectory("peftsharp-tpl").FullName;
        try
        {
            string file = Path.Combine(dir, "tokenizer_config.json");
            File.WriteAllText(file, """{"chat_template": "{{ 'a' * 2000000000 }}"}""");
            var template = ChatTemplate.FromTokenizerConfig(dir);
            var e = Assert.Throws<ChatTemplateException>(() => template.Render([], false));
            Assert.StartsWith(file + ":", e.Message);
            Assert.Contains("67,108,864 characters", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
