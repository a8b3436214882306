namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// Runs two actions at the same time: the second on a dedicated thread that waits for a signal, the first on the
/// caller's thread, and returns when both are done. No allocation per run.
/// </summary>
internal sealed class TwoThreads : IDisposable
{
    private readonly Action _first;
    private readonly Action _second;
    private readonly ManualResetEventSlim _go = new(false, spinCount: 1000);
    private readonly ManualResetEventSlim _done = new(false, spinCount: 1000);
    private readonly Thread _thread;
    private volatile bool _stopping;

    public TwoThreads(Action first, Action second)
    {
        _first = first;
        _second = second;
        _thread = new Thread(Loop) { IsBackground = true, Name = "second picker" };
        _thread.Start();
    }

    public void Run()
    {
        _done.Reset();
        _go.Set();
        _first();
        _done.Wait();
    }

    public void Dispose()
    {
        _stopping = true;
        _go.Set();
        _thread.Join();
        _go.Dispose();
        _done.Dispose();
    }

    private void Loop()
    {
        while (true)
        {
            _go.Wait();
            _go.Reset();
            if (_stopping)
            {
                return;
            }

            _second();
            _done.Set();
        }
    }
}
