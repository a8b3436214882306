using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Governance.Tests.Infrastructure;

/// <summary>Keeps every log entry written through it, for assertions on event ids, levels and messages.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly object _gate = new();
    private readonly List<(Func<LogEntry, bool> Condition, TaskCompletionSource Done)> _waiters = [];

    public ConcurrentQueue<LogEntry> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    /// <summary>Completes once an entry that satisfies <paramref name="condition"/> has been written (already written ones included).</summary>
    public Task WaitForAsync(Func<LogEntry, bool> condition)
    {
        lock (_gate)
        {
            if (Entries.Any(condition))
            {
                return Task.CompletedTask;
            }

            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((condition, done));
            return done.Task;
        }
    }

    public void Dispose()
    {
    }

    private void Add(LogEntry entry)
    {
        lock (_gate)
        {
            Entries.Enqueue(entry);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].Condition(entry))
                {
                    _waiters[i].Done.TrySetResult();
                    _waiters.RemoveAt(i);
                }
            }
        }
    }

    private sealed class Logger(CapturingLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            provider.Add(new LogEntry(category, logLevel, eventId, formatter(state, exception)));
    }
}

public sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message);
