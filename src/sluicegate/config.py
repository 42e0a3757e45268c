"""Declarative configuration: stores, limiters, breakers, caps, pools, counters and guards
declared in TOML (or a dict of the same shape), made by ``load_config`` and
hot-reloaded by ``Config.reload()``; ``apply_overrides`` pushes a file into a live store
as runtime overrides (``sluicegate config apply``).

The file format::

    [stores.main]                # optional; url: "shm://NAME", "file:///PATH", a name or a path
    url = "shm://myapp"          # capacity = N, policies = N: used when this creates the store
    [limiters.api]               # name -> the constructor's keyword options
    rate = "100/second"          # or ["10/second", "500/minute"]; burst, algorithm
    store = "main"               # a store declared above (default: [stores.default] if declared,
                                 # else load_config's store=, else default_store())
    [breakers.payments]
    failure_threshold = 5        # every shared option of CircuitBreaker; record / ignore:
    record = ["OSError"]         # exception classes by name ("module:Class", or a builtin)
    [caps.postgres]
    limit = 20                   # limit, adaptive, min_limit, ...; drop_on: exception classes
    [pools.db]
    create = "myapp.db:connect"  # "module:function"; check and close likewise
    size = 5                     # and every shared option of Pool (max_overflow, timeout, ...)
    host_limit = "postgres"      # a cap declared above; async = true makes an AsyncPool
    [counters.requests]          # a Counter (no options)
    [guards.checkout]            # a Guard over the policies above, by name
    limiter = "api"              # limiter, cap (or pool), breaker: names declared in this file
    breaker = "payments"         # key = "a literal key", or key_func = "myapp.keys:user_of"
    timeout = 2.0                # timeout, cost, cap_timeout, retry_takes_token: shared options
    retry = {attempts = 3, backoff = 0.1, budget = 0.2}   # sg.Retry's options; retry_on = ["OSError"]
    fallback = "myapp.fallbacks:cached_page"              # an import path: a callable or a value

A policy made here is an ordinary construction: it publishes its configuration as the
code configuration (DESIGN.md rule 8: the newest wins in every process), so a changed
file behaves like changed code.  A runtime override still outranks it.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

from .async_pool import AsyncPool
from .breaker import SHARED_OPTIONS as BREAKER_OPTIONS
from .breaker import CircuitBreaker, _breaker_config
from .concurrency import ConcurrencyLimiter, _cap_config
from .counter import Counter, _counter_config
from .directory import Entry, effective
from .errors import ConfigError, PolicyNotFound, SluicegateError, StoreNotFound
from .guard import GUARD_OPTIONS, Guard, _guard_config
from .limiter import ADAPTIVE_OPTIONS, RateLimiter, _limiter_config
from .limiter import _build as _build_limiter
from .pool import POOL_OPTIONS as POOL_SHARED
from .pool import Pool, _pool_config
from .retry import Retry
from .store import SharedStore, default_store, open_store, resolve_store

__all__ = ["Config", "Reloaded", "apply_overrides", "load_config"]

_log = logging.getLogger("sluicegate.config")

Source = Union[str, "os.PathLike[str]", Mapping[str, Any]]
AnyPool = Union[Pool[Any], AsyncPool[Any]]
Policy = Union[RateLimiter, CircuitBreaker, ConcurrencyLimiter, AnyPool, Counter, Guard]

DEFAULT_STORE = "default"  # a store declared under this name is the file's default
STORE_OPTIONS = ("url", "capacity", "policies")
# a pool's own options in this process (its shared ones are pool.POOL_OPTIONS): create,
# check and close are import paths, host_limit names a cap, async chooses AsyncPool (clock
# is for tests)
POOL_CALLABLES = ("create", "check", "close")
POOL_LOCAL = (*POOL_CALLABLES, "host_limit", "async")
# a guard's own options: its parts by name (policies declared in the file), its key, its
# fallback and key function (import paths), the exception classes its retry retries
GUARD_PARTS = {"limiter": "limiters", "cap": "caps", "pool": "pools", "breaker": "breakers"}
GUARD_LOCAL = (*GUARD_PARTS, "key", "key_func", "fallback", "retry_on")


@dataclass(frozen=True)
class _Kind:
    """How one policy table of a file maps onto its class and its one validator."""

    table: str  # the file's table: "limiters"
    kind: str  # the directory's kind: "limiter"
    shared: tuple[str, ...]  # options every process shares through the directory
    local: tuple[str, ...]  # this process's own options: exception classes by name (a pool's: see POOL_LOCAL)
    validate: Callable[[dict[str, Any]], dict[str, Any]]


_KINDS: dict[str, _Kind] = {
    k.table: k
    for k in (
        _Kind("limiters", "limiter", ("rate", "burst", "algorithm", *ADAPTIVE_OPTIONS), (), _limiter_config),
        _Kind("breakers", "breaker", tuple(BREAKER_OPTIONS), ("record", "ignore"), _breaker_config),
        _Kind("caps", "cap", ("limit", "adaptive", "min_limit", "max_limit", "backoff", "slow_call"),
              ("drop_on",), _cap_config),
        _Kind("pools", "pool", POOL_SHARED, POOL_LOCAL, _pool_config),
        _Kind("counters", "counter", (), (), _counter_config),
        _Kind("guards", "guard", GUARD_OPTIONS, GUARD_LOCAL, _guard_config),
    )
}
TABLE_OF_KIND: dict[str, str] = {k.kind: k.table for k in _KINDS.values()}
SECTIONS = ("stores", *_KINDS)
_LOCAL_DEFAULTS: dict[str, tuple[type, ...]] = {"record": (Exception,), "ignore": (), "drop_on": (TimeoutError,)}


# -- reading and checking a file ---------------------------------------------------------------
def _fail(label: str, where: str, key: str | None, msg: str) -> ConfigError:
    return ConfigError(f"{label}: [{where}] {key}: {msg}" if key else f"{label}: [{where}] {msg}")


def _hint(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _key_named(msg: str, keys: list[str]) -> str | None:
    """The option a validator's message is about: the one it names first."""
    best: tuple[int, str] | None = None
    for k in keys:
        m = re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", msg)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), k)
    return None if best is None else best[1]


