"""Who holds a permit: a process identity that survives pid reuse.

An owner word is [pid:22 | start:42], where start is the process start time
(clock ticks since boot from /proc/<pid>/stat field 22 on Linux, epoch seconds from
`ps -o lstart` elsewhere).  A pid that was reused by a new process has another
start time, so it is never mistaken for the old holder.  When a process exists but
its start time cannot be read, it counts as alive: a permit may then stay held
until that pid is gone, but a live holder never loses its permit."""

from __future__ import annotations

import os
import sys
import time

PID_BITS = 22
START_BITS = 42
START_MASK = (1 << START_BITS) - 1
_LINUX = sys.platform.startswith("linux")

_owner: int = 0


UNKNOWN = -1  # the process exists but its start time cannot be read


def process_start(pid: int) -> int | None:
    """Start time of a live process; None if it does not exist or is a zombie;
    UNKNOWN if it exists but its start time cannot be read (hidden /proc, no ps)."""
    return _proc_start(pid) if _LINUX else _ps_start(pid)


def _proc_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        # gone, unless there is no /proc at all (a container without it): then unknown
        return None if os.path.exists("/proc/self/stat") else UNKNOWN
    except OSError:
        return UNKNOWN
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
        return None
    return int(fields[19])


def _ps_start(pid: int) -> int | None:
    """`ps -o lstart` in the C locale (its date format differs per locale)."""
    import subprocess  # only off Linux

    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=5, check=False, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    if not out:
        return None
    stat, _, lstart = out.partition(" ")
    if stat.startswith("Z"):
        return None
    try:
        return int(time.mktime(time.strptime(" ".join(lstart.split()), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return UNKNOWN


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
        _owner = owner_word(pid, start if start is not None and start != UNKNOWN else 0)
    return _owner


def owner_pid(owner: int) -> int:
    return owner >> START_BITS


def owner_alive(owner: int) -> bool:
    """True if the process recorded in owner is still running (same pid AND start time)."""
    pid = owner >> START_BITS
    if pid <= 0:
        return False
    hidden = False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        hidden = True  # someone else's process: it exists (/proc may hide it: hidepid)
    except OSError:
        return False
    start = process_start(pid)
    if start == UNKNOWN or (start is None and hidden):
        return True  # it exists and we cannot tell who it is: never take a live holder's permit
    if start is None:
        return False
    return (start & START_MASK) == (owner & START_MASK)


def _after_fork_in_child() -> None:
    global _owner
    _owner = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
