"""The reference models as engines, so that tests can run a policy's front object over
either engine (DESIGN.md "Layers": a policy is a front object that holds an engine).

ModelStore is an anonymous SharedStore (its policy directory is the real one) whose
limiters and breakers decide with the pure-Python models of models_limiter.py and
models_breaker.py under a fake clock, instead of the compiled shm engines.  Each adapter
speaks the engine protocol the fronts use (see policy.py and _core.pyi: LimiterEngine,
BreakerEngine); the models themselves stay the oracles of the Hypothesis tests."""

from __future__ import annotations

from typing import Any

from models_breaker import STATE_NAMES, BreakerModel
from models_limiter import AdaptiveModel, FixedWindowModel, GcraModel, MultiRateModel, SlidingWindowModel

import sluicegate as sg
from sluicegate import _core


class FakeClock:
    """Store time in ns that moves only when told to."""

    def __init__(self, start_ns: int = 10**12) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


class _Watched:
    """The directory-following part every engine has: watch once, then one version read
    per decision, calling on_moved() when it moved."""

    _entry: Any = None
    _seen = 0
    _on_moved: Any = None

    def watch(self, entry: Any, seen: int, on_moved: Any) -> None:
        self._entry, self._seen, self._on_moved = entry, seen, on_moved

    def sync(self) -> None:
        if self._entry is not None and self._entry.version != self._seen:
            self._on_moved()


def _rate_model(algo: int, limit: int, period_ns: int, interval_ns: int) -> Any:
    if algo == _core.ALGO_GCRA:
        return GcraModel(limit, interval_ns)
    if algo == _core.ALGO_FIXED:
        return FixedWindowModel(limit, period_ns)
    return SlidingWindowModel(limit, period_ns)


class ModelLimiterEngine(_Watched):
    """One front's engine; the state (the model, the counts) is the store's, per policy,
    as in shared memory, so every front of one policy in one store shares it."""

    def __init__(self, clock: FakeClock, shared: dict[str, Any]) -> None:
        self.clock = clock
        self.shared = shared

    def configure(self, name: str, specs: list[tuple[int, int, int, int]],
                  adaptive: tuple[int, int, float, float, int] | None = None) -> None:
        if self.shared.get("specs") != (specs, adaptive):  # the model keeps no state across a new rate
            if adaptive is not None:
                model: Any = AdaptiveModel(specs[0][1], *adaptive)
            else:
                models = [_rate_model(*spec) for spec in specs]
                model = models[0] if len(models) == 1 else MultiRateModel(models)
            self.shared.update(specs=(specs, adaptive), model=model)
        self.shared.setdefault("counts", [0, 0])
        self.max_cost = min(limit for _, limit, _, _ in specs)

    @property
    def model(self) -> Any:
        return self.shared["model"]

    def check_cost(self, cost: object) -> int:
        if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= self.max_cost:
            raise sg.ConfigError(f"cost must be a positive int up to {self.max_cost}, got {cost!r}")
        return cost

    def _decide(self, key: Any, cost: int, consume: bool, now: int = 0) -> sg.Decision:
        self.sync()
        self.check_cost(cost)
        d = self.model.decide(key, cost, now or self.clock(), consume)
        if consume:
            self.shared["counts"][0 if d.allowed else 1] += 1
        retry = float("inf") if d.retry_after_ns < 0 else d.retry_after_ns / 1e9
        return sg.Decision(d.allowed, d.limit, d.remaining, retry, d.reset_after_ns / 1e9)

    def allow(self, key: Any, cost: int = 1) -> bool:
        return bool(self._decide(key, cost, True).allowed)

    def check(self, key: Any, cost: int = 1) -> sg.Decision:
        return self._decide(key, cost, True)

    def peek(self, key: Any, cost: int = 1) -> sg.Decision:
        return self._decide(key, cost, False)

    def check_at(self, key: Any, cost: int, now: int) -> sg.Decision:
        return self._decide(key, cost, True, now)

    def reset(self, key: Any) -> None:
        self.sync()
        self.model.reset(key)

    def refund(self, key: Any, cost: int = 1) -> None:
        self.refund_at(key, cost, self.clock())

    def refund_at(self, key: Any, cost: int, at: int) -> None:
        self.sync()
        self.model.refund(key, self.check_cost(cost), at)

    def refund_time(self) -> int:
        return self.clock()

    def feedback(self, ok: bool, now: int = 0) -> int:
        self.sync()
        if not isinstance(self.model, AdaptiveModel):
            raise sg.ConfigError("feedback() applies to an adaptive limiter (algorithm='adaptive')")
        return int(self.model.feedback(ok, now or self.clock()))

    def interval_ns(self) -> int:
        self.sync()
        m = self.model
        return m.interval if isinstance(m, AdaptiveModel) else m.T if isinstance(m, GcraModel) else 0

    def now_ns(self) -> int:
        return self.clock()

    def allow_many(self, keys: Any, cost: int = 1) -> list[bool]:
        return [self.allow(k, cost) for k in keys]

    def counts(self) -> tuple[int, int]:
        allowed, denied = self.shared["counts"]
        return allowed, denied


