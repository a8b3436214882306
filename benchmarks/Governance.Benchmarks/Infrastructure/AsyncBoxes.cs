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
            var boxDefinition = Array.Find(
                builder.GetGenericTypeDefinition().GetNestedTypes(BindingFlags.NonPublic),
                static t => t.Name is "AsyncStateMachineBox`1" or "StateMachineBox`1")!;
            var box = boxDefinition.MakeGenericType([.. builder.GetGenericArguments(), stateMachine]);
            var pooled = builder.Name.StartsWith("Pooling", StringComparison.Ordinal);
            var method = stateMachine.Name[1..stateMachine.Name.IndexOf('>', StringComparison.Ordinal)];
            Console.WriteLine($"{method}: {builder.Name[..builder.Name.IndexOf('`', StringComparison.Ordinal)]}, state machine {Size(stateMachine)} B, box {Allocated(box)} B{(pooled ? " (pooled)" : " (allocated by every call that awaits)")}");
            foreach (var field in fields)
            {
                Console.WriteLine($"    {Size(field.FieldType),3} B  {field.FieldType.Name} {field.Name}");
            }
        }

        // What SendAsync returns for a governed call that really awaits: ValueTask.AsTask() over the pooled state machine.
        var asTask = typeof(ValueTask<HttpResponseMessage>).Assembly.GetType("System.Threading.Tasks.ValueTask`1+ValueTaskSourceAsTask")!
            .MakeGenericType(typeof(HttpResponseMessage));
        Console.WriteLine($"ValueTask<HttpResponseMessage>.AsTask() of a pending pooled method: {asTask.Name}, {Allocated(asTask)} B (allocated by every call that awaits)");
        return 0;
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
