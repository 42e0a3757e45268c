"""Counter: a lock-free 64-bit signed counter in the shared store, as a policy.

Its state is one word of the store (the compiled _core.Counter, its engine); every
process that names it adds to the same word, so N processes' adds sum exactly.  As a
policy of kind "counter" it is recorded in the store's directory, so ``store.policies()``
(an exporter, the CLI) lists it beside the limiters and breakers.  It has no options:
nothing about it is configured, so nothing is followed, and the hot methods are the
engine's compiled ones bound onto the object (no extra hop)."""

from __future__ import annotations

from typing import Any, Protocol

from .directory import BUILDERS
from .errors import ConfigError
from .policy import Policy
from .store import SharedStore, resolve_store


def _counter_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The one validator of a counter's configuration: it has no options."""
    if cfg:
        raise ConfigError(f"unknown counter option(s): {', '.join(sorted(cfg))} (a counter has no options)")
    return {}


class _Add(Protocol):
    def __call__(self, n: int = 1) -> int: ...


class _CompareAndSet(Protocol):
    def __call__(self, old: int, new: int) -> bool: ...


class Counter(Policy):
    """A lock-free signed 64-bit counter shared by every process attached to the store.

    hits = sg.Counter("requests", store=store)    # also store.counter("requests")
    hits.add(1) -> the new value; hits.value; hits.compare_and_set(old, new) -> bool
    hits.reset() -> the value it had

    Adds wrap around at 64 bits, as the machine word does."""

    KIND = "counter"
    EVENT_PREFIX = "counter."  # it emits no events
    _validate = staticmethod(_counter_config)
    add: _Add
    compare_and_set: _CompareAndSet

    def __init__(self, name: str, store: SharedStore | str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"counter name must be a non-empty str, got {name!r}")
        self.name = name
        self._store = resolve_store(store)
        self._register(self._store, name, {})  # the store's engine for a counter: its word (_core.Counter)
        self._core = self._engine
        # the hot paths: the engine's compiled methods themselves
        self.add = self._core.add
        self.compare_and_set = self._core.compare_and_set

    # -- configuration (policy.Policy): none to apply or follow ------------------------------
    def _apply(self, cfg: dict[str, Any]) -> None:
        pass

    def _watch_version(self, version: int) -> None:
        pass

    def _sync(self) -> None:
        pass

    # -- reading ------------------------------------------------------------------------------
    @property
    def value(self) -> int:
        """The value now (every process's adds)."""
        return int(self._core.value)

    def reset(self) -> int:
        """Set the counter to 0; returns the value it had (adds racing with it land before
        or after, never lost: read-and-reset is one compare-and-set)."""
        core = self._core
        while True:
            v = int(core.value)
            if core.compare_and_set(v, 0):
                return v

    @property
    def store(self) -> SharedStore:
        return self._store

    def _readings(self) -> dict[str, Any]:
        """stats(): {"kind": "counter", "name": ..., "value": ...}, shared by every process."""
        return {"value": self.value}

    def __reduce__(self) -> tuple[Any, ...]:
        return (Counter, (self.name, self._store))

    def __repr__(self) -> str:
        if self._store.closed:
            return f"<Counter {self.name!r} (closed)>"
        return f"<Counter {self.name!r} value={self.value}>"


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> Counter:
    return Counter(name, store)


BUILDERS["counter"] = _build
