using System.Globalization;

namespace MeshGovernance.Demo;

/// <summary>
/// The progress of one run on a single line: a bar redrawn in place on a terminal, or a dot per tenth when the output
/// is redirected (CI logs), so that logs carry no carriage returns.
/// </summary>
internal sealed class ProgressLine
{
    private const string Indent = "  ";
    private const int BarWidth = 30;
    private readonly int _total;
    private readonly bool _redirected;
    private int _dots;
    private int _width;

    public ProgressLine(int total, bool redirected)
    {
        _total = total;
        _redirected = redirected;
        if (redirected)
        {
            Console.Write(Indent);
        }
        else
        {
            Report(0);
        }
    }

    public void Report(int done)
    {
        if (_redirected)
        {
            for (var tenths = done * 10 / _total; _dots < tenths; _dots++)
            {
                Console.Write('.');
            }

            return;
        }

        var filled = done * BarWidth / _total;
        Redraw(Invariant($"[{new string('#', filled)}{new string('-', BarWidth - filled)}] {done * 100 / _total,3}%  {done,6:N0}/{_total:N0}"));
    }

    public void Complete(TimeSpan elapsed)
    {
        var summary = Invariant($"{_total:N0} requests in {elapsed.TotalSeconds:0.00} s, {_total / elapsed.TotalSeconds:N0} req/s");
        if (_redirected)
        {
            Report(_total);
            Console.WriteLine(" " + summary);
        }
        else
        {
            Redraw(summary);
            Console.WriteLine();
        }
    }

    // Back to the start of the line and overwrite; pad so that a longer previous text leaves nothing behind.
    private void Redraw(string text)
    {
        Console.Write("\r" + Indent + text.PadRight(_width));
        _width = Math.Max(_width, text.Length);
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Prints the per-endpoint table of a run.</summary>
internal static class ResultTable
{
    public static void Print(RunResult result, IReadOnlyList<string> endpoints)
    {
        Console.WriteLine($"    {"endpoint",-10} {"requests",9} {"share %",9} {"p50 ms",9} {"p99 ms",9}");
        foreach (var endpoint in endpoints)
        {
            Row(endpoint, result.Stats(endpoint), result.Samples.Length);
        }

        Row("all", result.Stats(server: null), result.Samples.Length);
    }

    private static void Row(string name, EndpointStats stats, int total) =>
        Console.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"    {name,-10} {stats.Requests,9:N0} {100.0 * stats.Requests / total,7:0.0} % {Ms(stats.P50Milliseconds),9} {Ms(stats.P99Milliseconds),9}"));

    private static string Ms(double value) => double.IsNaN(value) ? "-" : value.ToString("0.00", CultureInfo.InvariantCulture);
}
