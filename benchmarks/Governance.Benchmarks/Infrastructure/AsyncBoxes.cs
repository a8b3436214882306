using System.Reflection;
using System.Runtime.CompilerServices;
using Governance.Pipeline;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// <c>async-boxes</c>: for every async method of <see cref="GovernanceHandler"/>, prints the fields the compiler hoisted
/// into its state machine (with their sizes) and the bytes of the box the runtime allocates when the method really
/// awaits (on a socket; in memory the inner handler completes synchronously and nothing is boxed). Task-returning
/// methods allocate that box on every such call; methods built with <see cref="PoolingAsyncValueTaskMethodBuilder{TResult}"/>
/// take theirs from a small per-thread and per-core cache. The box size is measured, not computed: the allocated bytes
/// of one <see cref="RuntimeHelpers.GetUninitializedObject(Type)"/> of the box type.
/// </summary>
internal static class AsyncBoxes
{
    public const string Command = "async-boxes";

    private static readonly MethodInfo SizeOf = typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf), Type.EmptyTypes)!;

    public static int Run()
    {
        foreach (var stateMachine in typeof(GovernanceHandler).GetNestedTypes(BindingFlags.NonPublic))
        {
            if (!typeof(IAsyncStateMachine).IsAssignableFrom(stateMachine))
            {
                continue;
            }

            if (stateMachine.ContainsGenericParameters)
            {
                // A generic method's box depends on its type arguments (ExecuteWithinTotalAsync<TState>: only the retry
                // and hedging phases, after a first attempt failed).
                Console.WriteLine($"{stateMachine.Name}: generic, box size depends on its type arguments (not measured)");
                continue;
            }

            var fields = stateMachine.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            var builder = Array.Find(fields, static f => f.Name == "<>t__builder")!.FieldType;
            var box = Box(builder, stateMachine);
            var pooled = builder.Name.StartsWith("Pooling", StringComparison.Ordinal);
            var method = stateMachine.Name[1..stateMachine.Name.IndexOf('>', StringComparison.Ordinal)];
            Console.WriteLine($"{method}: {(builder.IsGenericType ? builder.Name[..builder.Name.IndexOf('`', StringComparison.Ordinal)] : builder.Name)}, state machine {Size(stateMachine)} B, box {Allocated(box)} B{(pooled ? " (pooled)" : " (allocated by every call that awaits)")}");
            foreach (var field in fields)
            {
                Console.WriteLine($"    {Size(field.FieldType),3} B  {field.FieldType.Name} {field.Name}");
            }
        }

        // What SendAsync returns for an observed or hedged governed call that really awaits: ValueTask.AsTask() over the
        // pooled state machine; for the others (GovernanceHandler.Inline.cs), a task completion source and its task.
        var asTask = typeof(ValueTask<HttpResponseMessage>).Assembly.GetType("System.Threading.Tasks.ValueTask`1+ValueTaskSourceAsTask")!
            .MakeGenericType(typeof(HttpResponseMessage));
        Console.WriteLine($"ValueTask<HttpResponseMessage>.AsTask() of a pending pooled method (observed or hedged calls): {asTask.Name}, {Allocated(asTask)} B (allocated by every such call that awaits)");
        var inline = typeof(GovernanceHandler).GetNestedType("InlineAttempt", BindingFlags.NonPublic)!;
        Console.WriteLine($"Inline calls (nothing listens, no hedging): TaskCompletionSource<HttpResponseMessage> {Allocated(typeof(TaskCompletionSource<HttpResponseMessage>))} B + Task<HttpResponseMessage> {Allocated(typeof(Task<HttpResponseMessage>))} B (allocated by every call that awaits); {inline.Name} {Allocated(inline)} B (pooled)");
        return 0;
    }

    /// <summary>The box the runtime allocates for <paramref name="stateMachine"/> built by <paramref name="builder"/>.</summary>
    private static Type Box(Type builder, Type stateMachine)
    {
        // A Task method's builder (AsyncTaskMethodBuilder) and a non-pooled ValueTask method's (AsyncValueTaskMethodBuilder<T>)
        // box in AsyncTaskMethodBuilder<T>'s box (T = VoidTaskResult for Task); a pooled one in its own StateMachineBox.
        var result = builder.IsGenericType ? builder.GetGenericArguments()[0] : typeof(Task).Assembly.GetType("System.Threading.Tasks.VoidTaskResult")!;
        var owner = builder.IsGenericType && builder.Name.StartsWith("Pooling", StringComparison.Ordinal)
            ? builder.GetGenericTypeDefinition()
            : typeof(AsyncTaskMethodBuilder<>);
        var definition = Array.Find(owner.GetNestedTypes(BindingFlags.NonPublic), static t => t.Name is "AsyncStateMachineBox`1" or "StateMachineBox`1")!;
        return definition.MakeGenericType(result, stateMachine);
    }

    private static int Size(Type type) => type.IsValueType ? (int)SizeOf.MakeGenericMethod(type).Invoke(null, null)! : IntPtr.Size;

    private static long Allocated(Type type)
    {
        RuntimeHelpers.GetUninitializedObject(type);
        var before = GC.GetAllocatedBytesForCurrentThread();
        RuntimeHelpers.GetUninitializedObject(type);
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}
