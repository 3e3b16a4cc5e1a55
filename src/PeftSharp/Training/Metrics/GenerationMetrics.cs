using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;

namespace PeftSharp.Training.Metrics;

/// <summary>Generation-based scores of a model on prompt/reference pairs: greedy outputs, corpus BLEU (sacreBLEU) and mean ROUGE-L F.</summary>
public sealed record GenerationResult(IReadOnlyList<string> Predictions, IReadOnlyList<string> References, BleuScore Bleu, double RougeL);

public static class GenerationMetrics
{
    /// <summary>
    /// The prompt ids and the reference text of an example: prompt-completion → (Encode(prompt), completion);
    /// conversational → the conversation up to its last assistant turn rendered with the generation prompt,
    /// and that turn's content; conversational prompt-completion → the prompt messages, and the completion's assistant content.
    /// </summary>
    public static (int[] Prompt, string Reference) PromptAndReference(SftExample e, Tokenizer tokenizer, ChatTemplate? template)
    {
        switch (e.Format)
        {
            case DatasetFormat.PromptCompletion:
                return (tokenizer.Encode(e.Prompt!, addSpecialTokens: true), e.Completion!);
            case DatasetFormat.Conversational:
            {
                int last = -1;
                for (int i = 0; i < e.Messages!.Count; i++) if (e.Messages[i].Role == "assistant") last = i;
                if (last < 0) throw new PeftSharpException($"{e.Where}: no assistant message to compare generations with.");
                var prompt = Template(template, e).Render(e.Messages.Take(last).ToList(), addGenerationPrompt: true);
                return (tokenizer.Encode(prompt, addSpecialTokens: false), e.Messages[last].Content ?? "");
            }
            case DatasetFormat.ConversationalPromptCompletion:
            {
                var prompt = Template(template, e).Render(e.PromptMessages!, addGenerationPrompt: true);
                string reference = string.Concat(e.CompletionMessages!.Where(m => m.Role == "assistant").Select(m => m.Content));
                return (tokenizer.Encode(prompt, addSpecialTokens: false), reference);
            }
            default:
                throw new PeftSharpException($"{e.Where}: generation metrics (bleu, rougeL) need prompt-completion or conversational data, not plain text.");
        }
    }

    private static ChatTemplate Template(ChatTemplate? t, SftExample e) =>
        t ?? throw new PeftSharpException($"{e.Where}: conversational data needs a chat template.");

    /// <summary>Greedy-decodes every prompt (stopping at the tokenizer's EOS and the model config's EOS ids) and scores the outputs.</summary>
    public static GenerationResult Evaluate(ICausalLM model, Tokenizer tokenizer, ChatTemplate? template, IReadOnlyList<SftExample> examples, int maxNewTokens)
    {
        var stops = new HashSet<int>(model.Config.EosTokenIds);
        if (tokenizer.EosTokenId is int eos) stops.Add(eos);
        var predictions = new List<string>(examples.Count);
        var references = new List<string>(examples.Count);
        foreach (var e in examples)
        {
            var (prompt, reference) = PromptAndReference(e, tokenizer, template);
            var output = GreedyDecoding.Generate(model, prompt, maxNewTokens, stops);
            predictions.Add(tokenizer.Decode(output, skipSpecialTokens: true));
            references.Add(reference);
        }
        return new GenerationResult(predictions, references, Bleu.Corpus(predictions, [references]), RougeL.CorpusF(references, predictions));
    }
}