def _read(source: Source) -> tuple[str, str | None, dict[str, Any]]:
    """(label for messages, path or None, the document)."""
    if isinstance(source, Mapping):
        return "<dict>", None, dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"load_config takes a path to a TOML file or a dict, not {type(source).__name__}")
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            return path, path, tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:  # its message carries the line and column
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


@dataclass
class _Decl:
    """One declared policy or pool, its table as given, split by what it is for."""

    table: str
    name: str
    store: str | SharedStore | None  # a declared store's name, a store object (dicts), or None
    shared: dict[str, Any]  # options that go to the kind's validator (unknown ones included)
    local: dict[str, Any]  # this process's own options
    raw: dict[str, Any]  # the whole table, to tell a changed declaration on reload

    @property
    def where(self) -> str:
        return f"{self.table}.{self.name}"


@dataclass
class _Doc:
    label: str
    path: str | None
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: list[_Decl] = field(default_factory=list)  # pools last: they may name a cap


def _parse(source: Source) -> _Doc:
    """Check the document's structure; no option values yet (they need a base to lay over)."""
    label, path, doc = _read(source)
    out = _Doc(label, path)
    for section, body in doc.items():
        if section not in SECTIONS:
            raise ConfigError(f"{label}: unknown table [{section}]{_hint(str(section), SECTIONS)} "
                              f"(tables: {', '.join(SECTIONS)})")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{label}: [{section}] must be a table of names, e.g. [{section}.NAME]")
        for name, opts in body.items():
            where = f"{section}.{name}"
            if not isinstance(opts, Mapping):
                raise ConfigError(f"{label}: [{where}] must be a table of options, got {opts!r}")
            opts = dict(opts)
            if section == "stores":
                for k in opts:
                    if k not in STORE_OPTIONS:
                        raise _fail(label, where, k, f"unknown store option{_hint(k, STORE_OPTIONS)} "
                                                     f"(options: {', '.join(STORE_OPTIONS)})")
                if not isinstance(opts.get("url"), str) or not opts["url"]:
                    raise _fail(label, where, "url", 'a store needs a url, e.g. url = "shm://myapp"')
                out.stores[name] = opts
                continue
            store = opts.get("store")
            if store is not None and not isinstance(store, (str, SharedStore)):
                raise _fail(label, where, "store", f"must name a store declared in [stores], got {store!r}")
            kind = _KINDS[section]
            local = {k: opts[k] for k in kind.local if k in opts}
            shared = {k: v for k, v in opts.items() if k != "store" and k not in kind.local}
            out.policies.append(_Decl(section, name, store, shared, local, opts))
    # stable: pools after the caps they name, guards after every part they name
    out.policies.sort(key=lambda d: (d.table == "guards", d.table == "pools"))
    names = set(out.stores)
    caps = {d.name for d in out.policies if d.table == "caps"}
    in_file = {(d.table, d.name) for d in out.policies}
    for d in out.policies:
        if isinstance(d.store, str) and d.store not in names:
            declared = f"declared: {', '.join(sorted(names))}" if names else "none is declared"
            raise _fail(label, d.where, "store", f"no store {d.store!r} in [stores] ({declared})")
        hl = d.local.get("host_limit") if d.table == "pools" else None
        if isinstance(hl, str) and hl not in caps:
            raise _fail(label, d.where, "host_limit", f"no cap {hl!r} in [caps]"
                                                      f"{_hint(hl, sorted(caps))}")
        if hl is not None and not isinstance(hl, (str, ConcurrencyLimiter)):
            raise _fail(label, d.where, "host_limit", f"must name a cap declared in [caps], got {hl!r}")
        if d.table == "guards":
            for part, table in GUARD_PARTS.items():
                ref = d.local.get(part)
                if ref is not None and (not isinstance(ref, str) or (table, ref) not in in_file):
                    have = sorted(n for t, n in in_file if t == table)
                    raise _fail(label, d.where, part, f"no {part} {ref!r} in [{table}]{_hint(str(ref), have)}")
    return out


