using PeftSharp.Bench;

return BenchCatalog.Run(args);
