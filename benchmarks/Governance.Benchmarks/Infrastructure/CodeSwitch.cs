using System.Globalization;
using System.Reflection;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// <c>loopback-rounds --profile &lt;client&gt; --switch Namespace.Type.Field=0,1[,2...]</c>: compares code variants inside
/// one process. A scratch build of the library reads a static <see cref="int"/> field (added for the experiment, never
/// committed) to choose a variant; before each round this sets the field to the next value, in turn, and records the
/// round's CPU time per request and throughput. Separate builds in separate processes cannot be compared at this size
/// (two processes of one build read 6–9 % apart on this machine, benchmarks/README.md, session 7); rounds of one
/// process a second apart can. The summary pairs each value's round with the first value's round of the same cycle and
/// reports the mean ± standard error of the CPU differences and the median and mean of the throughput ratios; the
/// first tenth of the cycles (JIT, tiering, connection pool) is left out.
/// </summary>
internal sealed class CodeSwitch
{
    private readonly FieldInfo _field;
    private readonly int[] _values;
    private readonly List<(double Cpu, double Throughput)>[] _rounds;

    private CodeSwitch(FieldInfo field, int[] values)
    {
        _field = field;
        _values = values;
        _rounds = new List<(double, double)>[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            _rounds[i] = [];
        }
    }

    /// <summary>
    /// Parses <c>Namespace.Type.Field=0,1</c> and finds the static field in the governance assembly; <see langword="null"/>,
    /// after saying why, when the text or the field is not there (the field exists only in a scratch build).
    /// </summary>
    public static CodeSwitch? Parse(string text)
    {
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        var dot = equals < 0 ? -1 : text.LastIndexOf('.', equals);
        if (dot <= 0)
        {
            Console.Error.WriteLine($"--switch '{text}' is not Namespace.Type.Field=value,value");
            return null;
        }

        var typeName = text[..dot];
        var fieldName = text[(dot + 1)..equals];
        var type = typeof(Governance.Pipeline.GovernanceHandler).Assembly.GetType(typeName);
        var field = type?.GetField(fieldName, BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic);
        if (field is null || field.FieldType != typeof(int) || field.IsInitOnly || field.IsLiteral)
        {
            Console.Error.WriteLine($"--switch: {typeName} has no writable static int field {fieldName} (add one to a scratch build of the library)");
            return null;
        }

        var values = Array.ConvertAll(text[(equals + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), v => int.Parse(v, CultureInfo.InvariantCulture));
        if (values.Length < 2)
        {
            Console.Error.WriteLine($"--switch '{text}': give at least two values");
            return null;
        }

        return new CodeSwitch(field, values);
    }

    /// <summary>Sets the field for <paramref name="round"/> and returns the value set.</summary>
    public int Set(int round)
    {
        var value = _values[round % _values.Length];
        _field.SetValue(null, value);
        return value;
    }

    /// <summary>Records the measurements of <paramref name="round"/>.</summary>
    public void Record(int round, double cpuMicroseconds, double throughput) => _rounds[round % _values.Length].Add((cpuMicroseconds, throughput));

    /// <summary>Prints per value the medians, and against the first value the paired differences.</summary>
    public void PrintSummary()
    {
        var cycles = _rounds.Min(r => r.Count);
        var skip = cycles / 10;
        Console.WriteLine();
        Console.WriteLine($"{_field.DeclaringType!.FullName}.{_field.Name}: {cycles - skip} cycles after {skip} left out");
        Console.WriteLine("| Value | Median CPU us/req | Median req/s | CPU against the first value, mean ± s.e. (median) | Throughput ratio to the first value, median of pairs (mean ± s.e.) |");
        Console.WriteLine("|---:|---:|---:|---:|---:|");
        var cpu = new double[_values.Length][];
        var throughput = new double[_values.Length][];
        for (var v = 0; v < _values.Length; v++)
        {
            cpu[v] = new double[cycles - skip];
            throughput[v] = new double[cycles - skip];
            for (var c = skip; c < cycles; c++)
            {
                (cpu[v][c - skip], throughput[v][c - skip]) = _rounds[v][c];
            }
        }

        for (var v = 0; v < _values.Length; v++)
        {
            var line = string.Create(CultureInfo.InvariantCulture, $"| {_values[v]} | {RoundStatistics.Median(cpu[v]):F2} | {RoundStatistics.Median(throughput[v]):F0} |");
            if (v == 0)
            {
                Console.WriteLine(line + " (reference) | (reference) |");
                continue;
            }

            var cpuDifferences = RoundStatistics.Differences(cpu[v], cpu[0]);
            var ratios = RoundStatistics.Ratios(throughput[v], throughput[0]);
            var (cpuMean, cpuError) = RoundStatistics.MeanAndStandardError(cpuDifferences);
            var (ratioMean, ratioError) = RoundStatistics.MeanAndStandardError(ratios);
            Console.WriteLine(line + string.Create(CultureInfo.InvariantCulture, $" {cpuMean:+0.00;-0.00} ± {cpuError:F2} ({RoundStatistics.Median(cpuDifferences):+0.00;-0.00}) | {RoundStatistics.Median(ratios):F3} ({ratioMean:F3} ± {ratioError:F3}) |"));
        }
    }
}
