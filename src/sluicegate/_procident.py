"""Who holds a permit: a process identity that survives pid reuse.

An owner word is [pid:22 | start:42], where start is the process start time
(clock ticks since boot from /proc/<pid>/stat field 22 on Linux, epoch seconds from
`ps -o lstart` elsewhere).  A pid that was reused by a new process has another
start time, so it is never mistaken for the old holder."""

from __future__ import annotations

import os
import sys
import time

PID_BITS = 22
START_BITS = 42
START_MASK = (1 << START_BITS) - 1
_LINUX = sys.platform.startswith("linux")

_owner: int = 0


def process_start(pid: int) -> int | None:
    """Start time of a live process, or None if it does not exist or is a zombie."""
    if _LINUX:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            return None
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
            return None
        return int(fields[19])
    import subprocess  # only off Linux

    try:
        out = subprocess.run(
            ["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    stat, _, lstart = out.partition(" ")
    if stat.startswith("Z"):
        return None
    try:
        return int(time.mktime(time.strptime(lstart.strip(), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


def owner_word(pid: int, start: int) -> int:
    if not 0 < pid < (1 << PID_BITS):
        raise OverflowError(f"pid {pid} does not fit in {PID_BITS} bits")
    return (pid << START_BITS) | (start & START_MASK)


def current_owner() -> int:
    """This process's owner word (cached; recomputed in a forked child)."""
    global _owner
    if _owner == 0:
        pid = os.getpid()
        start = process_start(pid)
        _owner = owner_word(pid, start if start is not None else 0)
    return _owner


def owner_pid(owner: int) -> int:
    return owner >> START_BITS


def owner_alive(owner: int) -> bool:
    """True if the process recorded in owner is still running (same pid AND start time)."""
    pid = owner >> START_BITS
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    except OSError:
        return False
    start = process_start(pid)
    if start is None:
        return False
    return (start & START_MASK) == (owner & START_MASK)


def _after_fork_in_child() -> None:
    global _owner
    _owner = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
