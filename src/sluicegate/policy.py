"""The shape every policy shares: an identity (its kind and its name), a directory
entry, and the configuration it follows (DESIGN.md rules 7 and 8).

A policy class (RateLimiter, CircuitBreaker, ConcurrencyLimiter) is a front object over
an engine, the thing that decides, which the store supplies (``store._engine(kind,
name)``: the compiled shm engines, the reference models in tests/, later Redis).  The
class says three things: KIND, its one validator of shared options (_validate), and how
to apply a validated configuration to its engine (_apply).  This mixin does the rest,
once: taking the engine, registering the code's configuration, following the directory
when a decision finds its version moved, reconfigure(), and config.

Every engine follows the directory the same way: ``engine.watch(dir_entry, version,
on_moved)`` once, then each decision loads the entry's version word and calls
``on_moved()`` (this mixin's _follow_directory) before deciding when it moved;
``engine.sync()`` does the same check outside a decision."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from . import telemetry
from .directory import ATTACHING, Entry, effective
from .errors import ConfigError, PolicyNotFound
from .store import SharedStore

_log = logging.getLogger("sluicegate.policy")


class Policy:
    KIND: ClassVar[str]
    _engine: Any  # the store's engine for this kind: it decides
    _entry: Entry
    _code: dict[str, Any]  # what this process's code says (pickled; the directory may say more)
    _options: dict[str, Any]  # the shared configuration in effect here

    # -- what each policy says ---------------------------------------------------------------
    @staticmethod
    def _validate(cfg: dict[str, Any]) -> dict[str, Any]:
        """The kind's one validator: raises ConfigError naming the option, returns the
        configuration in the form the directory keeps (every shared option, JSON values)."""
        raise NotImplementedError

    def _apply(self, cfg: dict[str, Any]) -> None:
        """Configure the engine with a validated configuration (state carries over)."""
        raise NotImplementedError

    def _watch_version(self, version: int) -> None:
        """Tell the engine the directory version it now follows."""
        self._engine.watch(self._entry.dir_entry, version, self._follow_directory)

    def _sync(self) -> None:
        """Follow the directory now if its version moved (the engine's one load)."""
        self._engine.sync()

    # -- the shared part -------------------------------------------------------------------
    def _register(self, store: SharedStore, name: str, code: dict[str, Any]) -> None:
        """Take the store's engine, record this process's code configuration (the newest
        wins) and follow the directory's effective one."""
        self._engine = store._engine(self.KIND, name)
        self._own_listeners: telemetry.Listeners | None = None
        self._code = code
        self._entry = Entry(store, self.KIND, name)
        if ATTACHING.get():  # built from the directory (store.policy): follow, publish nothing
            version, found = self._entry.read()
            if found is None:
                raise PolicyNotFound(f"{self._entry.what}: its directory entry has no configuration")
            doc = found
            self._code = doc["code"]
        else:
            version, doc = self._entry.publish_code(code)
        self._follow(effective(doc), version)
        telemetry.register(self)
        self._refresh_events()

    def _follow(self, cfg: dict[str, Any], version: int) -> None:
        cfg = self._validate(cfg)
        self._apply(cfg)
        self._options = cfg
        self._watch_version(version)

    def _follow_directory(self) -> None:
        """Called by a decision that found the directory's version moved."""
        version, doc = self._entry.read()
        try:
            assert doc is not None
            self._follow(effective(doc), version)
        except Exception:  # a configuration this process cannot use: keep the last one
            _log.exception("%s: cannot follow configuration version %d; keeping %s",
                           self._entry.what, version, self._options)
            self._watch_version(version)

    # -- one stats() shape for every policy ----------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """{"kind": KIND, "name": the policy's name, **self._readings()}: one flat dict for
        every policy, so one exporter, CLI or health probe reads them all alike."""
        return {"kind": self.KIND, "name": self.name, **self._readings()}  # type: ignore[attr-defined]

    def _readings(self) -> dict[str, Any]:
        """The kind's readings now, for stats(): a flat dict of str keys to JSON scalars
        (int, float, bool, str or None; no nested containers), without "kind" or "name".
        Counts are cumulative totals; a configuration value belongs here only where it
        reads the others (a pool's size beside its total).  The docstring says whether
        they are this process's (a Pool's) or every process's (a Counter's)."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """The shared configuration in effect: the directory's (code, or a runtime override)."""
        self._sync()
        return dict(self._options)

    def reconfigure(self, **options: Any) -> None:
        """Change this policy in every process, at each one's next decision, until
        reconfigure() with no options clears the override (the code's configuration
        applies again).  The options are the constructor's shared ones; they are checked
        before anything is published."""
        if options:
            _, doc = self._entry.read()
            assert doc is not None
            new = self._validate({**effective(doc), **options})
            options = {k: new[k] for k in options}
        version, doc = self._entry.set_override(options or None)
        self._follow(effective(doc), version)

    # -- telemetry events (telemetry.py) ------------------------------------------------------
    EVENT_PREFIX: ClassVar[str]  # this kind's events: "rate.", "breaker.", "cap.", "pool."

    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        """Give the engine-facing front its flags (one per event of this kind)."""
        self._event_flags = flags

    def _refresh_events(self) -> None:
        own = getattr(self, "_own_listeners", None)
        self._set_event_flags({e: telemetry.wanted(e, own, self.KIND)
                               for e in telemetry.EVENTS if e.startswith(self.EVENT_PREFIX)})

    def _emit(self, event: str, **measurements: Any) -> None:
        telemetry.emit(self.KIND, self.name, event,  # type: ignore[attr-defined]
                       getattr(self, "_own_listeners", None), **measurements)

    def on(self, event: str, listener: telemetry.Listener) -> telemetry.Listener:
        """Call listener(Event) for this policy's events matching event (e.g. 'rate.denied',
        '*'), in this process.  Returns listener."""
        if event != "*" and not event.startswith(self.EVENT_PREFIX):
            raise ConfigError(f"{self._entry.what} emits {self.EVENT_PREFIX}* events, not {event!r}")
        if self._own_listeners is None:
            self._own_listeners = telemetry.Listeners()
        self._own_listeners.add(event, listener)
        self._refresh_events()
        return listener

    def off(self, event: str, listener: telemetry.Listener) -> None:
        """Stop calling listener for event (as given to on); no error if it was not."""
        if self._own_listeners is not None:
            self._own_listeners.remove(event, listener)
        self._refresh_events()
