"""The policy directory: every policy of a store, its configuration and its version.

A policy is its kind plus its name (DESIGN.md rule 8).  Its directory entry holds one
JSON document: the configuration in code (what the newest constructor was given),
the runtime override (``policy.reconfigure(...)``, ``sluicegate config apply``), and
when each was set.  The effective configuration is the code configuration with the
override laid over it.  Every process's policy object loads the entry's version word
once per decision and, when it moved, reads the document and follows it; so a new
configuration, from a deploy or from an operator, applies in every process at its
next decision, and nothing raises or splits the budget.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core
from .errors import ConfigError, PolicyNotFound, StoreError

if TYPE_CHECKING:
    from .store import SharedStore

# kind name <-> the namespace number its keys and state use in the store (SG_NS_* in
# csrc/sg_core.h; a pool keeps only its host-wide counts there)
KINDS: dict[str, int] = {
    "limiter": _core.NS_LIMITER,
    "breaker": _core.NS_BREAKER,
    "cap": _core.NS_CONCURRENCY,
    "pool": _core.NS_POOL,
    "counter": _core.NS_COUNTER,
    "guard": _core.NS_GUARD,
}
KIND_NAMES: dict[int, str] = {v: k for k, v in KINDS.items()}
# kinds made of other policies, commonly named as their parts are (Guard("payments",
# breaker=CircuitBreaker("payments"))): sharing a name with another kind is no surprise
COMPOSITE = frozenset({"guard"})

_log = logging.getLogger("sluicegate.directory")
# kind -> builder(store, name, code configuration) -> a working policy object; each
# policy module registers its own (the directory knows no policy class)
BUILDERS: dict[str, Callable[[SharedStore, str, dict[str, Any]], Any]] = {}
# kind -> observer(store, name) -> an object whose stats() reads the policy's counts from the
# store alone, for a kind whose working object needs code (a guard's parts and fallback):
# what a CLI, a health probe or an exporter in another process reads instead
OBSERVERS: dict[str, Callable[[SharedStore, str], Any]] = {}
_RETRIES = 100


@dataclass(frozen=True)
class PolicyInfo:
    """One policy of a store as its directory records it."""

    kind: str
    name: str
    config: dict[str, Any]  # effective: code with the override laid over it
    code: dict[str, Any]  # the configuration the newest constructor was given
    override: dict[str, Any] | None  # the runtime override, if one is set
    version: int  # documents published for this policy so far
    created: float  # epoch seconds
    updated: float  # epoch seconds of the last publication


def _decode(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StoreError(f"{what}: its directory document is not valid JSON ({e}); re-apply the configuration") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("code"), dict):
        raise StoreError(f"{what}: its directory document has no code configuration; re-apply the configuration")
    return doc


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def effective(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc["code"], **(doc.get("override") or {})}


class Entry:
    """A policy's directory entry, as one process follows it."""

    __slots__ = ("_e", "kind", "name", "store")

    def __init__(self, store: SharedStore, kind: str, name: str, *, create: bool = True) -> None:
        self.store, self.kind, self.name = store, kind, name
        e = _core.dir_find(store._table, KINDS[kind], name, create)
        if e is None:
            raise PolicyNotFound(f"no {kind} {name!r} in {store!r}")
        self._e = e
        if create and kind not in COMPOSITE:
            for other, num in KINDS.items():
                if other not in COMPOSITE and other != kind and \
                        _core.dir_find(store._table, num, name, False) is not None:
                    _log.warning("%s %r: a %s of the same name exists in %r; they are separate policies "
                                 "(a policy is its kind and its name), the %s starts fresh",
                                 kind, name, other, store, kind)
                    break

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name!r}"

    @property
    def dir_entry(self) -> Any:
        return self._e

    def read(self) -> tuple[int, dict[str, Any] | None]:
        v, raw = self._e.read()
        return int(v), (_decode(raw, self.what) if v else None)

    def _publish(self, change: Any) -> tuple[int, dict[str, Any]]:
        """change(doc or None) -> new doc, or None for "nothing to change"; retried
        over concurrent writers until it applies to the document it was computed from."""
        for _ in range(_RETRIES):
            v, doc = self.read()
            new = change(doc)
            if new is None:
                assert doc is not None
                return v, doc
            got = self._e.write(_encode(new), v)
            if got:
                return int(got), new
        raise StoreError(f"{self.what}: its configuration kept changing under {_RETRIES} attempts; try again")

    def publish_code(self, code: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Record the configuration this process's code gives; the newest wins.
        Returns (version, document)."""

        def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            if doc is not None and doc["code"] == code:
                return None
            if doc is not None:
                _log.info("%s: configuration in code changed (pid %d): %s -> %s",
                          self.what, os.getpid(), doc["code"], code)
            return {"code": code, "code_at": time.time(),
                    "override": doc.get("override") if doc else None,
                    "override_at": doc.get("override_at") if doc else None}

        return self._publish(change)

    def set_override(self, options: dict[str, Any] | None, *, replace: bool = False) -> tuple[int, dict[str, Any]]:
        """Lay options over the current override (None clears it); replace=True makes
        options the whole override, in one publication (``sluicegate config apply``)."""

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            if doc is None:
                raise StoreError(f"{self.what}: has no configuration to override yet")
            base = {} if replace else (doc.get("override") or {})
            merged = None if options is None else {**base, **options}
            _log.info("%s: runtime override %s (pid %d)", self.what,
                         "cleared" if merged is None else f"set to {merged}", os.getpid())
            return {**doc, "override": merged, "override_at": None if merged is None else time.time()}

        return self._publish(change)


def policies(store: SharedStore) -> list[PolicyInfo]:
    """Every policy of the store, by kind and name."""
    out = []
    for _idx, kind_num, name, created, updated in _core.dir_list(store._table):
        kind = KIND_NAMES.get(int(kind_num))
        if kind is None:
            continue  # a kind this version does not know
        e = Entry(store, kind, name, create=False)
        v, doc = e.read()
        if doc is None:
            continue  # being created right now
        out.append(PolicyInfo(kind, name, effective(doc), dict(doc["code"]), doc.get("override"), v,
                              created / 1e9, updated / 1e9))
    out.sort(key=lambda p: (p.kind, p.name))
    return out


def find(store: SharedStore, name: str, kind: str | None = None) -> PolicyInfo:
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    found = [p for p in policies(store) if p.name == name and (kind is None or p.kind == kind)]
    if not found:
        raise PolicyNotFound(f"no policy {name!r}{'' if kind is None else f' of kind {kind!r}'} in {store!r}")
    if len(found) > 1:
        kinds = ", ".join(p.kind for p in found)
        raise PolicyNotFound(f"{name!r} names several policies in {store!r} ({kinds}); pass kind=")
    return found[0]


# set while build() makes an object for a directory entry: that object attaches to the
# entry as it is and publishes nothing (an observer, such as `sluicegate inspect`, a
# health probe or an exporter, must never put back a code configuration a deploy has
# just replaced)
ATTACHING: contextvars.ContextVar[bool] = contextvars.ContextVar("sluicegate.directory.attaching", default=False)


def build(store: SharedStore, name: str, kind: str | None = None) -> Any:
    """A working policy object for a directory entry, from its code configuration
    (the override, if any, applies to it as to every other object).  Building it
    publishes nothing."""
    info = find(store, name, kind)
    token = ATTACHING.set(True)
    try:
        return BUILDERS[info.kind](store, name, info.code)
    finally:
        ATTACHING.reset(token)