def _validated(label: str, d: _Decl, base: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's validator over base with the declaration's options laid over it; its
    message prefixed with the file, the table and the option it names."""
    kind = _KINDS[d.table]
    try:
        return kind.validate({**base, **d.shared})
    except ConfigError as e:
        msg = str(e)
        unknown = [k for k in d.shared if k not in kind.shared]
        if unknown:
            allowed = (*kind.shared, *kind.local, "store")
            raise _fail(label, d.where, unknown[0], msg + _hint(unknown[0], allowed)) from None
        raise _fail(label, d.where, _key_named(msg, [*d.shared, *kind.shared]), msg) from None


def _import(label: str, where: str, key: str, spec: object) -> Any:
    """An object from an import path "module:name" (a callable given in a dict passes)."""
    if not isinstance(spec, str):
        return spec
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise _fail(label, where, key, f"write an import path 'module:name', got {spec!r}")
    try:
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # noqa: BLE001 - any failure to import is the file's error
        raise _fail(label, where, key, f"cannot import {spec!r}: {type(e).__name__}: {e}") from None
    return obj


def _exceptions(label: str, where: str, key: str, spec: object) -> tuple[type, ...]:
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out = []
    for item in items:
        if isinstance(item, str) and ":" not in item:
            obj = getattr(builtins, item, None)
            if obj is None:
                raise _fail(label, where, key, f"{item!r} is not a builtin exception; "
                                               "write 'module:Class' for others")
        else:
            obj = _import(label, where, key, item)
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            raise _fail(label, where, key, f"{item!r} is not an exception class")
        out.append(obj)
    return tuple(out)


def _locals(label: str, d: _Decl) -> dict[str, Any]:
    """This process's own options, resolved (defaults for the ones not given)."""
    kind = _KINDS[d.table]
    if d.table == "pools":
        if "create" not in d.local:
            raise _fail(label, d.where, "create", 'a pool needs create = "module:function"')
        if not isinstance(d.local.get("async", False), bool):
            raise _fail(label, d.where, "async", f"must be true or false, got {d.local['async']!r}")
        out = {k: _import(label, d.where, k, d.local[k]) for k in POOL_CALLABLES if k in d.local}
        return {**out, "host_limit": d.local.get("host_limit"), "async": d.local.get("async", False)}
    if d.table == "guards":
        if "key" in d.local and "key_func" in d.local:
            raise _fail(label, d.where, "key_func", "give key (a literal key) or key_func (an import path), not both")
        got = {k: d.local.get(k) for k in (*GUARD_PARTS, "key")}
        for k in ("key_func", "fallback"):
            if k in d.local:
                got[k] = _import(label, d.where, k, d.local[k])
        if "retry_on" in d.local:
            got["retry_on"] = _exceptions(label, d.where, "retry_on", d.local["retry_on"])
        return got
    return {k: _exceptions(label, d.where, k, d.local[k]) if k in d.local else _LOCAL_DEFAULTS[k]
            for k in kind.local}


def _open(label: str, name: str, opts: Mapping[str, Any], *, create: bool = True) -> SharedStore:
    try:
        return open_store(opts["url"], capacity=opts.get("capacity"), policies=opts.get("policies"),
                          create=create)
    except StoreNotFound as e:
        raise _fail(label, f"stores.{name}", "url", f"{e}: is the service running? (a store is made by the "
                                                    "first process that uses it)") from None
    except ConfigError as e:
        raise _fail(label, f"stores.{name}", _key_named(str(e), list(STORE_OPTIONS)) or "url", str(e)) from None


def _store_of(obj: Policy) -> SharedStore | None:
    return obj.store if isinstance(obj, RateLimiter) else obj._store


# -- load_config and reload --------------------------------------------------------------------
@dataclass(frozen=True)
class Reloaded:
    """What a reload did, as "table.name" strings."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()  # no longer declared: left as they are
    # pools whose own options (create, check, close, host_limit, async) or store changed: a
    # restart applies them (a change of their shared options is applied, under changed)
    not_applied: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.not_applied)


class Config:
    """What load_config made, by name: ``config.limiters["api"]``, ``config["api"]``.

    ``reload()`` re-reads the file and applies what changed; ``close()`` closes the pools
    it made and the stores it opened."""

    def __init__(self, source: Source, store: SharedStore | str | None = None) -> None:
        self.path: str | None = None
        self.stores: dict[str, SharedStore] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.caps: dict[str, ConcurrencyLimiter] = {}
        self.pools: dict[str, AnyPool] = {}
        self.counters: dict[str, Counter] = {}
        self.guards: dict[str, Guard] = {}
        self._store_arg = store
        self._source_store_arg = store  # what the caller gave (a store object of theirs is not closed here)
        self._source = source
        self._store_decls: dict[str, dict[str, Any]] = {}
        self._decls: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        with self._lock:
            self._apply(_parse(source))

    # -- access by name -----------------------------------------------------------------------
    def _tables(self) -> tuple[dict[str, Any], ...]:
        return (self.limiters, self.breakers, self.caps, self.pools, self.counters, self.guards)

    def __getitem__(self, name: str) -> Any:
        found = [t[name] for t in self._tables() if name in t]
        if not found:
            raise KeyError(f"nothing named {name!r} in this configuration")
        if len(found) > 1:
            raise KeyError(f"{name!r} names several things here; use config.limiters[...], .breakers, "
                           ".caps, .pools, .counters or .guards")
        return found[0]

    def __contains__(self, name: object) -> bool:
        return any(name in t for t in self._tables())

    def __iter__(self) -> Iterator[str]:
        for t in self._tables():
            yield from t

    # -- reload ---------------------------------------------------------------------------------
    def reload(self, source: Source | None = None) -> Reloaded:
        """Re-read the file (or read source, which becomes the file from now on) and apply
        what changed: changed policies publish their new configuration (every process
        follows at its next decision; a pool's shared options too), new ones are made,
        removed ones are left alone with a warning; a pool whose own options (create, check,
        close, host_limit, async) or store changed is reported in not_applied (its objects
        are this process's: restart to apply).
        Every option is checked before anything changes: a bad file raises ConfigError and
        the running configuration stays."""
        with self._lock:
            doc = _parse(self._source if source is None else source)
            result = self._apply(doc)
            if source is not None:
                self._source = source
        return result

    def reload_on(self, signum: int = signal.SIGHUP) -> None:
        """Install a handler that reloads on signum (main thread only).  A bad file is
        logged and the running configuration stays: a signal handler must not raise into
        whatever code it interrupted."""

        def handler(_sig: int, _frame: object) -> None:
            if self._lock.locked():
                _log.warning("%s: a reload is already running; signal ignored", self.path or "configuration")
                return
            try:
                self.reload()
            except SluicegateError:
                _log.exception("configuration reload failed; the running configuration stays")

        signal.signal(signum, handler)

    def _target(self, d: _Decl) -> SharedStore:
        if isinstance(d.store, SharedStore):
            return resolve_store(d.store)
        if isinstance(d.store, str):
            return self.stores[d.store]
        if DEFAULT_STORE in self.stores:
            return self.stores[DEFAULT_STORE]
        if self._store_arg is None:
            return default_store()
        if not isinstance(self._store_arg, SharedStore):  # a URL: opened once, then one object
            self._store_arg = resolve_store(self._store_arg)
        return resolve_store(self._store_arg)

    def _apply(self, doc: _Doc) -> Reloaded:
        label = doc.label
        # 1. check every option and import every name before anything changes
        plans = [(d, _validated(label, d, {}), _locals(label, d)) for d in doc.policies]
        self.path = doc.path

        # 2. stores: a new or changed declaration opens its store
        for name, sopts in doc.stores.items():
            if self._store_decls.get(name) != sopts:
                if name in self.stores:
                    _log.info("%s: [stores.%s] changed to %s; its policies move to it", label, name, sopts["url"])
                self.stores[name] = _open(label, name, sopts)
                self._store_decls[name] = sopts
        for name in set(self._store_decls) - set(doc.stores):
            _log.warning("%s: [stores.%s] is no longer declared; it stays open", label, name)
            del self._store_decls[name]

        # 3. policies
        added, changed, removed, not_applied = [], [], [], []
        seen = set()
        for d, code, local in plans:
            table: dict[str, Any] = getattr(self, d.table)
            seen.add((d.table, d.name))
            st = self._target(d)
            old = table.get(d.name)
            was = self._decls.get((d.table, d.name), {})
            if old is None:
                table[d.name] = self._build(label, d, code, local, st)
                added.append(d.where)
            elif was == d.raw and _store_of(old) is st:
                continue
            elif d.table == "guards" and (_store_of(old) is not st
                                          or _own(was, GUARD_LOCAL) != _own(d.raw, GUARD_LOCAL)):
                # a guard holds code (its parts, key function, fallback): a new object
                table[d.name] = self._build(label, d, code, local, st)
                _log.info("%s: [%s] reloaded: a new guard object", label, d.where)
                changed.append(d.where)
            elif d.table == "pools" and (_store_of(old) is not st or _own(was) != _own(d.raw)):
                # a pool holds this process's resources: it is not rebuilt here
                _log.warning("%s: [%s] changed; a pool is this process's own object and is not rebuilt on "
                             "reload: restart the process to apply it", label, d.where)
                not_applied.append(d.where)
                if _store_of(old) is st and code != old._code:
                    _update(old, code, local)  # its shared options apply now all the same
                    changed.append(d.where)
            elif _store_of(old) is not st:
                table[d.name] = self._build(label, d, code, local, st)
                _log.info("%s: [%s] now in %r: a new policy object (the old one keeps its store)",
                          label, d.where, st)
                changed.append(d.where)
            else:
                _update(old, code, local)
                diff = {k: d.raw.get(k, "(default)") for k in {*was, *d.raw} if was.get(k) != d.raw.get(k)}
                _log.info("%s: [%s] reloaded: %s", label, d.where, diff)
                changed.append(d.where)
            if d.where not in not_applied:
                self._decls[(d.table, d.name)] = d.raw

        for key in [k for k in self._decls if k not in seen]:
            _log.warning("%s: [%s.%s] is no longer declared; left as it is (its state and configuration "
                         "stay in the store)", label, *key)
            removed.append(f"{key[0]}.{key[1]}")
            del self._decls[key]
        return Reloaded(tuple(added), tuple(changed), tuple(removed), tuple(not_applied))

    def _build(self, label: str, d: _Decl, code: dict[str, Any], local: dict[str, Any], st: SharedStore) -> Policy:
        try:
            if d.table == "limiters":
                return _build_limiter(st, d.name, code)
            if d.table == "breakers":
                return CircuitBreaker(d.name, store=st, **code, **local)
            if d.table == "pools":
                hl = local["host_limit"]
                cls: Any = AsyncPool if local["async"] else Pool
                own = {k: local[k] for k in POOL_CALLABLES if k in local}
                return cls(name=d.name, store=st, host_limit=self.caps[hl] if isinstance(hl, str) else hl,
                           **own, **code)  # type: ignore[no-any-return]
            if d.table == "counters":
                return Counter(d.name, st)
            if d.table == "guards":
                parts = {p: getattr(self, t)[local[p]] for p, t in GUARD_PARTS.items() if local.get(p) is not None}
                key = local["key_func"] if "key_func" in local else local["key"]
                kw = {"key": key} if key is not None else {}
                rcfg, on = code["retry"], local.get("retry_on")
                retry = None if rcfg is None else Retry(**rcfg, **({"on": on} if on else {}))
                opts = {k: v for k, v in code.items() if k not in ("parts", "retry")}
                return Guard(d.name, store=st, **parts, **kw, fallback=local.get("fallback"), retry=retry, **opts)
            return ConcurrencyLimiter(d.name, store=st, **code, **local)
        except ConfigError as e:  # the name itself, or a pool's own option (shared ones were checked)
            raise _fail(label, d.where, _key_named(str(e), list(d.local)), str(e)) from None

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the pools made here (an AsyncPool's close is awaited by you) and the stores
        opened here ([stores] and a store URL given as store=)."""
        for p in self.pools.values():
            if isinstance(p, Pool):
                p.close()
        for st in self.stores.values():
            st.close()
        if isinstance(self._store_arg, SharedStore) and not isinstance(self._source_store_arg, SharedStore):
            self._store_arg.close()

    def __enter__(self) -> Config:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = [f"{t}={sorted(getattr(self, t))}" for t in ("stores", *_KINDS) if getattr(self, t)]
        return f"<Config {self.path or '<dict>'} {' '.join(parts)}>"


def _own(decl: Mapping[str, Any], local: tuple[str, ...] = POOL_LOCAL) -> dict[str, Any]:
    """A pool's (or a guard's) declaration's options that are this process's own (and its store)."""
    return {k: decl.get(k) for k in (*local, "store")}


def _update(obj: Policy, code: dict[str, Any], local: dict[str, Any]) -> None:
    """A changed declaration applied to the object load_config made: its new code
    configuration is published (the newest wins in every process, as after a deploy) and
    kept as the object's own (what it pickles), with its process-local options."""
    if isinstance(obj, CircuitBreaker):
        obj._init_kwargs.update(code, **local)
        kw = obj._init_kwargs
        obj._set_outcomes(local["record"], local["ignore"], kw["is_failure"], kw["result_is_failure"])
    elif isinstance(obj, ConcurrencyLimiter):
        obj.drop_on = local["drop_on"]
    elif isinstance(obj, Guard):
        code = {**code, "parts": obj._parts}  # its parts are code: as the object has them
    obj._code = code
    obj._entry.publish_code(code)
    obj.config  # noqa: B018 - follow it in this process now, not at the next decision


def load_config(source: Source, store: SharedStore | str | None = None) -> Config:
    """Make the stores, limiters, breakers, caps, pools, counters and guards a TOML file (or a
    dict of the same shape) declares; returns them by name (see Config).

    store: where policies that name no store go when the file declares no
    [stores.default] (a SharedStore or a store URL; default: default_store()).
    Bad files raise ConfigError naming the file, the table and the key."""
    return Config(source, store)


# -- pushing a file into a live store as runtime overrides (sluicegate config apply) -------------
def apply_overrides(source: Source, store: SharedStore | None = None, *, create: bool = False) -> list[str]:
    """Set every policy the file declares as a runtime override in its store: the file's
    options become the policy's whole override (every process follows at its next decision,
    until ``sluicegate config clear``).  The file's stores are attached, never created;
    store is where policies that name none go.  A policy no process has made yet is an
    error unless create=True, which records it with the file's configuration as its code
    configuration and override.  A pool's shared options (size, timeout, ...) apply like
    any policy's; process-local options (record, ignore, drop_on; a pool's create, check,
    close, host_limit, async) are not in the store and are skipped, unimported.
    Everything is checked before anything is set.  Returns one line per policy saying
    what was done."""
    doc = _parse(source)
    label = doc.label
    opened: dict[str, SharedStore] = {}
    notes: list[str] = []

    def target(d: _Decl) -> SharedStore:
        name = d.store if isinstance(d.store, str) else DEFAULT_STORE if DEFAULT_STORE in doc.stores else None
        if isinstance(d.store, SharedStore):
            return d.store
        if name is not None:
            if name not in opened:
                opened[name] = _open(label, name, doc.stores[name], create=False)
            return opened[name]
        if store is None:
            raise _fail(label, d.where, None, "names no store and no store was given "
                                              "(pass --store, or set $SLUICEGATE_STORE)")
        return store

    # (declaration, store, its entry or None when no process has made it, override)
    plans: list[tuple[_Decl, SharedStore, Entry | None, dict[str, Any]]] = []
    missing = []
    try:
        for d in doc.policies:
            kind = _KINDS[d.table]
            st = target(d)
            if not d.shared:
                notes.append(f"[{d.where}] in {st!r}: nothing to apply (no shared options)")
                continue
            try:
                entry: Entry | None = Entry(st, kind.kind, d.name, create=False)
            except PolicyNotFound:
                entry = None
                if not create:
                    missing.append(f"{kind.kind} {d.name!r} in {st!r}")
                    continue
            cur = entry.read()[1] if entry is not None else None
            new = _validated(label, d, effective(cur) if cur else {})
            plans.append((d, st, entry, {k: new[k] for k in d.shared}))
        if missing:
            raise ConfigError(f"{label}: not in the store yet (no process has made them; --create records "
                              f"them from the file): {'; '.join(missing)}")
        for d, st, entry, override in plans:
            recorded = entry is None
            if entry is None:  # recorded from the file: its configuration as code and as override
                entry = Entry(st, _KINDS[d.table].kind, d.name, create=True)
                entry.publish_code(_validated(label, d, {}))
            entry.set_override(override, replace=True)
            shown = ", ".join(f"{k}={v!r}" for k, v in override.items())
            notes.append(f"[{d.where}] in {st!r}: {'recorded; ' if recorded else ''}override {shown}")
    finally:
        for st in opened.values():
            st.close()
    return notes


def kind_table(kind: str) -> str:
    """The file table a directory kind is declared in ("limiter" -> "limiters")."""
    return TABLE_OF_KIND.get(kind, kind)

