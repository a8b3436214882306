using System.Globalization;

namespace Governance.Benchmarks.Infrastructure;

/// <summary>
/// The <c>--name value</c> options of the custom round modes (<c>loopback-rounds</c>, <c>telemetry-rounds</c>,
/// <c>contention-rounds</c>): parsed once, an unknown name reported with the mode's usage line.
/// </summary>
internal sealed class RoundArguments
{
    private readonly Dictionary<string, string> _values;

    private RoundArguments(Dictionary<string, string> values)
    {
        _values = values;
    }

    /// <summary>
    /// Parses <paramref name="args"/>; returns <see langword="null"/> after printing <paramref name="usage"/> when a name
    /// is not one of <paramref name="known"/>.
    /// </summary>
    public static RoundArguments? Parse(string[] args, string command, string usage, params string[] known)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            if (Array.IndexOf(known, args[i]) < 0)
            {
                Console.Error.WriteLine($"unknown option {args[i]}; usage: {command} {usage}");
                return null;
            }

            values[args[i]] = args[i + 1];
        }

        return new RoundArguments(values);
    }

    /// <summary>Gets an integer option, or <paramref name="fallback"/> when it was not given.</summary>
    public int Int(string name, int fallback) =>
        _values.TryGetValue(name, out var value) ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;

    /// <summary>Gets a text option, or <see langword="null"/> when it was not given.</summary>
    public string? Text(string name) => _values.GetValueOrDefault(name);

    /// <summary>
    /// Finds the item named <paramref name="wanted"/> (a <c>--profile</c> target); <see langword="null"/>, after printing
    /// the names there are, when none is.
    /// </summary>
    public static T? FindByName<T>(T[] items, Func<T, string> name, string wanted, string kind)
        where T : struct
    {
        foreach (var item in items)
        {
            if (name(item) == wanted)
            {
                return item;
            }
        }

        Console.Error.WriteLine($"unknown {kind} {wanted}; {kind}s: {string.Join(", ", Array.ConvertAll(items, i => name(i)))}");
        return null;
    }
}
