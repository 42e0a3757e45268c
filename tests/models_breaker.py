"""Pure-Python reference model of the shared circuit breaker (csrc/sg_breaker.c).

Single-process and driven by a fake clock: it is the oracle the Hypothesis state
machine compares the C core against, step by step.  It is written from the
specification (the rules in the module docstring of sluicegate.breaker and the
comments of sg_breaker.h), with exact integer arithmetic, and shares no code with
the core except the configuration dict it is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

M64 = (1 << 64) - 1
M24 = (1 << 24) - 1
MS = 1_000_000
P32_ONE = 1 << 32

CLOSED, OPEN, HALF_OPEN, DEGRADED, FORCED_OPEN, DISABLED = range(6)
STATE_NAMES = ("closed", "open", "half_open", "degraded", "forced_open", "disabled")
SUCCESS, FAILURE, IGNORE = 0, 1, 2
REASONS = ("", "open", "forced_open", "half_open", "degraded", "adaptive", "injected")

T_PROBE = 1 << 24
T_INJECT_FAIL = 1 << 25
T_INJECT_LATENCY = 1 << 26
T_ADMITTED = 1 << 27
BUCKET_MAX = (1 << 28) - 1


def mix(x: int) -> int:
    """splitmix64 finaliser."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


@dataclass
class Bucket:
    gen: int = 0
    epoch: int = 0
    count: int = 0


