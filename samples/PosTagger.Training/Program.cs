using System.Diagnostics;
using System.Text.Json;
using FastAttn.IO;
using FastAttn.Tagging;
using PosTagTraining;
using TorchSharp;
using static TorchSharp.torch;

// Trains the FC-only tagger and the self-attention tagger on UD English-EWT with TorchSharp, selects each on dev,
// reports test accuracy, and exports both to safetensors (vocabularies, tags and architecture in __metadata__).
//   dotnet run -c Release --project samples/PosTagger.Training -- [--data DIR] [--out DIR] [--seed N] [--only fc|attention]
// The defaults are the committed models' settings: d = 64, 4 heads, 2 post-norm layers (ff 256) whose attention has a
// per-head distance bias −slope·|i − j| with slopes 1, 0.5, 0.125, 0 (the last head is global), sinusoidal positions,
// AdamW lr 3e-3 (300 warm-up steps, linear decay), batches of about 500 tokens, dropout 0.1, word dropout 0.05, 16 epochs;
// FC model: the same features, two ReLU layers of 256, dropout 0.3, 20 epochs. Seed 1.
string? dataDir = Arg("--data");
string outDir = Arg("--out") ?? "models/pos";
int seed = int.Parse(Arg("--seed") ?? "1");
string? only = Arg("--only");
int attnEpochs = int.Parse(Arg("--attention-epochs") ?? "16"), fcEpochs = int.Parse(Arg("--fc-epochs") ?? "20");
int dModel = int.Parse(Arg("--d") ?? "64"), layers = int.Parse(Arg("--layers") ?? "2"), heads = int.Parse(Arg("--heads") ?? "4");
double lrMax = double.Parse(Arg("--lr") ?? "0.003", System.Globalization.CultureInfo.InvariantCulture);
double dropAttn = double.Parse(Arg("--dropout") ?? "0.1", System.Globalization.CultureInfo.InvariantCulture);
double embStd = double.Parse(Arg("--emb-std") ?? "0.3", System.Globalization.CultureInfo.InvariantCulture);
double budgetMinutes = double.Parse(Arg("--minutes") ?? "14", System.Globalization.CultureInfo.InvariantCulture);

