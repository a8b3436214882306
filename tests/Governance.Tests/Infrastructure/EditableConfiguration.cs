using System.Collections.Concurrent;
using Microsoft.Extensions.Configuration;

namespace Governance.Tests.Infrastructure;

/// <summary>
/// A configuration source whose keys a test sets and removes (the in-memory provider cannot remove a key: setting it to
/// null leaves the section in place), each change followed by a reload. Safe to change from one thread while others read.
/// </summary>
public sealed class EditableConfiguration : IConfigurationSource
{
    private readonly EditableProvider _provider = new();

    public IConfigurationProvider Build(IConfigurationBuilder builder) => _provider;

    /// <summary>Sets (or, with <see langword="null"/>, removes) a key, then reloads.</summary>
    public void Change(string key, string? value) => _provider.Change([new(key, value)]);

    /// <summary>Sets or removes several keys, then reloads once.</summary>
    public void Change(IEnumerable<KeyValuePair<string, string?>> changes) => _provider.Change(changes);

    /// <summary>Removes every key under <paramref name="section"/>, then reloads once.</summary>
    public void Remove(string section) => _provider.Remove(section);

    private sealed class EditableProvider : ConfigurationProvider
    {
        public EditableProvider() => Data = new ConcurrentDictionary<string, string?>(StringComparer.OrdinalIgnoreCase);

        public void Change(IEnumerable<KeyValuePair<string, string?>> changes)
        {
            foreach (var (key, value) in changes)
            {
                if (value is null)
                {
                    Data.Remove(key);
                }
                else
                {
                    Data[key] = value;
                }
            }

            OnReload();
        }

        public void Remove(string section)
        {
            foreach (var key in Data.Keys.ToList())
            {
                if (key.StartsWith(section + ":", StringComparison.OrdinalIgnoreCase))
                {
                    Data.Remove(key);
                }
            }

            OnReload();
        }
    }
}