@dataclass
class BreakerModel:
    cfg: dict[str, Any]
    rng: int
    state: int = CLOSED
    gen: int = 0
    issued: int = 0
    succ: int = 0
    consec: int = 0
    phase_gen: int = 0
    phase_ms: int = 0
    transitions: int = 0
    stats: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # calls, failures, slow, rejections
    fault: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # reject, fail, latency p32, latency ns
    buckets: list[list[Bucket]] = field(default_factory=list)
    epochs: list[int | None] = field(default_factory=list)  # per bucket: the newest epoch written
    last_reason: str = ""
    last_retry_ns: int = 0

    def __post_init__(self) -> None:
        self.buckets = [[Bucket() for _ in range(4)] for _ in range(self.cfg["nbuckets"])]
        self.epochs = [None] * self.cfg["nbuckets"]
        if not self.rng:
            self.rng = 0x9E3779B97F4A7C15

    # ---- helpers -------------------------------------------------------------
    def draw(self) -> int:
        x = self.rng
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        self.rng = x
        return x >> 32

    def open_ns(self, consec: int, gen: int) -> int:
        c = self.cfg
        d = c["reset_ns"]
        if c["backoff_milli"] > 1000:
            for _ in range(1, consec):
                d = d * c["backoff_milli"] // 1000
                if d >= c["max_reset_ns"]:
                    break
        d = min(d, c["max_reset_ns"])
        if c["jitter_ppm"]:
            j = d * c["jitter_ppm"] // 1_000_000
            d = d - j + mix(c["seed"] ^ (gen & M24)) % (2 * j + 1)
        return d

    def phase_ns(self) -> int:
        assert self.phase_gen == self.gen, "the phase word always belongs to the current generation"
        return self.phase_ms * MS

    def move(self, state: int, consec: int, now: int) -> None:
        """A transition: new generation, permits cleared, phase restarted."""
        if state != self.state:
            self.transitions += 1
        self.state, self.gen, self.issued, self.succ = state, self.gen + 1, 0, 0
        self.consec = min(consec, 255)
        self.phase_gen, self.phase_ms = self.gen, now // MS

    def epoch(self, now: int) -> int:
        return now // self.cfg["bucket_ns"]

    def claim(self, now: int) -> bool:
        """Take now's bucket for now's epoch.  False if it already holds a newer epoch:
        a result at now is then at least a window late, and is dropped.  (The C core
        also takes back a bucket a window ahead of the store clock, when its caller's
        time is that clock: the clock went back.  The model's fake clock never is.)"""
        e = self.epoch(now)
        i = e % self.cfg["nbuckets"]
        newest = self.epochs[i]
        if newest is not None and newest > e:
            return False
        self.epochs[i] = e
        return True

    def bucket_add(self, k: int, now: int) -> None:
        e = self.epoch(now)
        b = self.buckets[e % self.cfg["nbuckets"]][k]
        if b.gen == self.gen and b.epoch == e:
            b.count = min(b.count + 1, BUCKET_MAX)
        else:
            b.gen, b.epoch, b.count = self.gen, e, 1

    def window(self, now: int) -> tuple[int, int, int, int]:
        e, nb = self.epoch(now), self.cfg["nbuckets"]
        # the window ends at the newest epoch written if that is less than a window
        # ahead of now's (a report from a process that read its clock earlier)
        top = max([e] + [x for x in self.epochs if x is not None and 0 < x - e < nb])
        out = [0, 0, 0, 0]
        for newest, row in zip(self.epochs, self.buckets):
            if newest is None or not 0 <= top - newest < nb:
                continue
            for k, b in enumerate(row):
                if b.gen == self.gen and b.epoch == newest:
                    out[k] += b.count
        return out[0], out[1], out[2], out[3]

    # ---- lazy transitions ---------------------------------------------------------
    def poll(self, now: int) -> None:
        c = self.cfg
        while True:
            if self.state == OPEN:
                if now < self.phase_ns() + self.open_ns(self.consec, self.gen):
                    return
                self.move(HALF_OPEN, self.consec, now)
            elif self.state == HALF_OPEN:
                if self.issued < c["half_open_calls"] or now < self.phase_ns() + c["probe_timeout_ns"]:
                    return
                self.move(HALF_OPEN, self.consec, now)  # restart the round: not a state change
            elif self.state == DEGRADED:
                if self.succ:  # degraded by severity: left by results, not by time
                    return
                if now < self.phase_ns() + len(c["levels_p32"]) * c["level_ns"]:
                    return
                self.move(CLOSED, 0, now)
            else:
                return

    def degradation(self, now: int) -> tuple[str, int, float] | None:
        """(cause, level 1 light .. 3 heavy, admitted) while degraded, else None."""
        c = self.cfg
        self.poll(now)
        if self.state != DEGRADED:
            return None
        if self.succ:
            sev = c["severity_p32"]
            lv = min(self.succ, len(sev))
            return ("severity", lv, sev[lv - 1] / 2**32)
        levels = c["levels_p32"]
        if not levels:
            return ("recovery", 1, 1.0)
        step = min(max(0, now - self.phase_ns()) // c["level_ns"], len(levels) - 1)
        return ("recovery", len(levels) - step, levels[step] / 2**32)

    def state_at(self, now: int) -> str:
        self.poll(now)
        return STATE_NAMES[self.state]

    # ---- enter / exit -------------------------------------------------------------
    def enter(self, now: int) -> int:
        c = self.cfg
        self.poll(now)
        self.last_reason, self.last_retry_ns = "", 0
        if self.state == DISABLED:
            return T_ADMITTED | self.gen
        if self.fault[0] and self.draw() < self.fault[0]:
            return self._reject("injected", 0)
        g = self.gen
        if self.state == OPEN:
            until = self.phase_ns() + self.open_ns(self.consec, g)
            return self._reject("open", max(0, until - now))
        if self.state == FORCED_OPEN:
            return self._reject("forced_open", c["reset_ns"])
        if self.state == HALF_OPEN:
            if self.issued == 0 or (  # the round's first permit restarts it: phase = now
                self.issued < c["half_open_calls"] and now >= self.phase_ns() + c["probe_timeout_ns"]
            ):
                self.move(HALF_OPEN, self.consec, now)
                self.issued = 1
                return self._admitted(T_ADMITTED | T_PROBE | self.gen)
            if self.issued < c["half_open_calls"]:
                self.issued += 1
                return self._admitted(T_ADMITTED | T_PROBE | g)
            end = self.phase_ns() + c["probe_timeout_ns"]
            return self._reject("half_open", max(0, end - now))
        if self.state == DEGRADED and self.succ:
            sev = c["severity_p32"]
            if self.draw() < sev[min(self.succ, len(sev)) - 1]:
                return self._admitted(T_ADMITTED | g)
            return self._reject("degraded", c["bucket_ns"] - now % c["bucket_ns"])
        if self.state == DEGRADED:
            t0 = self.phase_ns()
            levels = c["levels_p32"]
            lvl = min(max(0, now - t0) // c["level_ns"], len(levels) - 1)
            if self.draw() < levels[lvl]:
                return self._admitted(T_ADMITTED | g)
            return self._reject("degraded", max(0, t0 + (lvl + 1) * c["level_ns"] - now))
        # closed
        if c["adaptive"]:
            calls, failures, _slow, rejected = self.window(now)
            n, acc = calls + rejected, calls - min(failures, calls)
            num, kacc = n * 1000, acc * c["adaptive_k_milli"]
            if num > kacc:
                pr = min(((num - kacc) << 32) // ((n + 1) * 1000), c["adaptive_max_p32"])
                if pr and self.draw() < pr:
                    if self.claim(now):
                        self.bucket_add(3, now)
                    return self._reject("adaptive", c["bucket_ns"] - now % c["bucket_ns"])
        return self._admitted(T_ADMITTED | g)

    def _admitted(self, ticket: int) -> int:
        if self.fault[1] and self.draw() < self.fault[1]:
            ticket |= T_INJECT_FAIL
        if self.fault[2] and self.draw() < self.fault[2]:
            ticket |= T_INJECT_LATENCY
        return ticket

    def _reject(self, reason: str, retry_ns: int) -> int:
        self.stats[3] += 1
        self.last_reason, self.last_retry_ns = reason, retry_ns
        return 0

    def should_trip(self, now: int, failed: bool) -> bool:
        c = self.cfg
        rates = c["failure_rate_ppm"] or c["slow_rate_ppm"]
        # (The core also declines to judge when a result was recorded a window or more
        # after `now` at a time its store clock has reached: the caller stalled.  The
        # model's fake clock runs far ahead of a fresh store's clock, so that never
        # applies here; tests/test_breaker.py covers it with times behind the store clock.)
        calls, failures, slow, _ = self.window(now)
        if failed and c["failure_threshold"] and failures >= c["failure_threshold"]:
            return True
        if not rates or calls < c["minimum_calls"]:
            return False
        if c["failure_rate_ppm"] and failures * 1_000_000 >= c["failure_rate_ppm"] * calls:
            return True
        return bool(c["slow_rate_ppm"] and slow * 1_000_000 >= c["slow_rate_ppm"] * calls)

    def exit(self, ticket: int, outcome: int, duration_ns: int, now: int) -> None:
        c = self.cfg
        if not ticket & T_ADMITTED:
            return
        g = ticket & M24
        failed, counted = outcome == FAILURE, outcome != IGNORE
        slow = counted and bool(c["slow_ns"]) and duration_ns >= c["slow_ns"]
        if counted:
            self.stats[0] += 1
            self.stats[1] += failed
            self.stats[2] += slow
        if self.gen != g:
            return  # admitted before the last transition
        if self.state == HALF_OPEN:
            if not ticket & T_PROBE:
                return
            if not counted:
                self.issued = max(0, self.issued - 1)
            elif failed or slow:
                self.move(OPEN, self.consec + 1, now)
            elif self.succ + 1 >= c["half_open_calls"]:
                if c["levels_p32"]:
                    self.move(DEGRADED, self.consec, now)
                else:
                    self.move(CLOSED, 0, now)
            else:
                self.succ += 1
            return
        if self.state in (OPEN, FORCED_OPEN) or not counted:
            return
        if not self.claim(now):
            return  # at least a window late: in no window any more
        self.bucket_add(0, now)
        if failed:
            self.bucket_add(1, now)
        if slow:
            self.bucket_add(2, now)
        if self.state == DISABLED:
            return
        if self.should_trip(now, failed):
            self.move(OPEN, self.consec + 1, now)
        elif c.get("degrade_ppm") and (self.state == CLOSED or self.succ):
            self.judge_severity(now)

    def severity(self, now: int, cur: int) -> int:
        """The level the window says (0: closed); too few calls keep cur."""
        c = self.cfg
        calls, failures, _, _ = self.window(now)
        if calls < c["minimum_calls"] or calls == 0:
            return cur
        r = failures * 1_000_000 // calls
        if r < (c["recover_ppm"] if cur else c["degrade_ppm"]):
            return 0
        if r < c["degrade_ppm"]:
            return 1
        n = len(c["severity_p32"])
        top = c["failure_rate_ppm"] or 1_000_000
        return min((r - c["degrade_ppm"]) * n // (top - c["degrade_ppm"]) + 1, n)

    def judge_severity(self, now: int) -> None:
        """Closed <-> degraded levels, in the same generation (the window goes on)."""
        cur = self.succ if self.state == DEGRADED else 0
        lv = self.severity(now, cur)
        if lv == cur:
            return
        if cur and lv:
            self.succ = lv
            return
        self.transitions += 1
        self.state, self.succ = (DEGRADED, lv) if lv else (CLOSED, 0)
        if not lv:
            self.consec = 0
        self.phase_gen, self.phase_ms = self.gen, now // MS

    # ---- admin ------------------------------------------------------------------------
    def set_state(self, name: str, clear: bool, now: int) -> None:
        target = STATE_NAMES.index(name)
        if self.state == target and not clear and target != CLOSED:
            return
        self.move(target, 0 if target == CLOSED else self.consec, now)
        if clear:
            self.stats = [0, 0, 0, 0]
            self.transitions = 0

    def state_word(self) -> tuple[str, int, int, int, int]:
        return (STATE_NAMES[self.state], self.gen, self.issued, self.succ, self.consec)

    def totals(self) -> tuple[int, int, int, int, int]:
        s = self.stats
        return (s[0], s[1], s[2], s[3], self.transitions)
