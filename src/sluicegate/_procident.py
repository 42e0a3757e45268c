"""Who holds a permit: a process identity that survives pid reuse.

An owner word is [pid:22 | pidns:16 | start:26], where start is the process start
time (clock ticks since boot from /proc/<pid>/stat field 22 on Linux, epoch seconds
from `ps -o lstart` elsewhere; kept modulo 2**26) and pidns a 16-bit tag of the
holder's pid namespace (the inode of /proc/self/ns/pid; 0 where it cannot be read).
A pid that was reused by a new process has another start time, so it is never
mistaken for the old holder.  When a process exists but its start time cannot be
read, it counts as alive: a permit may then stay held until that pid is gone, but a
live holder never loses its permit.

Containers that share /dev/shm or a volume run in other pid namespaces: there the
holder's pid means another process, or none, so its liveness cannot be judged from
here, and a holder whose pidns tag is not ours counts as alive (it is reclaimed from
its own namespace).  Two namespaces share a tag with probability 2**-16."""

from __future__ import annotations

import os
import sys
import time

from ._forks import after_fork_in_child

PID_BITS = 22
NS_BITS = 16
START_BITS = 26
START_MASK = (1 << START_BITS) - 1
NS_MASK = (1 << NS_BITS) - 1
PID_SHIFT = START_BITS + NS_BITS  # 42: the pid is owner >> 42
_LINUX = sys.platform.startswith("linux")

_owner: int = 0
_ns: int = -1


def pid_namespace() -> int:
    """This process's pid-namespace tag (1..2**16-1), or 0 where it cannot be read."""
    global _ns
    if _ns < 0:
        try:
            ino = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            _ns = 0
        else:
            # namespace inodes are nearly sequential: mix them before keeping 16 bits
            tag = ((ino * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> (64 - NS_BITS)
            _ns = tag or 1
    return _ns


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


def owner_word(pid: int, start: int, ns: int | None = None) -> int:
    """The owner word of (pid, start) in pid namespace tag ns (default: ours)."""
    if not 0 < pid < (1 << PID_BITS):
        raise OverflowError(f"pid {pid} does not fit in {PID_BITS} bits")
    if ns is None:
        ns = pid_namespace()
    return (pid << PID_SHIFT) | ((ns & NS_MASK) << START_BITS) | (start & START_MASK)


def current_owner() -> int:
    """This process's owner word (cached; recomputed in a forked child)."""
    global _owner
    if _owner == 0:
        pid = os.getpid()
        start = process_start(pid)
        _owner = owner_word(pid, start if start is not None and start != UNKNOWN else 0)
    return _owner


def owner_pid(owner: int) -> int:
    return owner >> PID_SHIFT


def owner_ns(owner: int) -> int:
    return (owner >> START_BITS) & NS_MASK


def owner_local(owner: int) -> bool:
    """True if owner's liveness can be judged here: its pid namespace is ours (or was
    not recorded, where there are none to tell apart)."""
    ns = owner_ns(owner)
    return ns == 0 or ns == pid_namespace()


def owner_alive(owner: int) -> bool:
    """True if the process recorded in owner is still running (same pid AND start time),
    or cannot be judged from here (another pid namespace)."""
    if not owner_local(owner):
        return True  # its pid means another process here, or none: never take its permit
    pid = owner >> PID_SHIFT
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


@after_fork_in_child
def _after_fork_in_child() -> None:
    global _owner, _ns
    _owner = 0
    _ns = -1  # a parent that called unshare(CLONE_NEWPID) forks into another namespace

