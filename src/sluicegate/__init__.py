"""sluicegate: rate limiters, circuit breakers, pools and concurrency caps whose
state lives in shared memory, decided by a lock-free C core, so every worker
process on a host shares one limit and one breaker."""

from __future__ import annotations

try:
    from . import _core  # noqa: F401  (import it first: fail loudly if it is missing)
except ImportError as exc:  # no silent slow path: the C core is the product
    raise ImportError(
        "sluicegate's compiled core (sluicegate._core) is missing or failed to load: "
        f"{exc}. Reinstall from a wheel, or build from source with a C compiler "
        "(pip install --force-reinstall --no-binary sluicegate sluicegate)."
    ) from exc

from ._version import __version__ as __version__
from .async_pool import AsyncLease, AsyncPool
from .breaker import BreakerToken, CircuitBreaker, Degradation
from .concurrency import ConcurrencyLimiter, Permit
from .config import Config, Reloaded, load_config
from .counter import Counter
from .directory import PolicyInfo
from .errors import (
    CallTimeout,
    CircuitOpen,
    ConcurrencyLimitExceeded,
    ConfigError,
    DirectoryFull,
    InjectedFault,
    InvalidKey,
    KeyTypeError,
    MemoryPressure,
    PolicyNotBuildable,
    PolicyNotFound,
    PoolExhausted,
    PoolTimeout,
    RateLimited,
    SluicegateError,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreNotFound,
)
from .guard import Guard, execute_protected, execute_protected_async
from .health import Health, PolicyHealth
from .limiter import Decision, LimiterChain, RateLimiter
from .memory import MemoryMonitor, MemoryReading
from .pool import Lease, Pool, ResourceLeakWarning
from .rates import Rate
from .retry import Retry, RetryBudget
from .store import SharedStore, default_store, open_store
from .telemetry import Event, off, on
from .timeout import deadline, remaining

__all__ = [
    "SharedStore",
    "on",
    "off",
    "Event",
    "RateLimiter",
    "LimiterChain",
    "Rate",
    "Decision",
    "ConcurrencyLimiter",
    "Permit",
    "Counter",
    "Pool",
    "AsyncPool",
    "Lease",
    "AsyncLease",
    "ResourceLeakWarning",
    "default_store",
    "open_store",
    "load_config",
    "Config",
    "Reloaded",
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
    "PolicyInfo",
    "Health",
    "PolicyHealth",
    "RateLimited",
    "CircuitOpen",
    "InjectedFault",
    "MemoryMonitor",
    "MemoryReading",
    "MemoryPressure",
    "CircuitBreaker",
    "BreakerToken",
    "Degradation",
    "PoolExhausted",
    "PoolTimeout",
    "ConcurrencyLimitExceeded",
    "Guard",
    "execute_protected",
    "execute_protected_async",
    "Retry",
    "RetryBudget",
    "CallTimeout",
    "deadline",
    "remaining",
]
