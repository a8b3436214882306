using Governance.Pipeline;
using Governance.Tests.Resilience;

namespace Governance.Tests.Pipeline;

/// <summary>
/// The in-flight count of an endpoint: per-core stripes until a picker reads it, one counter from then on, exact
/// whichever way each start and end was counted.
/// </summary>
public sealed class EndpointStateTests
{
    [Fact]
    public void ActiveRequests_AttemptsStartedBeforeAPickerReadsIt_StayCountedUntilTheyEnd()
    {
        var state = NewState();
        Start(state, 5);

        // The first read moves counting to the single counter; the 5 started before still count, and end there.
        Assert.Equal(5, state.ActiveRequests);
        End(state, 3);
        Assert.Equal(2, state.ActiveRequests);
        Start(state, 2);
        Assert.Equal(4, state.ActiveRequests);
        End(state, 4);
        Assert.Equal(0, state.ActiveRequests);
    }

    [Fact]
    public void ActiveRequests_FirstReadWhileOtherThreadsStartAndEndAttempts_CountsExactly()
    {
        const int Writers = 3;
        const int Pairs = 2_000;
        const int LeftInFlight = 5;

        // The switch races starts and ends at a different point of each run.
        for (var run = 0; run < 100; run++)
        {
            var state = NewState();
            var progress = 0;
            var switchAfter = run * Pairs / 50;
            Concurrently.Run(Writers + 1, thread =>
            {
                if (thread == Writers)
                {
                    var spins = 0;
                    while (Volatile.Read(ref progress) < switchAfter && ++spins < 100_000_000)
                    {
                    }

                    Assert.InRange(state.ActiveRequests, 0, Writers * LeftInFlight);
                    return;
                }

                for (var i = 0; i < Pairs; i++)
                {
                    state.OnRequestStarted();
                    state.OnRequestEnded();
                    Interlocked.Increment(ref progress);
                }

                Start(state, LeftInFlight);
            });

            Assert.Equal(Writers * LeftInFlight, state.ActiveRequests);
            End(state, Writers * LeftInFlight);
            Assert.Equal(0, state.ActiveRequests);
        }
    }

    private static EndpointState NewState() => new(new ServiceEndpoint(new Uri("http://127.0.0.1:5001")));

    private static void Start(EndpointState state, int count)
    {
        for (var i = 0; i < count; i++)
        {
            state.OnRequestStarted();
        }
    }

    private static void End(EndpointState state, int count)
    {
        for (var i = 0; i < count; i++)
        {
            state.OnRequestEnded();
        }
    }
}
