"""Every error sluicegate raises derives from SluicegateError.

Where a builtin exception already names the kind of problem, the sluicegate error
also derives from it (ConfigError is a ValueError, PoolTimeout a TimeoutError), so
callers can catch either."""

from __future__ import annotations


class SluicegateError(Exception):
    """Base class of every error raised by sluicegate."""


class ConfigError(SluicegateError, ValueError):
    """A bad argument: the message names the argument and why."""


class InvalidKey(SluicegateError, ValueError):
    """A key that cannot be used: too long."""


class KeyTypeError(SluicegateError, TypeError):
    """A key of the wrong type (keys are str or bytes)."""


class StoreError(SluicegateError):
    """A store that cannot be created, attached or used: a bad name, a foreign,
    truncated, corrupted or incompatible file."""


class StoreNotFound(StoreError, FileNotFoundError):
    """A named or file-backed store that does not exist."""


class StoreClosed(StoreError):
    """The store, or a policy over it, was used after close()."""


class StoreFull(StoreError):
    """No free or idle slot is left for a new key. The store never answers wrongly
    instead: create it with a larger capacity."""


class DirectoryFull(StoreFull):
    """The store's policy directory has no room for another policy name: create the
    store with a larger policies=."""


class PolicyNotFound(SluicegateError, LookupError):
    """No policy of that name (and kind) in the store's directory."""


class PolicyNotBuildable(SluicegateError):
    """store.policy(name) found the policy, but cannot make a working object from the
    directory alone: a pool's create function is code, not configuration.  Construct it
    in code (it then follows the directory's configuration)."""


class RateLimited(SluicegateError):
    """A rate limit denied the call (raised by acquire on timeout)."""

    def __init__(self, message: str = "rate limited", *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(SluicegateError):
    """The circuit breaker rejected the call."""

    def __init__(self, message: str = "circuit open", *, retry_after: float = 0.0, name: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.name = name


class CallTimeout(SluicegateError, TimeoutError):
    """A call did not return within its timeout (a Guard's ``timeout``, or the deadline
    around it).  ``.timeout`` is the limit that applied, in seconds.  A sync call goes on
    in its worker thread; an async one was cancelled."""

    def __init__(self, message: str = "call timed out", *, timeout: float = 0.0) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry_after = 0.0


class MemoryPressure(SluicegateError):
    """A MemoryMonitor used as a gate refused the call: memory use is at its gate level
    (``.level`` 'critical', or 'warning' with gate='warning'; ``.fraction`` of the limit).
    ``.retry_after`` is the monitor's interval: the earliest a new reading can differ."""

    def __init__(
        self,
        message: str = "memory pressure",
        *,
        level: str = "critical",
        fraction: float = 0.0,
        retry_after: float = 0.0,
        name: str = "",
    ) -> None:
        super().__init__(message)
        self.level = level
        self.fraction = fraction
        self.retry_after = retry_after
        self.name = name


class InjectedFault(SluicegateError):
    """A failure injected by a circuit breaker's fault injection (a chaos test)."""


class PoolExhausted(SluicegateError):
    """A non-blocking checkout found no resource free."""


class PoolTimeout(SluicegateError, TimeoutError):
    """A checkout waited for its timeout without getting a resource."""


class ConcurrencyLimitExceeded(SluicegateError, TimeoutError):
    """A concurrency slot could not be acquired in time."""


__all__ = [
    "SluicegateError",
    "ConfigError",
    "InvalidKey",
    "KeyTypeError",
    "StoreError",
    "StoreNotFound",
    "StoreClosed",
    "StoreFull",
    "DirectoryFull",
    "PolicyNotFound",
    "PolicyNotBuildable",
    "RateLimited",
    "CircuitOpen",
    "MemoryPressure",
    "CallTimeout",
    "InjectedFault",
    "PoolExhausted",
    "PoolTimeout",
    "ConcurrencyLimitExceeded",
]
