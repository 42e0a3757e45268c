"""Pure-Python reference model of the host-wide concurrency cap (the Hypothesis oracle)."""

from __future__ import annotations


class CapModel:
    """Holder records below the limit; AIMD on a shared limit (Netflix concurrency-limits)."""

    def __init__(self, limit: int, nrec: int, min_limit: int, max_limit: int, backoff_1024: int, strict: bool):
        self.nrec = nrec
        self.limit = max(1, min(nrec, max(limit, min_limit)))
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.backoff_1024 = backoff_1024
        self.strict = strict
        self.holders: dict[int, int] = {}  # index -> owner

    def try_acquire(self, owner: int) -> bool:
        if self.strict and self.limit < self.nrec and len(self.holders) >= self.limit:
            return False
        free = [i for i in range(self.limit) if i not in self.holders]
        if not free:
            return False
        self.holders[free[0]] = owner  # the index is the implementation's choice; the model only needs one
        return True

    def release(self, index: int, owner: int) -> bool:
        if self.holders.get(index) == owner:
            del self.holders[index]
            return True
        return False

    def on_success(self, inflight: int) -> int:
        if inflight * 2 >= self.limit and self.limit < self.max_limit and self.limit < self.nrec:
            self.limit += 1
        return self.limit

    def on_drop(self) -> int:
        want = (self.limit * self.backoff_1024) >> 10
        want = max(want, max(1, self.min_limit))
        self.limit = min(want, self.limit)
        return self.limit
