// One test class at a time: libtorch is called through TorchSharp, whose implicit Scalar conversions leave objects that
// nothing keeps alive during the native call; with classes in parallel, another class's allocations start collections at
// any moment, and one freed a Scalar under TaggerFidelityTests' forward pass (Scalar::toFloat on freed memory, 1 run in 2
// on 2026-12-03 after the ONNX rewrite tests were added). Run alone, each class only collects between its own calls.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
