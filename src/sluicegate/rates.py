"""Rate: a limit per period, and the parser for "5/minute", "100 per second",
"10/30s", "2 per 500ms" and friends."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Union

from .errors import ConfigError

_NS_PER_UNIT: dict[str, int] = {}
for _names, _ns in (
    (("ns", "nanosecond", "nanoseconds"), 1),
    (("us", "microsecond", "microseconds"), 1_000),
    (("ms", "millisecond", "milliseconds", "msec", "msecs"), 1_000_000),
    (("s", "sec", "secs", "second", "seconds"), 1_000_000_000),
    (("m", "min", "mins", "minute", "minutes"), 60_000_000_000),
    (("h", "hr", "hrs", "hour", "hours"), 3_600_000_000_000),
    (("d", "day", "days"), 86_400_000_000_000),
    (("w", "wk", "week", "weeks"), 604_800_000_000_000),
):
    for _n in _names:
        _NS_PER_UNIT[_n] = _ns

_RATE_RE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|per\b)\s*(?P<count>\d+(?:\.\d*)?|\.\d+)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE,
)

#: the longest period a Rate may have (about 10 years): keeps store-time arithmetic far from 2**56 ns
MAX_PERIOD_NS = 10 * 366 * 86_400_000_000_000


class Rate:
    """limit calls per period seconds.  Rate(5, 60) == Rate.parse("5/minute").

    The period is kept exactly in integer nanoseconds (period_ns)."""

    __slots__ = ("limit", "period_ns")

    limit: int
    period_ns: int

    def __init__(self, limit: int, period: float) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ConfigError(f"rate limit must be a positive int, got {limit!r}")
        if limit < 1:
            raise ConfigError(f"rate limit must be a positive int, got {limit}")
        if isinstance(period, bool) or not isinstance(period, (int, float)):
            raise ConfigError(f"rate period must be a positive number of seconds, got {period!r}")
        if not math.isfinite(period) or period <= 0:
            raise ConfigError(f"rate period must be a positive number of seconds, got {period!r}")
        ns = int(period) * 1_000_000_000 if isinstance(period, int) else round(Decimal(repr(period)) * 10**9)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period_ns", self._check_ns(int(ns), repr(period)))

    @staticmethod
    def _check_ns(ns: int, shown: str) -> int:
        if ns < 1:
            raise ConfigError(f"rate period must be at least 1 ns, got {shown}")
        if ns > MAX_PERIOD_NS:
            raise ConfigError(f"rate period must be at most 10 years, got {shown}")
        return ns

    @classmethod
    def _from_ns(cls, limit: int, period_ns: int) -> Rate:
        r = cls.__new__(cls)
        object.__setattr__(r, "limit", limit)
        object.__setattr__(r, "period_ns", period_ns)
        return r

    @property
    def period(self) -> float:
        """The period in seconds."""
        return self.period_ns / 1e9

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse "5/minute", "5 per minute", "100/second", "10/30s", "10/5m",
        "2 per 500ms", "1000/hour", "3/day", "10 per 2 minutes"."""
        if not isinstance(text, str):
            raise ConfigError(f"rate must be a str, a Rate or a list of them, not {type(text).__name__}")
        m = _RATE_RE.match(text)
        if not m:
            raise ConfigError(f"rate {text!r} does not parse; expected e.g. '5/minute', '100 per second', '10/30s'")
        unit = m.group("unit").lower()
        if unit not in _NS_PER_UNIT:
            raise ConfigError(f"rate {text!r} has an unknown time unit {m.group('unit')!r}")
        limit = int(m.group("limit"))
        if limit < 1:
            raise ConfigError(f"rate {text!r}: the limit must be positive")
        try:
            count = Decimal(m.group("count")) if m.group("count") else Decimal(1)
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ConfigError(f"rate {text!r} does not parse") from None
        if count <= 0:
            raise ConfigError(f"rate {text!r}: the period must be positive")
        ns = count * _NS_PER_UNIT[unit]
        if ns != ns.to_integral_value():
            raise ConfigError(f"rate {text!r}: the period is not a whole number of nanoseconds")
        return cls._from_ns(limit, cls._check_ns(int(ns), repr(text)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Rate is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return self.limit == other.limit and self.period_ns == other.period_ns

    def __hash__(self) -> int:
        return hash((self.limit, self.period_ns))

    def __reduce__(self) -> tuple[object, ...]:
        return (Rate._from_ns, (self.limit, self.period_ns))

    def __str__(self) -> str:
        for unit, ns in (("day", 86_400 * 10**9), ("hour", 3_600 * 10**9), ("minute", 60 * 10**9),
                         ("second", 10**9), ("ms", 10**6)):
            if self.period_ns % ns == 0:
                k = self.period_ns // ns
                return f"{self.limit}/{unit}" if k == 1 else f"{self.limit}/{k}{'ms' if unit == 'ms' else unit[0]}"
        return f"{self.limit}/{self.period_ns}ns"

    def __repr__(self) -> str:
        return f"Rate({self.limit}, {self.period!r})"


RateSpec = Union[str, Rate, Sequence[Union[str, Rate]]]


def parse_rates(rate: RateSpec) -> list[Rate]:
    """A rate string, a Rate, or a non-empty list of them -> [Rate, ...]."""
    if isinstance(rate, (str, Rate)):
        items: list[str | Rate] = [rate]
    elif isinstance(rate, (list, tuple)):
        items = list(rate)
        if not items:
            raise ConfigError("rate must not be an empty list")
    else:
        raise ConfigError(f"rate must be a str, a Rate or a list of them, not {type(rate).__name__}")
    out: list[Rate] = []
    for item in items:
        if isinstance(item, Rate):
            out.append(item)
        elif isinstance(item, str):
            out.append(Rate.parse(item))
        else:
            raise ConfigError(f"rate items must be str or Rate, not {type(item).__name__}")
    if len(out) > 64:
        raise ConfigError(f"rate may hold at most 64 rates, got {len(out)}")
    return out


__all__ = ["Rate", "RateSpec", "parse_rates"]