class ModelBreakerEngine(_Watched):
    """One front's engine over the store's model of the policy (shared by its fronts)."""

    def __init__(self, clock: FakeClock, shared: dict[str, Any]) -> None:
        self.clock = clock
        self.shared = shared

    @property
    def model(self) -> BreakerModel | None:
        return self.shared.get("model")

    def configure(self, cfg: dict[str, Any], rng_seed: int) -> int:
        if self.model is None:
            self.shared["model"] = BreakerModel(dict(cfg), rng_seed)
        else:  # the state and totals carry over; a new window geometry starts afresh
            old = self.model.cfg
            self.model.cfg = dict(cfg)
            if (old["nbuckets"], old["bucket_ns"]) != (cfg["nbuckets"], cfg["bucket_ns"]):
                self.model.__post_init__()
        return self._word()

    def _word(self) -> int:
        m = self.model
        assert m is not None
        return m.state | m.gen << 3 | m.issued << 27 | m.succ << 35 | m.consec << 43

    def _m(self) -> BreakerModel:
        self.sync()
        assert self.model is not None
        return self.model

    def enter(self, now: int = 0) -> tuple[int, int, int, int]:
        m = self._m()
        ticket = m.enter(now or self.clock())
        reason = 0 if ticket else _core.BR_REJECT_REASONS.index(m.last_reason)
        return ticket, reason, m.last_retry_ns, self._word()

    def exit(self, ticket: int, outcome: int, duration_ns: int = 0, now: int = 0) -> int:
        self._m().exit(ticket, outcome, duration_ns, now or self.clock())
        return self._word()

    def now_ns(self) -> int:
        return self.clock()

    def start(self) -> int:
        return self.clock() if self._m().cfg["slow_ns"] else 0

    def give_back(self, ticket: int) -> None:
        self.exit(ticket, _core.BR_IGNORE)

    def poll(self, now: int = 0) -> int:
        self._m().poll(now or self.clock())
        return self._word()

    def set_state(self, target: int, clear: bool = False, now: int = 0) -> int:
        self._m().set_state(STATE_NAMES[target], clear, now or self.clock())
        return self._word()

    def window(self, now: int = 0) -> tuple[int, int, int, int]:
        m = self._m()
        m.poll(now or self.clock())
        return m.window(now or self.clock())

    def totals(self) -> tuple[int, int, int, int, int]:
        return self._m().totals()

    def open_ns(self, consec: int, gen: int) -> int:
        return self._m().open_ns(consec, gen)

    def retry_after_ns(self, now: int = 0) -> int:
        m = self._m()
        now = now or self.clock()
        m.poll(now)
        if m.state != 1:
            return 0
        return max(0, m.phase_ns() + m.open_ns(m.consec, m.gen) - now)

    def degradation(self, now: int = 0) -> tuple[str, int, float] | None:
        return self._m().degradation(now or self.clock())

    def set_faults(self, reject_p32: int, fail_p32: int, latency_p32: int, latency_ns: int) -> None:
        self._m().fault = [reject_p32, fail_p32, latency_p32, latency_ns]

    def get_faults(self) -> tuple[int, int, int, int]:
        f = self._m().fault
        return f[0], f[1], f[2], f[3]

    @property
    def rng_state(self) -> int:
        assert self.model is not None
        return self.model.rng

    @rng_state.setter
    def rng_state(self, v: int) -> None:  # the generator is this process's: no directory read
        assert self.model is not None
        self.model.rng = v or 0x9E3779B97F4A7C15


class ModelStore(sg.SharedStore):
    """An anonymous store whose limiters and breakers decide with the reference models
    under clock (the directory, caps and counters are the real ones)."""

    def __init__(self, clock: FakeClock | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock or FakeClock()
        self._models: dict[tuple[str, str], dict[str, Any]] = {}

    def _engine(self, kind: str, name: str) -> Any:
        shared = self._models.setdefault((kind, name), {})
        if kind == "limiter":
            return ModelLimiterEngine(self.clock, shared)
        if kind == "breaker":
            return ModelBreakerEngine(self.clock, shared)
        return super()._engine(kind, name)
