"""The one at-fork registry: what each module resets in a forked child.

A forked child has one thread and the parent's memory: cached process identities,
locks a parent thread held, per-process pools and random generators must be reset
before the child uses them.  Modules register a reset with after_fork_in_child; the
resets run in registration order (import order), each isolated from the others."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

_resets: list[Callable[[], None]] = []


def after_fork_in_child(fn: Callable[[], None]) -> Callable[[], None]:
    """Run fn in every forked child (a decorator)."""
    _resets.append(fn)
    return fn


def _run() -> None:
    for fn in _resets:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one module's reset must not stop the others'
            logging.getLogger("sluicegate").exception("at-fork reset %r failed in the child", fn)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run)
