using System.CommandLine;
using FastAttn.Cli;
using FastAttn.Kernels;

var root = new RootCommand("FastAttn: allocation-free CPU self-attention and transformer encoders.");

var seconds = new Option<double>("--seconds") { Description = "Measuring time per shape, in seconds.", DefaultValueFactory = _ => 1.0 };
var bench = new Command("bench", "Quick, dependency-free FastAttn benchmark: µs, GFLOP/s and percent of the measured FMA peak.") { seconds };
bench.SetAction(r => QuickBench.Run(r.GetValue(seconds), Console.Out));
root.Subcommands.Add(bench);

var info = new Command("info", "Print the CPU features and kernel path in use.");
info.SetAction(_ => { Console.WriteLine(Isa.Describe()); return 0; });
root.Subcommands.Add(info);

return root.Parse(args).Invoke();
