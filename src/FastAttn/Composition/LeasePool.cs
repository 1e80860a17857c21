namespace FastAttn.Composition;

/// <summary>
/// A bounded pool of single-caller objects (sessions, encoders) that any number of threads may share: a caller leases
/// one for a call and returns it by disposing the lease. Objects are created on demand up to <see cref="Capacity"/> and
/// reused; when all are leased, callers wait (synchronously or asynchronously, cancellable) for one to come back.
/// Thread-safe. <see cref="Dispose"/> disposes idle objects at once and leased ones as their leases end (it does not
/// wait for them); callers then waiting for an object, and later ones, get <see cref="ObjectDisposedException"/>.
/// </summary>
/// <typeparam name="T">The pooled type; disposed with the pool.</typeparam>
public sealed class LeasePool<T> : IDisposable where T : class, IDisposable
{
    private readonly Func<T> _create;
    private readonly SemaphoreSlim _slots;
    private readonly Stack<T> _idle = new();
    private readonly List<T> _all = new();
    private readonly object _gate = new();
    private bool _disposed;

    /// <summary>Most objects alive at once.</summary>
    public int Capacity { get; }
    /// <summary>Objects created so far (≤ <see cref="Capacity"/>).</summary>
    public int Created { get { lock (_gate) return _all.Count; } }
    /// <summary>Objects that could be leased right now without waiting (idle, or not yet created).</summary>
    public int Available => _slots.CurrentCount;

    /// <summary>A pool creating objects with <paramref name="create"/>, at most <paramref name="capacity"/> of them.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="create"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is below 1.</exception>
    public LeasePool(Func<T> create, int capacity)
    {
        _create = create ?? throw new ArgumentNullException(nameof(create));
        ThrowHelper.Positive(capacity, nameof(capacity));
        Capacity = capacity;
        _slots = new SemaphoreSlim(capacity, capacity);
    }

    /// <summary>
    /// As above, starting with <paramref name="initial"/> (already created, e.g. warmed up) idle in the pool: it is leased
    /// first, counts towards <see cref="Capacity"/>, and is disposed with the pool even if never leased.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="create"/> or <paramref name="initial"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is below 1.</exception>
    public LeasePool(Func<T> create, int capacity, T initial) : this(create, capacity)
    {
        ArgumentNullException.ThrowIfNull(initial);
        _idle.Push(initial);
        _all.Add(initial);
    }

    /// <summary>Leases an object, waiting while all are in use.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled while waiting.</exception>
    /// <exception cref="InvalidOperationException">Called by this pool's own factory (it would wait for itself), or the factory returned null.</exception>
    public Lease<T> Rent(CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ThrowIfInFactory();
        _slots.Wait(cancellation);
        return Take();
    }

    /// <summary>Leases an object, waiting asynchronously while all are in use.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled while waiting.</exception>
    /// <exception cref="InvalidOperationException">Called by this pool's own factory (it would wait for itself), or the factory returned null.</exception>
    public async ValueTask<Lease<T>> RentAsync(CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ThrowIfInFactory(); // before the first await: still on the calling thread
        await _slots.WaitAsync(cancellation).ConfigureAwait(false);
        return Take();
    }

    /// <summary>Leases an object if one is free now (idle or not yet created); false, and no lease, when all are in use.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    internal bool TryRent(out Lease<T> lease)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ThrowIfInFactory();
        lease = default;
        if (!_slots.Wait(0)) return false;
        lease = Take();
        return true;
    }

    private Lease<T> Take()
    {
        T? item = null;
        lock (_gate)
        {
            if (_disposed) { _slots.Release(); ThrowHelper.Disposed(nameof(LeasePool<T>)); }
            if (_idle.Count > 0) item = _idle.Pop();
        }
        if (item == null)
        {
            var outer = _creating;
            _creating = this;
            try { item = _create() ?? throw new InvalidOperationException("The LeasePool's factory returned null."); }
            catch { _slots.Release(); throw; }
            finally { _creating = outer; }
            lock (_gate) _all.Add(item);
        }
        return new Lease<T>(this, item);
    }

    /// <summary>The pool whose factory this thread is running (null when none).</summary>
    [ThreadStatic] private static LeasePool<T>? _creating;

    private void ThrowIfInFactory()
    {
        if (ReferenceEquals(_creating, this))
            throw new InvalidOperationException("A LeasePool's factory cannot lease from the same pool: the object it is creating holds a slot, so it would wait for itself.");
    }

    internal void Return(T item)
    {
        bool dispose;
        lock (_gate)
        {
            dispose = _disposed;
            if (!dispose) _idle.Push(item);
        }
        if (dispose) item.Dispose();
        // the slot is freed either way: a caller waiting for it when the pool was disposed wakes, finds the pool disposed
        // and passes the slot on (see Take), so every waiter ends in ObjectDisposedException instead of waiting for ever
        _slots.Release();
    }

    /// <summary>Disposes every pooled object: idle ones now, leased ones as their leases end.</summary>
    public void Dispose()
    {
        List<T> idle;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            idle = [.. _idle];
            _idle.Clear();
        }
        foreach (var i in idle) i.Dispose();
    }
}

/// <summary>A leased object; dispose the lease (once) to give it back.</summary>
public struct Lease<T> : IDisposable where T : class, IDisposable
{
    private LeasePool<T>? _pool;
    /// <summary>The leased object: use it until the lease is disposed, on one thread at a time.</summary>
    public T Value { get; }

    internal Lease(LeasePool<T> pool, T value) { _pool = pool; Value = value; }

    /// <summary>Returns the object to the pool.</summary>
    public void Dispose()
    {
        var p = _pool;
        _pool = null;
        p?.Return(Value);
    }
}
