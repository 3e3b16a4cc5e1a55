using System.CommandLine;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;

var root = new RootCommand("PeftSharp: LoRA and QLoRA fine-tuning of causal language models in pure C#.");
foreach (var command in CommandCatalog.All())
    root.Subcommands.Add(command);
return CliRunner.Run(root, args);
