namespace Governance.Discovery;

/// <summary>
/// A built-in watcher that can say why discovery has no answer yet, so that a call that waited for the first answer in
/// vain fails with the cause (a refused token, an unreachable agent), not only with the wait.
/// </summary>
internal interface IReportsDiscoveryError
{
    /// <summary>Gets why the last attempt to discover the service failed, or <see langword="null"/> when it did not.</summary>
    string? LastError { get; }
}
