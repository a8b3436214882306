using System.Collections.Frozen;

namespace Governance.Configuration;

/// <summary>
/// Plug-ins (policies, discovery providers) by case-insensitive name. A custom plug-in replaces a built-in one of the
/// same name whatever the registration order; between custom plug-ins, the later registration wins. Names are listed
/// built-ins first, in registration order, for validation messages.
/// </summary>
internal abstract class NamedRegistry<T>
    where T : class
{
    private readonly FrozenDictionary<string, T> _items;

    protected NamedRegistry(IEnumerable<T> items, Func<T, string> name)
    {
        var byName = new Dictionary<string, T>(StringComparer.OrdinalIgnoreCase);
        var names = new List<string>();
        var builtIns = 0;
        foreach (var item in items.OrderBy(static i => IsBuiltIn(i) ? 0 : 1))
        {
            var key = name(item);
            if (string.IsNullOrWhiteSpace(key))
            {
                throw new InvalidOperationException($"{item.GetType().FullName} has no Name: a plug-in is selected in configuration by its Name, so it must return one (got {(key is null ? "null" : $"'{key}'")})");
            }

            if (!byName.ContainsKey(key))
            {
                names.Insert(IsBuiltIn(item) ? builtIns++ : names.Count, key);
            }

            byName[key] = item;
        }

        _items = byName.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        NameList = string.Join(", ", names);
    }

    /// <summary>Gets the names, built-ins first, for messages.</summary>
    public string NameList { get; }

    public bool Contains(string name) => _items.ContainsKey(name);

    public T Get(string name) => _items[name];

    private static bool IsBuiltIn(T item) => item.GetType().Assembly == typeof(NamedRegistry<>).Assembly;
}
