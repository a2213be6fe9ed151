"""Named extension points: each pruning method, hidden-state distance, MI bound and logit
loss is one class or function registered under the name a config selects it by, in the
file that defines it (jaxpruner's `ALGORITHM_REGISTRY` + `register_algorithm`). The
registry is the only list of names: config checks, error messages and search spaces read it.

    DISTANCES = registry.Registry("hidden-state distance", "distill.intermediate")

    @DISTANCES.register("mse")
    def hidden_mse(student, teacher, mask): ...

    DISTANCES["mse"]                # the function
    DISTANCES.check(config, "mse")  # an unknown name, else the entry's own config check

An unknown name is a one-line `errors.ConfigError` naming the config key and the registered
names (never a KeyError); registering a taken name is a ValueError, except the same
definition again (a re-run notebook cell or a reloaded module replaces its own entry).
Registries that share a config key (the MI bounds and the distances both serve
`distill.intermediate`) are linked with `disjoint=`, so a name means one thing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional

from prune_ofa_jax import errors


@dataclasses.dataclass(frozen=True)
class Entry:
    """value: the registered class or function; check(config): its own config check,
    raising errors.ConfigError (None: nothing to check)."""
    name: str
    value: Any
    check: Optional[Callable[[Any], None]] = None


def _origin(value) -> tuple:
    return (getattr(value, "__module__", None), getattr(value, "__qualname__", None))


class Registry:
    """Name -> Entry for one config key. what: an entry in messages ("pruning method");
    key: the config key that selects one ("sparsity.method"); on_register(name, value):
    the kind's own conditions on a new entry (raises); hint: how to add one, for the
    unknown-name message; disjoint: registries sharing the key (no name in two of them)."""

    def __init__(self, what: str, key: str, *, on_register: Optional[Callable] = None,
                 hint: str = "", disjoint: tuple = ()):
        self.what, self.key, self.hint = what, key, hint
        self._on_register = on_register
        self._entries: dict[str, Entry] = {}
        self._peers: list[Registry] = []
        for other in disjoint:
            self._peers.append(other)
            other._peers.append(self)

    # --- registering ----------------------------------------------------------------------
    def register(self, name: str, *, check: Optional[Callable[[Any], None]] = None):
        """Decorator: `@REGISTRY.register("name")` on a class or function (returned as is);
        `check(config)` is the entry's own config check."""
        def add(value):
            self.add(name, value, check=check)
            return value
        return add

    def add(self, name: str, value, *, check: Optional[Callable[[Any], None]] = None) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{self.what} name {name!r}: use an identifier (letters, digits, _)")
        for reg in (self, *self._peers):
            old = reg._entries.get(name)
            if old is None or (reg is self and _origin(old.value) == _origin(value)):
                continue
            where = ".".join(p for p in _origin(old.value) if p)
            raise ValueError(f"config.{self.key}: {name!r} is already registered as a "
                             f"{reg.what} ({where}); register yours under another name")
        if self._on_register is not None:
            self._on_register(name, value)
        self._entries[name] = Entry(name, value, check)

    def remove(self, name: str) -> None:
        """Drops an entry (a test that registers a temporary one cleans up with it)."""
        self._entries.pop(name, None)

    # --- reading --------------------------------------------------------------------------
    def names(self) -> tuple:
        return tuple(self._entries)

    def items(self) -> tuple:
        """(name, registered class or function) pairs, in registration order."""
        return tuple((k, e.value) for k, e in self._entries.items())

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry:
        """The Entry; a ConfigError naming the key if unknown."""
        if name not in self._entries:
            raise errors.ConfigError(self.unknown(name))
        return self._entries[name]

    def __getitem__(self, name: str):
        """The registered class or function; a ConfigError naming the key if unknown."""
        return self.entry(name).value

    def check(self, config, name: str) -> None:
        """ConfigError for an unknown name, else the entry's own check on `config`."""
        entry = self.entry(name)
        if entry.check is not None:
            entry.check(config)

    def unknown(self, name, names: Optional[tuple] = None) -> str:
        """The one-line message for an unknown name (`names`: the choices, default all)."""
        names = self.names() if names is None else names
        hint = f" ({self.hint})" if self.hint else ""
        return f"config.{self.key}: {name!r} is not one of {names}{hint}"
