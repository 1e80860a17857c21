using FastAttn.Fuzz;
using SharpFuzz;

// fastattn-fuzz TARGET            — the AFL++ harness (run by fuzz/run.sh)
// fastattn-fuzz TARGET FILE...    — runs files through the target once each (reproduce a finding)
if (args is ["seed-onnx", var seedDir]) { Seeds.Write(seedDir); return 0; }
if (args is ["seed-unigram", var corpusDir]) { Seeds.WriteUnigram(corpusDir); return 0; }
if (args.Length == 0 || !Targets.Names.Contains(args[0]))
{
    Console.Error.WriteLine($"usage: FastAttn.Fuzz TARGET [FILE...]; targets: {string.Join(", ", Targets.Names)}");
    return 2;
}
string target = args[0];
if (args.Length > 1)
{
    foreach (var f in args.Skip(1)) { Targets.Run(target, File.ReadAllBytes(f)); Console.WriteLine($"{f}: ok"); }
    return 0;
}
Fuzzer.OutOfProcess.Run(stream =>
{
    var ms = new MemoryStream();
    stream.CopyTo(ms);
    Targets.Run(target, ms.GetBuffer().AsSpan(0, (int)ms.Length));
});
return 0;
