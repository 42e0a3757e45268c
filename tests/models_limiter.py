"""Pure-Python reference models of the rate-limit algorithms, in integer ns.

They keep each key's state in its natural, unbounded form (absolute window numbers,
exact rational comparisons) and compute retry_after independently of the C
closed forms: as the smallest wait after which the same call would be admitted,
found by bisection over the model's own admission predicate (admission only
becomes easier as time passes, for every algorithm).  They are the oracle for the
Hypothesis tests in test_limiter_model.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ns: int
    reset_after_ns: int


def _first_admitting_wait(admits, lo: int, hi: int) -> int:
    """Smallest t in [lo, hi] with admits(t); admits is monotone and admits(hi)."""
    assert admits(hi), "model bug: not admitted at the upper bound"
    while lo < hi:
        mid = (lo + hi) // 2
        if admits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


class GcraModel:
    """Token bucket as GCRA: one theoretical arrival time (tat) per key."""

    def __init__(self, burst: int, interval_ns: int) -> None:
        self.burst, self.T = burst, interval_ns
        self.tau = burst * interval_ns
        self.tat: dict[str, int] = {}

    def _used(self, key: str, now: int) -> int:
        tat = self.tat.get(key, 0)
        return min(max(tat, now) - now, self.tau)

    def admits(self, key: str, cost: int, now: int) -> bool:
        return self._used(key, now) + cost * self.T <= self.tau

    def decide(self, key: str, cost: int, now: int, consume: bool) -> MDecision:
        used = self._used(key, now)
        ok = self.admits(key, cost, now)
        if ok and consume:
            need = used + cost * self.T
            self.tat[key] = now + need
            if self.tat[key] % 2**56 == 0:
                # the core keeps tat modulo 2**56 with 0 meaning "fresh": a tat landing
                # exactly on a multiple of 2**56 is kept 1 ns earlier (documented quirk)
                self.tat[key] -= 1
            return MDecision(True, self.burst, (self.tau - need) // self.T, 0, need)
        retry = 0 if ok else _first_admitting_wait(lambda t: self.admits(key, cost, now + t), 0, self.tau + 1)
        return MDecision(ok, self.burst, (self.tau - used) // self.T, retry, used)

    def refund(self, key: str, cost: int, now: int) -> None:
        if key in self.tat:
            self.tat[key] = max(self.tat[key] - cost * self.T, 0)
            if self.tat[key] > now and self.tat[key] % 2**56 == 0:
                self.tat[key] -= 1

    def reset(self, key: str) -> None:
        self.tat.pop(key, None)


class AdaptiveModel:
    """An adaptive token bucket: GCRA whose interval moves by AIMD on feedback, as
    sg_adaptive_feedback computes it (the same float steps, truncated to whole ns)."""

    def __init__(self, burst: int, interval_min: int, interval_max: int, increase: float, decrease: float,
                 cooldown_ns: int) -> None:
        self.gcra = GcraModel(burst, interval_min)  # tau stays burst * interval_min: the same time
        self.lo, self.hi, self.increase, self.decrease, self.cooldown = (
            interval_min, interval_max, increase, decrease, cooldown_ns)
        self.last_cut = 0

    @property
    def interval(self) -> int:
        return self.gcra.T

    def _set(self, rate: float) -> None:
        t = 1e9 / rate
        self.gcra.T = self.lo if t <= self.lo else self.hi if t >= self.hi else int(t)

    def feedback(self, ok: bool, now: int) -> int:
        rate = 1e9 / self.gcra.T
        if ok:
            self._set(rate + self.increase / rate)
        elif not (self.last_cut and (now < self.last_cut or now - self.last_cut < self.cooldown)):
            self.last_cut = now or 1
            self._set(rate * self.decrease)
        return self.gcra.T

    def decide(self, key: str, cost: int, now: int, consume: bool) -> MDecision:
        g = self.gcra
        if cost * g.T > g.tau:  # never admitted at this rate
            used = g._used(key, now)
            return MDecision(False, g.burst, (g.tau - used) // g.T, -1, used)
        return g.decide(key, cost, now, consume)

    def refund(self, key: str, cost: int, now: int) -> None:
        self.gcra.refund(key, cost, now)

    def reset(self, key: str) -> None:
        self.gcra.reset(key)


class FixedWindowModel:
    """Fixed window: (window number, count) per key."""

    def __init__(self, limit: int, period_ns: int) -> None:
        self.limit, self.P = limit, period_ns
        self.state: dict[str, tuple[int, int]] = {}

    def _count(self, key: str, now: int) -> int:
        win, cnt = self.state.get(key, (-1, 0))
        return cnt if win == now // self.P else 0

    def admits(self, key: str, cost: int, now: int) -> bool:
        return self._count(key, now) + cost <= self.limit

    def decide(self, key: str, cost: int, now: int, consume: bool) -> MDecision:
        w = now // self.P
        cnt = self._count(key, now)
        left = max(self.limit - cnt, 0)
        to_end = (w + 1) * self.P - now
        ok = cost <= left
        if ok and consume:
            self.state[key] = (w, cnt + cost)
            return MDecision(True, self.limit, left - cost, 0, to_end)
        retry = 0 if ok else _first_admitting_wait(lambda t: self.admits(key, cost, now + t), 0, to_end)
        return MDecision(ok, self.limit, left, retry, to_end if cnt else 0)

    def refund(self, key: str, cost: int, now: int) -> None:
        win, cnt = self.state.get(key, (-1, 0))
        if win == now // self.P:
            self.state[key] = (win, cnt - min(cnt, cost))

    def reset(self, key: str) -> None:
        self.state.pop(key, None)


class SlidingWindowModel:
    """Sliding window counter: estimate = prev * (P - elapsed) / P + cur."""

    def __init__(self, limit: int, period_ns: int) -> None:
        self.limit, self.P = limit, period_ns
        self.state: dict[str, tuple[int, int, int]] = {}

    def _counts(self, key: str, now: int) -> tuple[int, int]:
        w = now // self.P
        win, prev, cur = self.state.get(key, (-10, 0, 0))
        if win == w:
            return prev, cur
        if win == w - 1:
            return cur, 0
        return 0, 0

    def _scaled_used(self, key: str, now: int) -> int:
        """estimate * P, exactly."""
        prev, cur = self._counts(key, now)
        elapsed = now % self.P
        return prev * (self.P - elapsed) + cur * self.P

    def admits(self, key: str, cost: int, now: int) -> bool:
        return self._scaled_used(key, now) + cost * self.P <= self.limit * self.P

    def decide(self, key: str, cost: int, now: int, consume: bool) -> MDecision:
        P, L = self.P, self.limit
        w, elapsed = divmod(now, P)
        prev, cur = self._counts(key, now)
        used = self._scaled_used(key, now)
        ok = self.admits(key, cost, now)
        if ok and consume:
            self.state[key] = (w, prev, cur + cost)
            return MDecision(True, L, (L * P - used - cost * P) // P, 0, (P - elapsed) + P)
        retry = 0 if ok else _first_admitting_wait(lambda t: self.admits(key, cost, now + t), 0, 2 * P)
        reset = (P - elapsed) + P if cur else (P - elapsed if prev else 0)
        return MDecision(ok, L, max(L * P - used, 0) // P, retry, reset)

    def refund(self, key: str, cost: int, now: int) -> None:
        w = now // self.P
        win, prev, cur = self.state.get(key, (-10, 0, 0))
        if win == w:
            self.state[key] = (win, prev, cur - min(cur, cost))

    def reset(self, key: str) -> None:
        self.state.pop(key, None)


class MultiRateModel:
    """Several rates on one key, all-or-nothing, reporting like the core does:
    allowed -> the tightest rate (least remaining; ties: the longest reset_after);
    denied on consume -> the first denying rate (earlier rates are refunded);
    denied on peek -> the denying rate with the longest retry_after (first on ties)."""

    def __init__(self, models: list) -> None:
        self.models = models

    def decide(self, key: str, cost: int, now: int, consume: bool) -> MDecision:
        best: MDecision | None = None
        for i, m in enumerate(self.models):
            d = m.decide(key, cost, now, consume)
            if d.allowed:
                if (
                    best is None
                    or d.remaining < best.remaining
                    or (d.remaining == best.remaining and d.reset_after_ns > best.reset_after_ns)
                ):
                    best = d
                continue
            if consume:
                for j in range(i):
                    self.models[j].refund(key, cost, now)
                return d
            for m2 in self.models[i + 1 :]:
                e = m2.decide(key, cost, now, False)
                if not e.allowed and e.retry_after_ns > d.retry_after_ns:
                    d = e
            return d
        assert best is not None
        return best

    def refund(self, key: str, cost: int, now: int) -> None:
        for m in self.models:
            m.refund(key, cost, now)

    def reset(self, key: str) -> None:
        for m in self.models:
            m.reset(key)
