using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace FastAttn.Service;

/// <summary>The service's instruments (System.Diagnostics.Metrics): exported at /metrics and readable with dotnet-counters.</summary>
public sealed class ServiceMetrics : IDisposable
{
    public const string MeterName = "FastAttn.Service";
    private readonly Meter _meter = new(MeterName, "0.2.0");
    public Histogram<double> RequestDuration { get; }
    public Histogram<int> BatchTexts { get; }
    public Histogram<int> BatchRequests { get; }
    public Counter<long> Rejected { get; }
    public Func<int>? QueueLength { get; set; }

    public ServiceMetrics()
    {
        RequestDuration = _meter.CreateHistogram<double>("fastattn.request.duration", "ms", "Time from request to response, per endpoint.");
        BatchTexts = _meter.CreateHistogram<int>("fastattn.batch.texts", "{text}", "Texts in each packed batch.");
        BatchRequests = _meter.CreateHistogram<int>("fastattn.batch.requests", "{request}", "Requests coalesced into each batch.");
        Rejected = _meter.CreateCounter<long>("fastattn.requests.rejected", "{request}", "Requests answered 400 or 413.");
        _meter.CreateObservableGauge("fastattn.queue.texts", () => QueueLength?.Invoke() ?? 0, "{text}", "Texts waiting for a batch.");
        _meter.CreateObservableGauge("fastattn.process.rss", () => Process.GetCurrentProcess().WorkingSet64, "By", "Resident set size.");
        _meter.CreateObservableGauge("fastattn.gc.gen2", () => GC.CollectionCount(2), "{collection}", "Gen-2 collections since start.");
    }

    public void Dispose() => _meter.Dispose();
}
