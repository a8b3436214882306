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

    /// <summary>Returns the per-round ratios <c>values[r] / baseline[r]</c> of two series measured in the same rounds.</summary>
    public static double[] Ratios(double[] values, double[] baseline)
    {
        var ratios = new double[values.Length];
        for (var r = 0; r < values.Length; r++)
        {
            ratios[r] = values[r] / baseline[r];
        }

        return ratios;
    }

    /// <summary>Returns the per-round differences <c>values[r] - baseline[r]</c> of two series measured in the same rounds.</summary>
    public static double[] Differences(double[] values, double[] baseline)
    {
        var differences = new double[values.Length];
        for (var r = 0; r < values.Length; r++)
        {
            differences[r] = values[r] - baseline[r];
        }

        return differences;
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
