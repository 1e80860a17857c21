namespace FastAttn.Threading;

/// <summary>A unit of parallel work: <see cref="Execute"/> runs one item on one worker.</summary>
public interface IParallelWork
{
    /// <summary>Runs one item. Worker 0 is the thread that called <see cref="WorkerPool.Run(IParallelWork, int)"/>; workers 1.. are the pool's threads.</summary>
    void Execute(int item, int worker);
}
