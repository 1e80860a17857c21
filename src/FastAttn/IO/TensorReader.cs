namespace FastAttn.IO;

/// <summary>
/// Reads a model's tensors by name with composable prefixes, like candle's <c>VarBuilder</c>: a loader asks
/// <c>vb.Pp("attention").Pp("self").Get("query.weight", d, d)</c>, so each name is written once, beside the block that owns
/// it. <see cref="Load{T}"/> runs the loader twice: first checking (every missing, mis-shaped and — when asked — unexpected
/// tensor is collected, nothing is read, the loader returns before building anything), then, if nothing was wrong, reading.
/// So one <see cref="InvalidDataException"/> lists every problem of the file.
/// </summary>
public sealed class TensorReader
{
    private readonly ITensorSource _source;
    private readonly string _prefix;
    private readonly State _state;

    private sealed class State
    {
        public bool Checking;
        public readonly List<string> Missing = [], Misshaped = [], Other = [];
        public readonly HashSet<string> Used = new(StringComparer.Ordinal);
    }

    private TensorReader(ITensorSource source, string prefix, State state) { _source = source; _prefix = prefix; _state = state; }

    /// <summary>True during the checking pass: <see cref="Get"/> returns empty arrays; the loader must return before it builds anything.</summary>
    public bool Checking => _state.Checking;
    /// <summary>The prefix of this reader's names (with a trailing dot unless empty).</summary>
    public string Prefix => _prefix;
    /// <summary>The source.</summary>
    public ITensorSource Source => _source;

    /// <summary>A reader for the names under <c>{prefix}{name}.</c>.</summary>
    public TensorReader Pp(string name) => new(_source, _prefix + name + ".", _state);

    /// <summary>True when the source has tensor <c>{prefix}{name}</c> (marks it as expected).</summary>
    public bool Has(string name)
    {
        bool has = _source.TryGetShape(_prefix + name, out _);
        if (has) _state.Used.Add(_prefix + name);
        return has;
    }

    /// <summary>The shape of <c>{prefix}{name}</c>, or null when absent (does not mark it as expected).</summary>
    public long[]? Shape(string name) => _source.TryGetShape(_prefix + name, out var s) ? s : null;

    /// <summary>
    /// Tensor <c>{prefix}{name}</c>, which must exist with <paramref name="shape"/> (−1 in a dimension = any). During the
    /// checking pass a problem is recorded and an empty array returned.
    /// </summary>
    public float[] Get(string name, params long[] shape) => Read(name, shape, optional: false) ?? [];

    /// <summary>As <see cref="Get"/>, but a missing tensor is no problem: null.</summary>
    public float[]? Maybe(string name, params long[] shape) => Read(name, shape, optional: true);

    /// <summary>Marks <c>{prefix}{name}</c> as known but unused (e.g. a buffer such as <c>position_ids</c>), so it is not "unexpected".</summary>
    public void Ignore(string name) => _state.Used.Add(_prefix + name);

    /// <summary>Records a problem that is not about one tensor's presence or shape (e.g. a width that does not divide).</summary>
    public void Problem(string message) { if (_state.Checking) _state.Other.Add(message); }

    private float[]? Read(string name, long[] shape, bool optional)
    {
        string full = _prefix + name;
        _state.Used.Add(full);
        if (!_source.TryGetShape(full, out var got))
        {
            if (!optional) _state.Missing.Add(full);
            return _state.Checking || optional ? null : throw new InvalidOperationException($"tensor '{full}' vanished between the passes");
        }
        bool ok = got.Length == shape.Length;
        for (int i = 0; ok && i < shape.Length; i++) ok = shape[i] < 0 || got[i] == shape[i];
        if (!ok) _state.Misshaped.Add($"{full} is [{string.Join(", ", got)}], expected [{string.Join(", ", shape.Select(x => x < 0 ? "?" : x.ToString()))}]");
        if (_state.Checking) return [];
        long n = 1;
        foreach (long d in got) n *= d;
        if (n > Array.MaxLength) throw new InvalidDataException($"'{_source.Name}': tensor '{full}' has {n} elements, more than one array can hold.");
        var data = new float[n];
        _source.ReadFloat32(full, data);
        return data;
    }

    /// <summary>
    /// Runs <paramref name="build"/> in the checking pass and then, when nothing is wrong, in the reading pass.
    /// </summary>
    /// <param name="source">The tensors.</param>
    /// <param name="prefix">Names start with this (a trailing dot is added when missing).</param>
    /// <param name="what">What is being loaded, for the message ("the model", "nn.Linear").</param>
    /// <param name="build">The loader; returns null (or anything) when <see cref="Checking"/>.</param>
    /// <param name="rejectUnexpected">Report tensors under the prefix the loader never asked for.</param>
    /// <exception cref="InvalidDataException">Every missing, mis-shaped or unexpected tensor and every other problem, in one message.</exception>
    public static T Load<T>(ITensorSource source, string prefix, string what, Func<TensorReader, T?> build, bool rejectUnexpected = true) where T : class
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(prefix);
        prefix = prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";
        var check = new State { Checking = true };
        build(new TensorReader(source, prefix, check));
        var msg = new List<string>();
        if (check.Missing.Count > 0) msg.Add("missing: " + string.Join(", ", check.Missing));
        if (check.Misshaped.Count > 0) msg.Add("mis-shaped: " + string.Join("; ", check.Misshaped));
        if (rejectUnexpected)
        {
            var extra = source.TensorNames.Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && !check.Used.Contains(n)).ToList();
            if (extra.Count > 0) msg.Add("unexpected: " + string.Join(", ", extra));
        }
        msg.AddRange(check.Other);
        if (msg.Count > 0)
            throw new InvalidDataException($"'{source.Name}' does not match {what} (prefix '{prefix}'): {string.Join(" | ", msg)}.");
        return build(new TensorReader(source, prefix, new State())) ?? throw new InvalidOperationException("the loader built nothing");
    }
}
