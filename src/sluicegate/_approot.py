"""Which processes make up one application: the key of the default store.

Every process of one application must share ``sg.default_store()`` with no
configuration, whatever started it: gunicorn workers with or without ``--preload``
(and their ``--max-requests`` replacements), ``uvicorn --workers N``,
``multiprocessing`` pools with fork, spawn or forkserver, Celery prefork.  Two
unrelated applications on one host must not share by accident.

The rule: a process's *application root* is found by walking up its parents while
the parent runs the same executable, as the same user, in the same process group.
Servers and pools start their workers from one Python process in their own process
group, so every worker finds that process; a shell with job control gives each
command line its own process group, and a service manager gives each service its
own session, so two applications end at two roots.  The default store is named for
the root's pid *and* start time, which no later process can repeat, so a store left
behind by a dead application is never joined; the next creator removes it.

Pid 1 can be the root.  In a container the application's master is often the pid
namespace's first process (`docker run IMAGE celery -A proj worker`, or gunicorn as
the container's command), and its workers' parent is pid 1; stopping the walk there
gave every worker a root, and a store, of its own.  A host's init runs another
executable (or hides its exe), so the walk still ends below it there.

The name also carries a tag of the pid namespace (see _procident.pid_namespace):
containers that share /dev/shm (a Kubernetes pod's containers, `--ipc=host`) see one
another's stores but not one another's processes, so a store named for a pid of another
namespace is never judged stale from here (that unlinked a live application's store),
and two namespaces' roots with one pid and start time do not meet in one name.

Off Linux (no /proc), the root is the process group: its pid is not reused while
the group has a member.
"""

from __future__ import annotations

import os
import sys

from ._procident import pid_namespace, process_start

_LINUX = sys.platform.startswith("linux")
_MAX_DEPTH = 64  # a parent chain is never this deep; a loop in garbage data stops here


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgrp, start time) of a live process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def application_root() -> tuple[int, int]:
    """(pid, start) of this process's application root; start is 0 where unknown,
    and pid is the process group's id off Linux."""
    me = os.getpid()
    st = _stat(me) if _LINUX else None
    if st is None:
        return os.getpgrp(), 0
    exe, uid, pgrp = _exe(me), os.getuid(), st[1]
    root, start, ppid = me, st[2], st[0]
    for _ in range(_MAX_DEPTH):
        if ppid <= 0:  # no parent, or one outside this pid namespace; pid 1 may be the root
            break
        pst = _stat(ppid)
        if pst is None or pst[1] != pgrp or exe is None or _exe(ppid) != exe or _uid(ppid) != uid:
            break
        root, start, ppid = ppid, pst[2], pst[0]
    return root, start


PREFIX = "app-"


def default_store_name() -> str:
    """The default store's name for this process's application."""
    pid, start = application_root()
    if _LINUX and start:
        return f"{PREFIX}{os.getuid()}-{pid}-{start}-{pid_namespace()}"
    return f"{PREFIX}{os.getuid()}-pg{pid}"


def is_stale(name: str) -> bool:
    """True if name is a default store of this user whose application has ended.
    A name from another pid namespace is never stale here: its pid means another
    process, or none, in ours."""
    head = f"{PREFIX}{os.getuid()}-"
    if not name.startswith(head):
        return False
    rest = name[len(head) :]
    parts = rest.split("-")
    if len(parts) == 3:  # pid-start-namespace (a name without the namespace is from before it)
        if parts[2] != str(pid_namespace()):
            return False
        rest = f"{parts[0]}-{parts[1]}"
    if rest.startswith("pg"):
        try:
            os.killpg(int(rest[2:]), 0)
        except ProcessLookupError:
            return True
        except (OSError, ValueError):
            return False
        return False
    pid_s, _, start_s = rest.partition("-")
    try:
        pid, start = int(pid_s), int(start_s)
    except ValueError:
        return False
    now = process_start(pid)
    return now is None or (now >= 0 and now != start)
