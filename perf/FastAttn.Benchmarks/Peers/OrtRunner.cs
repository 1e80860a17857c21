using Microsoft.ML.OnnxRuntime;

namespace FastAttn.Benchmarks.Peers;

/// <summary>An ONNX Runtime session over an in-process model with its inputs and output pre-bound (OrtIoBinding).</summary>
public sealed class OrtRunner : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _run = new();
    private readonly OrtIoBinding _binding;
    private readonly List<OrtValue> _values = new();

    public OrtRunner(byte[] model, int threads, (string Name, float[] Data, long[] Shape)[] inputs, (string Name, float[] Data, long[] Shape) output)
    {
        var so = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        _session = new InferenceSession(model, so);
        _binding = _session.CreateIoBinding();
        foreach (var (name, data, shape) in inputs)
        {
            var v = OrtValue.CreateTensorValueFromMemory(data, shape);
            _values.Add(v);
            _binding.BindInput(name, v);
        }
        var o = OrtValue.CreateTensorValueFromMemory(output.Data, output.Shape);
        _values.Add(o);
        _binding.BindOutput(output.Name, o);
    }

    public void Run() => _session.RunWithBinding(_run, _binding);

    public void Dispose()
    {
        _binding.Dispose();
        foreach (var v in _values) v.Dispose();
        _run.Dispose();
        _session.Dispose();
    }
}
