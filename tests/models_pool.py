"""Pure-Python reference model of a Pool's resource choice (lifo / fifo / round_robin /
least_used, size + overflow), used as the Hypothesis oracle; and the fake clock the
pool tests drive lifetimes with."""

from __future__ import annotations


class Clock:
    """A fake monotonic clock: tests move t by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class PoolModel:
    def __init__(self, size: int, max_overflow: int, strategy: str) -> None:
        self.max = size + max_overflow
        self.strategy = strategy
        self.idle: list[int] = []  # in return order
        self.out: set[int] = set()
        self.uses: dict[int, int] = {}
        self.next_id = 1
        self.rr = 0

    @property
    def total(self) -> int:
        return len(self.idle) + len(self.out)

    def checkout(self) -> int | None:
        """The resource id handed out, or None when exhausted."""
        if self.idle:
            if self.strategy == "lifo":
                r = self.idle.pop()
            elif self.strategy == "fifo":
                r = self.idle.pop(0)
            elif self.strategy == "least_used":
                r = min(self.idle, key=lambda i: (self.uses[i], i))
                self.idle.remove(r)
            else:
                after = [i for i in self.idle if i >= self.rr]
                r = min(after or self.idle)
                self.rr = r + 1
                self.idle.remove(r)
        elif self.total < self.max:
            r = self.next_id
            self.next_id += 1
            self.uses[r] = 0
        else:
            return None
        self.uses[r] += 1
        self.out.add(r)
        return r

    def give_back(self, r: int) -> None:
        self.out.remove(r)
        self.idle.append(r)

    def discard(self, r: int) -> None:
        self.out.remove(r)