dataDir ??= FindTreebank() ?? throw new DirectoryNotFoundException("UD English-EWT not found; pass --data DIR (the folder holding en_ewt-ud-*.conllu).");
var total = Stopwatch.StartNew();
torch.set_num_threads(int.Parse(Arg("--threads") ?? Environment.ProcessorCount.ToString()));
double emaDecay = double.Parse(Arg("--ema") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
double labelSmoothing = double.Parse(Arg("--label-smoothing") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
int batchTokens = int.Parse(Arg("--batch-tokens") ?? "500");
bool learnedPositions = args.Contains("--learned-positions");
double wordDropout = double.Parse(Arg("--word-dropout") ?? "0.05", System.Globalization.CultureInfo.InvariantCulture);
var train = ConllU.Read(Path.Combine(dataDir, "en_ewt-ud-train.conllu"));
var dev = ConllU.Read(Path.Combine(dataDir, "en_ewt-ud-dev.conllu"));
var test = ConllU.Read(Path.Combine(dataDir, "en_ewt-ud-test.conllu"));
Console.WriteLine($"EWT: train {train.Count} sentences / {train.Sum(s => s.Words.Length)} words, dev {dev.Count} / {dev.Sum(s => s.Words.Length)}, test {test.Count} / {test.Sum(s => s.Words.Length)}");
int minAffix = int.Parse(Arg("--min-affix") ?? "5");
int minWord = int.Parse(Arg("--min-word") ?? "2");
double singletonDropout = double.Parse(Arg("--singleton-dropout") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
var vocab = FeatureVocabulary.Build(train.SelectMany(s => s.Words), minWordCount: minWord, minAffixCount: minAffix);
// the word list is sorted by training frequency: the first id of a word seen once
var wordCounts = new Dictionary<string, int>();
foreach (var w in train.SelectMany(s => s.Words))
{
    var ids1 = new int[FeatureVocabulary.Count];
    vocab.Extract(w, ids1);
    string key = vocab.Lists[0][ids1[0]];
    wordCounts[key] = wordCounts.GetValueOrDefault(key) + 1;
}
long singletonStart = Enumerable.Range(1, vocab.Size(0) - 1).FirstOrDefault(i => wordCounts.GetValueOrDefault(vocab.Lists[0][i]) <= 1, vocab.Size(0));
Console.WriteLine("vocabularies: " + string.Join(", ", Enumerable.Range(0, FeatureVocabulary.Count).Select(f => $"{FeatureVocabulary.Names[f]} {vocab.Size(f)}")));
Directory.CreateDirectory(outDir);

float[]? slopesArg = (Arg("--slopes") ?? "1,0.5,0.125,0") is "none" ? null : (Arg("--slopes") ?? "1,0.5,0.125,0").Split(',').Select(v => float.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
const int MaxPositions = 512;
var positions = Sinusoid(MaxPositions, dModel);
var runs = new List<(TaggerConfig, int)>();
if (only is null or "fc") runs.Add((new TaggerConfig("fc", dModel, 0, 0, 0, 256, 2, 0, 1e-5f), fcEpochs));
if (only is null or "attention") runs.Add((new TaggerConfig("attention", dModel, heads, layers, int.Parse(Arg("--ff") ?? (4 * dModel).ToString()), 0, 0, MaxPositions, 1e-5f, slopesArg), attnEpochs));
foreach (var (cfg, epochs) in runs)
{
    double share = cfg.Kind == "fc" ? 0.2 : 0.8;
    Train(cfg, epochs, budgetMinutes * 60 * share);
}
Console.WriteLine($"total {total.Elapsed.TotalMinutes:F1} min");
return 0;

void Train(TaggerConfig cfg, int epochs, double budgetSeconds)
{
    torch.random.manual_seed(seed);
    var rng = new Random(seed);
    var sw = Stopwatch.StartNew();
    using var net = new TaggerNet(cfg, vocab, cfg.Kind == "attention" ? positions : null, dropout: cfg.Kind == "attention" ? dropAttn : 0.3, embStd, learnedPositions) { WordDropout = (float)wordDropout, SingletonStart = singletonStart, SingletonDropout = (float)singletonDropout };
    var trainBatches = Batches(train, batchTokens, shuffle: true);
    var devBatches = Batches(dev, 4000, shuffle: false);
    var testBatches = Batches(test, 4000, shuffle: false);
    var opt = torch.optim.AdamW(net.parameters().Where(p => p.requires_grad), lr: lrMax, weight_decay: 0.01);
    long steps = (long)epochs * trainBatches.Count, step = 0, warm = 300;
    // exponential moving average of the weights: evaluated, selected and exported instead of the raw weights
    var trained = net.parameters().Where(p => p.requires_grad).ToArray();
    var ema = emaDecay > 0 ? trained.Select(p => p.detach().clone()).ToArray() : null;
    void Swap()
    {
        if (ema == null) return;
        using var _ = no_grad();
        for (int i = 0; i < trained.Length; i++) { var tmp = trained[i].detach().clone(); trained[i].copy_(ema[i]); ema[i].copy_(tmp); tmp.Dispose(); }
    }
    double bestDev = -1; int bestEpoch = 0;
    Dictionary<string, float[]> best = new();
    for (int epoch = 1; epoch <= epochs; epoch++)
    {
        net.train();
        var order = Enumerable.Range(0, trainBatches.Count).OrderBy(_ => rng.Next()).ToArray();
        double lossSum = 0;
        foreach (int b in order)
        {
            using var scope = NewDisposeScope();
            var (ids, pad, gold) = trainBatches[b];
            double lr = lrMax * Math.Min(1.0, (step + 1.0) / warm) * Math.Max(0.02, 1.0 - (double)step / steps);
            foreach (var g in opt.ParamGroups) g.LearningRate = lr;
            opt.zero_grad();
            var logits = net.call(ids, pad);
            var loss = nn.functional.cross_entropy(logits.reshape(-1, UPos.Tags.Length), gold.reshape(-1), ignore_index: -100, label_smoothing: labelSmoothing);
            loss.backward();
            nn.utils.clip_grad_norm_(net.parameters(), 5.0);
            opt.step();
            if (ema != null)
                using (no_grad())
                    for (int i = 0; i < trained.Length; i++) ema[i].mul_(emaDecay).add_(trained[i], alpha: 1 - emaDecay);
            lossSum += loss.item<float>();
            step++;
        }
        Swap();
        double devAcc = Accuracy(net, devBatches);
        bool improved = devAcc > bestDev;
        if (improved)
        {
            bestDev = devAcc; bestEpoch = epoch;
            best = net.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.cpu().contiguous().data<float>().ToArray());
        }
        Swap();
        Console.WriteLine($"[{cfg.Kind}] epoch {epoch,2}: loss {lossSum / trainBatches.Count:F4}  dev {devAcc:P2}{(improved ? " *" : "")}  {sw.Elapsed.TotalSeconds:F0} s");
        if (sw.Elapsed.TotalSeconds / epoch * (epoch + 1) > budgetSeconds) { Console.WriteLine($"[{cfg.Kind}] time budget reached after epoch {epoch}"); break; }
    }
    // restore the best-on-dev parameters, report test once, export
    // every tensor is stored in float16 (half the file): round them here, so that the accuracy reported below is
    // the exported model's
    foreach (var name in best.Keys.ToList())
        best[name] = best[name].Select(v => (float)(Half)v).ToArray();
    using (no_grad())
        foreach (var (name, p) in net.state_dict())
            p.copy_(tensor(best[name], p.shape));
    double testAcc = Accuracy(net, testBatches);
    double seconds = sw.Elapsed.TotalSeconds;
    Console.WriteLine($"[{cfg.Kind}] best dev {bestDev:P2} (epoch {bestEpoch}); test {testAcc:P2}; {seconds:F0} s");
    var tensors = new List<SafeTensorsWriter.Entry>();
    foreach (var (name, p) in net.state_dict())
        tensors.Add(new(name, best[name], p.shape, SafeTensorsDType.F16));
    var meta = new Dictionary<string, string>
    {
        ["fastattn.tagger"] = JsonSerializer.Serialize(cfg),
        ["fastattn.tags"] = JsonSerializer.Serialize(UPos.Tags),
        ["fastattn.vocab"] = vocab.ToJson(),
        ["corpus"] = "Universal Dependencies English-EWT (CC BY-SA 4.0)",
        ["dev_accuracy"] = bestDev.ToString("F5", System.Globalization.CultureInfo.InvariantCulture),
        ["test_accuracy"] = testAcc.ToString("F5", System.Globalization.CultureInfo.InvariantCulture),
        ["best_epoch"] = bestEpoch.ToString(),
        ["train_seconds"] = seconds.ToString("F0", System.Globalization.CultureInfo.InvariantCulture),
        ["seed"] = seed.ToString(),
        ["args"] = string.Join(' ', args),
        ["trainer"] = "samples/PosTagger.Training (TorchSharp-cpu 0.107.0)",
    };
    string path = Path.Combine(outDir, $"{cfg.Kind}.safetensors");
    SafeTensorsWriter.Write(path, tensors, meta);
    Console.WriteLine($"[{cfg.Kind}] wrote {path} ({new FileInfo(path).Length / 1024} KiB)");
}

double Accuracy(TaggerNet net, List<(Tensor Ids, Tensor Pad, Tensor Gold)> batches)
{
    net.eval();
    long right = 0, all = 0;
    using var _ = no_grad();
    foreach (var (ids, pad, gold) in batches)
    {
        using var scope = NewDisposeScope();
        var pred = net.call(ids, pad).argmax(-1);
        var valid = gold.ne(-100);
        right += pred.eq(gold).logical_and(valid).sum().item<long>();
        all += valid.sum().item<long>();
    }
    return (double)right / all;
}

// Sentences sorted by length, grouped into batches of about maxTokens padded tokens: ids [T, B, F], pad [B, T], gold [T, B].
List<(Tensor, Tensor, Tensor)> Batches(List<TaggedSentence> data, int maxTokens, bool shuffle)
{
    var featured = data.Select(s =>
    {
        var ids = new int[s.Words.Length * FeatureVocabulary.Count];
        for (int i = 0; i < s.Words.Length; i++) vocab.Extract(s.Words[i], ids.AsSpan(i * FeatureVocabulary.Count, FeatureVocabulary.Count));
        var gold = s.Tags.Select(t => Array.IndexOf(UPos.Tags, t)).ToArray();
        return (ids, gold);
    }).OrderBy(x => x.gold.Length).ToList();
    var result = new List<(Tensor, Tensor, Tensor)>();
    int start = 0;
    while (start < featured.Count)
    {
        int end = start, longest = 0;
        while (end < featured.Count && Math.Max(longest, featured[end].gold.Length) * (end - start + 1) <= maxTokens) { longest = Math.Max(longest, featured[end].gold.Length); end++; }
        if (end == start) { longest = featured[start].gold.Length; end = start + 1; }
        int B = end - start, T = longest, F = FeatureVocabulary.Count;
        var ids = new long[T * B * F];
        var pad = new bool[B * T];
        var gold = new long[T * B];
        Array.Fill(gold, -100);
        for (int b = 0; b < B; b++)
        {
            var (fi, g) = featured[start + b];
            for (int t = 0; t < T; t++)
            {
                if (t >= g.Length) { pad[b * T + t] = true; continue; }
                if (g[t] < 0) throw new InvalidDataException($"unknown UPOS tag in sentence {start + b}");
                gold[t * B + b] = g[t];
                for (int f = 0; f < F; f++) ids[(t * B + b) * F + f] = fi[t * F + f];
            }
        }
        result.Add((tensor(ids, [T, B, F]), tensor(pad, [B, T]), tensor(gold, [T, B])));
        start = end;
    }
    return result;
}

// FastAttn's own sinusoidal table (PositionalEncoding added to zeros), so training and serving share one formula
static float[] Sinusoid(int positions, int width)
{
    var table = new float[positions * width];
    FastAttn.Layers.PositionalEncoding.Sinusoidal(positions, width)
        .Forward(new float[positions * width], table, new FastAttn.Composition.Batch(positions), default);
    return table;
}

string? Arg(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static string? FindTreebank()
{
    for (var d = new DirectoryInfo(Directory.GetCurrentDirectory()); d != null; d = d.Parent)
    {
        foreach (var candidate in new[] { Path.Combine(d.FullName, "shared", "data", "ud-english-ewt"), Path.Combine(d.FullName, "data", "ud-english-ewt") })
            if (File.Exists(Path.Combine(candidate, "en_ewt-ud-train.conllu"))) return candidate;
    }
    return null;
}
