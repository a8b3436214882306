namespace Governance.Benchmarks.Infrastructure;

/// <summary>Summaries of per-round measurements, shared by the alternating-rounds modes.</summary>
internal static class RoundStatistics
{
    /// <summary>Returns the median (the mean of the two middle values for an even count); does not reorder <paramref name="values"/>.</summary>
    public static double Median(double[] values)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        var middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    /// <summary>Returns the mean and its standard error (NaN for fewer than two values).</summary>
    public static (double Mean, double StandardError) MeanAndStandardError(double[] values)
    {
        var mean = values.Average();
        var squares = 0.0;
        foreach (var value in values)
        {
            squares += (value - mean) * (value - mean);
        }

        return (mean, values.Length > 1 ? Math.Sqrt(squares / (values.Length - 1) / values.Length) : double.NaN);
    }
}
