using System.Runtime.CompilerServices;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// A handler that does only what every governed call does to the request: sends it to one fixed physical URI and
/// restores the caller's URI afterwards, in one async layer, either a plain <c>async Task</c> method
/// (<c>RewriteLayer</c>) or, as governance's handler, a pooled <see cref="ValueTask{TResult}"/> method returned through
/// <see cref="ValueTask{TResult}.AsTask"/> (<c>PooledRewriteLayer</c>). Control rows of <c>loopback-rounds</c>: what a
/// governed call costs before any of governance's own work.
/// </summary>
internal sealed class RewritingHandler(Uri physical, bool pooled) : DelegatingHandler
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
        pooled ? SendPooledAsync(request, cancellationToken).AsTask() : SendPlainAsync(request, cancellationToken);

    private async Task<HttpResponseMessage> SendPlainAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        request.RequestUri = physical;
        try
        {
            return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            request.RequestUri = logical;
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<HttpResponseMessage> SendPooledAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        request.RequestUri = physical;
        try
        {
            return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            request.RequestUri = logical;
        }
    }
}

/// <summary>
/// <see cref="RewritingHandler"/> without an async method: a pooled state object registers one cached continuation on
/// the inner task and completes a <see cref="TaskCompletionSource{TResult}"/> (<c>CallbackRewriteLayer</c>): what a
/// governed call's async layer could cost with no state machine, no pooled builder and no <c>AsTask</c> hop.
/// </summary>
internal sealed class CallbackRewritingHandler(Uri physical) : DelegatingHandler
{
    [ThreadStatic]
    private static Pending? t_cached;

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var logical = request.RequestUri;
        request.RequestUri = physical;
        Task<HttpResponseMessage> inner;
        try
        {
            inner = base.SendAsync(request, cancellationToken);
        }
        catch (Exception ex)
        {
            inner = Task.FromException<HttpResponseMessage>(ex);
        }

        var pending = t_cached ?? new Pending();
        t_cached = null;
        pending.Request = request;
        pending.Logical = logical;
        pending.Inner = inner;
        var promise = pending.Promise = new TaskCompletionSource<HttpResponseMessage>();
        if (inner.IsCompleted)
        {
            pending.Complete();
        }
        else
        {
            inner.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(pending.OnCompleted);
        }

        return promise.Task;
    }

    private sealed class Pending
    {
        public Pending() => OnCompleted = Complete;

        public Action OnCompleted { get; }

        public HttpRequestMessage? Request { get; set; }

        public Uri? Logical { get; set; }

        public Task<HttpResponseMessage>? Inner { get; set; }

        public TaskCompletionSource<HttpResponseMessage>? Promise { get; set; }

        public void Complete()
        {
            var (request, logical, inner, promise) = (Request!, Logical, Inner!, Promise!);
            (Request, Logical, Inner, Promise) = (null, null, null, null);
            t_cached ??= this;
            request.RequestUri = logical;
            if (inner.IsCompletedSuccessfully)
            {
                promise.TrySetResult(inner.Result);
            }
            else if (inner.IsCanceled)
            {
                promise.TrySetCanceled();
            }
            else
            {
                promise.TrySetException(inner.Exception!.InnerExceptions);
            }
        }
    }
}
