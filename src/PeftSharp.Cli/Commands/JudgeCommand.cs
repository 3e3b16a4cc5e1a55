using System.CommandLine;
using PeftSharp.AI.Judging;
using PeftSharp.Formats;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp judge CONFIG`: RLAIF's data step (<see cref="PreferencePairs"/>): K answers per prompt sampled from the policy, ranked
/// by an AI judge (a model in process, or any OpenAI-compatible endpoint), the best and worst written as DPO preference pairs.
/// </summary>
public static class JudgeCommand
{
    public static Command Create()
    {
        var configFile = new Argument<string>("config") { Description = "A YAML or JSON config (sections policy, data, generation, judge, output)" };
        var command = new Command("judge", "Sample answers from a policy, rank them with an AI judge, and write preference pairs for DPO (RLAIF).") { configFile };
        command.SetAction(r =>
        {
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try { Run(r.GetValue(configFile)!, Console.Out, cts.Token); }
            catch (OperationCanceledException) when (cts.IsCancellationRequested)
            {
                throw new PeftSharpException("interrupted: no pairs were written; the judge's answers so far are in its cache, so a rerun pays only for the rest.");
            }
            finally { Console.CancelKeyPress -= onCancel; }
        });
        return command;
    }

    public static PreferencePairsResult Run(string configPath, TextWriter output, CancellationToken cancellation = default)
    {
        var config = PreferencePairsConfig.Load(configPath);
        var result = PreferencePairs.Run(config, () =>
        {
            var model = ModelLoading.LoaderFor(config.Dtype)(ModelFolder.Resolve(config.PolicyModel));
            return config.PolicyAdapter != null ? ModelLoading.ApplyAdapter(model, config.PolicyAdapter) : model;
        }, output, cancellation);
        var c = result.Counts;
        output.WriteLine($"{result.Pairs} pairs written to {result.OutputPath} from {result.Prompts} prompts ({result.Answers} answers); " +
            $"skipped: {result.Ties} tied, {result.Unparseable} unparseable, {result.Failed} failed{(result.Malformed > 0 ? $", {result.Malformed} malformed records" : "")}");
        output.WriteLine($"judge: {c.Calls} calls, {c.CacheHits} cache hits, {c.Retries} retries");
        return result;
    }
}
