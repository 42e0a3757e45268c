"""SharedStore: the memory every process on the host shares, and the one place that
chooses which store a policy uses when none is given.

A named store is a file in /dev/shm (or the temp dir where there is none), opened
and mapped directly: multiprocessing.shared_memory is avoided because its resource
tracker unlinks segments when any attached process exits (CPython gh-82300).
A store is published atomically: the creator initialises a private temp file and
link()s it to the final name, so no process ever sees a half-written header, and
two processes racing to create one name end with exactly one initialiser.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _approot, _core
from . import directory as _directory
from .directory import PolicyInfo
from .errors import ConfigError, StoreClosed, StoreError, StoreNotFound

if TYPE_CHECKING:
    from .counter import Counter
    from .health import Health

DEFAULT_CAPACITY = 57344  # keys; with its 320 policies the table is 2**17 slots (8 MiB)
_PREFIX = "sluicegate."
_MAX_NAME = 200
_MAX_POLICIES = 65536


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"name must be a str, not {type(name).__name__}")
    if not name:
        raise StoreError("store name must not be empty")
    if len(name) > _MAX_NAME:
        raise StoreError(f"store name is {len(name)} characters long; the limit is {_MAX_NAME}")
    if "/" in name or "\\" in name or "\0" in name:
        raise StoreError(f"store name {name!r} must not contain '/', '\\\\' or NUL")
    if ".." in name or name.startswith("."):
        raise StoreError(f"store name {name!r} must not contain '..' or start with '.'")
    if not name.isprintable():
        raise StoreError(f"store name {name!r} must be printable")
    return name


def _named_path(name: str) -> str:
    return os.path.join(_shm_dir(), _PREFIX + _validate_name(name))


def _check_capacity(capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ConfigError(f"capacity must be an int, not {type(capacity).__name__}")
    if not 1 <= capacity <= 1 << 28:
        raise ConfigError(f"capacity must be between 1 and 2**28 key slots, got {capacity}")
    return capacity


def _map_fd(fd: int, label: str) -> tuple[mmap.mmap, int]:
    size = os.fstat(fd).st_size
    if size < _core.HEADER_SIZE:
        raise StoreError(f"{label} is truncated or not a sluicegate store ({size} bytes)")
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE), size


def _check_trusted(fd: int, path: str, label: str) -> None:
    """Refuse a store file that another user owns or can write: whoever can write it
    can change this process's limits and breakers, or kill it by truncating the file."""
    if not hasattr(os, "geteuid"):
        return
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid != me:
        raise StoreError(
            f"{label} ({path}) belongs to uid {st.st_uid}, not to this process (uid {me}); "
            "refusing to share limits with another user's store. Use a store this user "
            "created, or pass trust_foreign=True if that user is trusted"
        )
    if st.st_mode & 0o022:
        raise StoreError(
            f"{label} ({path}) is writable by its group or by other users (mode {st.st_mode & 0o777:#o}); "
            "any of them could change the limits or kill every process using it by truncating it. "
            f"Run chmod 600 {path}, or pass trust_foreign=True if they are trusted"
        )


def _open_existing(path: str, label: str, *, trust_foreign: bool = False) -> _core.Table:
    """Attach to an existing store file.  Unless trust_foreign, a file another user
    owns or can write is refused (_check_trusted)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StoreError(f"cannot open {label}: {e.strerror}") from e
    try:
        if not trust_foreign:
            _check_trusted(fd, path, label)
        mm, _ = _map_fd(fd, label)
    finally:
        os.close(fd)
    try:
        return _core.Table(mm, label)
    except BaseException:
        mm.close()
        raise


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_ZERO_CHUNK = 1 << 20


def _free_bytes(directory: str) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _no_space(label: str, directory: str, size: int, e: OSError) -> StoreError:
    free = _free_bytes(directory)
    have = "an unknown number of" if free is None else str(free)
    return StoreError(
        f"cannot create {label}: {directory} cannot back it ({e.strerror}); it needs {size} bytes and "
        f"{have} bytes are free. Free space there, enlarge the filesystem (a container's /dev/shm: "
        "docker run --shm-size), or create the store with a smaller capacity"
    )


def _reserve(fd: int, size: int, label: str, directory: str) -> None:
    """Allocate every block of the store file before it is mapped.  A sparse file on a
    filesystem that fills up (a small tmpfs such as a container's 64 MiB /dev/shm) kills
    the process that first touches an unbacked page with SIGBUS; reserved, it cannot."""
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
                return
            except OSError as e:
                if e.errno in _NO_SPACE:
                    raise
                # not supported by this filesystem (EOPNOTSUPP, EINVAL): write the zeros
        os.ftruncate(fd, 0)
        zeros = bytes(min(size, _ZERO_CHUNK))
        done = 0
        while done < size:
            done += os.pwrite(fd, zeros[: size - done], done)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise _no_space(label, directory, size, e) from None
        raise StoreError(f"cannot create {label} in {directory}: {e.strerror}") from e


_STALE_TMP_S = 60.0  # a creator takes milliseconds: a temp file this old is abandoned


def _remove_stale_tmp(directory: str, base: str) -> None:
    """Remove the temp files of creators of `base` that died before publishing it
    (SIGKILLed mid-create): they would hold their size in the directory for good.
    Only files older than _STALE_TMP_S whose pid is gone here: a pid of another pid
    namespace (a container sharing the directory) looks gone but may be mid-create."""
    prefix = f".{base}."
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    cutoff = time.time() - _STALE_TMP_S
    me = os.geteuid() if hasattr(os, "geteuid") else None
    for e in entries:
        pid_s = e.name[len(prefix):].split(".", 1)[0]
        try:
            st = e.stat(follow_symlinks=False)
            pid = int(pid_s)
        except (OSError, ValueError):
            continue
        if st.st_mtime > cutoff or (me is not None and st.st_uid != me) or pid <= 0:
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (a very slow creator): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(e.path)
        except OSError:
            pass


def _create(path: str, capacity: int, policies: int | None, label: str, *,
            trust_foreign: bool = False) -> tuple[_core.Table, bool]:
    """Create-or-attach; returns (table, created_by_us)."""
    directory = os.path.dirname(path) or "."
    _remove_stale_tmp(directory, os.path.basename(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    size = _core.store_size(capacity, policies)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as e:
        raise StoreError(f"cannot create {label} in {directory}: {e.strerror}") from e
    try:
        _reserve(fd, size, label, directory)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        _core.Table.initialise(mm, capacity, policies)
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
        except OSError as e:
            mm.close()
            raise StoreError(f"cannot publish {label}: {e.strerror}") from e
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    if not created:
        mm.close()
        return _open_existing(path, label, trust_foreign=trust_foreign), False
    return _core.Table(mm, label), True


class SharedStore:
    """Shared memory holding every limiter, breaker, counter and cap of a host.

    SharedStore("orders")          named: create-or-attach from any process
    SharedStore(path="x.sg")       file-backed: survives every process exiting
    SharedStore()                  anonymous: shared with children forked after it

    A named or file store that another user owns, or that its group or other users
    can write, is refused with StoreError unless trust_foreign=True.

    capacity: key slots (live keys at once); policies: room in the policy directory
    (default: capacity / 128, from 64 to 320).  Both are fixed when the store is created.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        capacity: int | None = None,
        path: str | os.PathLike[str] | None = None,
        create: bool = True,
        policies: int | None = None,
        trust_foreign: bool = False,
    ) -> None:
        if capacity is not None:
            _check_capacity(capacity)
        if policies is not None and (
            isinstance(policies, bool) or not isinstance(policies, int) or not 1 <= policies <= _MAX_POLICIES
        ):
            raise ConfigError(f"policies must be an int from 1 to {_MAX_POLICIES}, got {policies!r}")
        if name is not None and path is not None:
            raise ConfigError("give a store either a name or a path, not both")
        if not isinstance(trust_foreign, bool):
            raise ConfigError(f"trust_foreign must be a bool, got {trust_foreign!r}")
        self._name = name
        self._path = os.fspath(path) if path is not None else None
        self._trust_foreign = trust_foreign
        self.created = False
        if name is None and self._path is None:
            self.kind = "anonymous"
            cap = capacity or DEFAULT_CAPACITY
            mm = mmap.mmap(-1, _core.store_size(cap, policies))
            _core.Table.initialise(mm, cap, policies)
            self._table = _core.Table(mm, "anonymous store")
            self.created = True
        else:
            if name is not None:
                self.kind, file, label = "named", _named_path(name), f"store {name!r}"
            else:
                assert self._path is not None
                self.kind, file, label = "file", os.path.abspath(self._path), f"store file {self._path!r}"
            self._file = file
            try:
                self._table = _open_existing(file, label, trust_foreign=trust_foreign)
            except FileNotFoundError:
                if not create:
                    raise StoreNotFound(f"{label} does not exist") from None
                self._table, self.created = _create(
                    file, capacity or DEFAULT_CAPACITY, policies, label, trust_foreign=trust_foreign
                )
            if capacity is not None and self._table.capacity != capacity:
                have = self._table.capacity
                self._table.close().close()
                raise StoreError(f"{label} already exists with capacity {have}, not {capacity}")
        self._table.owner = self
        self._counters: dict[str, Counter] = {}  # counter(name)'s objects

    # -- lifecycle ---------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._name

    @property
    def path(self) -> str | None:
        """The file behind a named or file-backed store (None when anonymous)."""
        return getattr(self, "_file", None)

    @property
    def capacity(self) -> int:
        return int(self._table.capacity)

    @property
    def closed(self) -> bool:
        return bool(self._table.closed)

    def close(self) -> None:
        """Unmap the store. Objects over it raise StoreClosed afterwards."""
        mm = self._table.close()
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # an exported view is still alive somewhere; the GC will unmap it
                pass

    def __enter__(self) -> SharedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def unlink(name: str, *, missing_ok: bool = False) -> None:
        """Remove a named store. Processes still attached keep their mapping."""
        path = _named_path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise StoreNotFound(f"store {name!r} does not exist") from None
        except OSError as e:
            raise StoreError(
                f"cannot unlink store {name!r} ({path}): {e.strerror}; in the sticky shm directory only "
                "the user who created a store (or root) can remove it"
            ) from None

    # -- contents -------------------------------------------------------------------
    def counter(self, name: str) -> Counter:
        """A lock-free shared counter: add(n), .value, compare_and_set(old, new), reset();
        the same as sg.Counter(name, store=this store) (in the policy directory)."""
        from .counter import Counter  # the policy layer sits above the store

        if not isinstance(name, str):
            raise ConfigError(f"counter name must be a str, not {type(name).__name__}")
        self._check_open()
        c = self._counters.get(name)
        if c is None:  # made once per name and process: later calls cost a dict lookup
            c = self._counters[name] = Counter(name, self)
        return c

    def _engine(self, kind: str, name: str) -> Any:
        """The engine a policy of this kind decides with in this store (DESIGN.md "Layers":
        a policy is a front object over an engine; the store picks the engine).  The shm
        engines are compiled classes over this store's table; a policy configures its
        engine through the directory (policy.Policy)."""
        self._check_open()
        if kind == "limiter":
            return _core.LimiterEngine(self._table)
        if kind == "breaker":
            return _core.BreakerEngine(self._table, name)
        if kind == "cap":
            return _core.CapCore(self._table, name)
        if kind == "counter":
            return _core.Counter(self._table, name)
        if kind in ("pool", "guard"):  # they decide in Python, in each process: the store supplies
            return _core.DirWatch()    # their directory version watch
        raise ConfigError(f"{self!r} has no engine for policies of kind {kind!r}")

    def policies(self) -> list[PolicyInfo]:
        """The policy directory: every limiter, breaker, cap, pool (named) and counter of
        this store, with its effective configuration, the code's, the runtime override,
        version and times."""
        self._check_open()
        return _directory.policies(self)

    def policy(self, name: str, kind: str | None = None) -> Any:
        """A working policy object for a policy in the directory, with no options restated
        (kind: "limiter", "breaker", "cap", "pool" or "counter", needed only when several
        kinds share the name).  A pool raises PolicyNotBuildable: its create function is
        code, not configuration (construct it in code; it follows the directory)."""
        self._check_open()
        return _directory.build(self, name, kind)

    def health(self, **options: Any) -> Health:
        """sg.Health: "healthy" | "degraded" | "unhealthy", overall and per policy, with the
        reasons.  Options (see sluicegate.health): since= an earlier reading (rates judged
        over the interval), memory= a MemoryMonitor, include= this process's pools,
        denied_fraction=0.5, min_decisions=20, cap_saturation=1.0, fill_warning=0.8,
        fill_critical=0.95."""
        from .health import judge  # the facade sits above the policies, which sit above the store

        self._check_open()
        return judge(self, **options)

    def stats(self) -> dict[str, int]:
        """capacity (key slots), used (live slots), slots (table size) and a breakdown."""
        return dict(self._table.stats())

    def now(self) -> float:
        """Store time in seconds (monotonic; shared by every attached process)."""
        return int(self._table.now()) / 1e9

    def _check_open(self) -> None:
        if self._table.closed:
            raise StoreClosed(f"{self!r} is closed")

    # -- pickling: named and file stores re-attach in the child ---------------------
    def __reduce__(self) -> tuple[Any, ...]:
        if self.kind == "anonymous":
            raise StoreError(
                "an anonymous store is shared only with children forked after it was made; "
                "use a named store (SharedStore('name')) with spawn or forkserver"
            )
        # attach only, by absolute path: a store that is gone, or a relative path read
        # from another working directory, must not become a new, empty, unshared store
        if self.kind == "named":
            return (_attach_named, (self._name, self._trust_foreign))
        return (_attach_path, (self._file, self._trust_foreign))

    def __repr__(self) -> str:
        where = {"named": f"name={self._name!r}", "file": f"path={self._path!r}", "anonymous": "anonymous"}[self.kind]
        state = " closed" if self.closed else f" capacity={self.capacity}"
        return f"<SharedStore {where}{state}>"


def _attach_named(name: str, trust_foreign: bool = False) -> SharedStore:
    return SharedStore(name, create=False, trust_foreign=trust_foreign)


def _attach_path(path: str, trust_foreign: bool = False) -> SharedStore:
    return SharedStore(path=path, create=False, trust_foreign=trust_foreign)


# -- choosing a store: URLs, the environment and the default ----------------------
ENV_STORE = "SLUICEGATE_STORE"
_log = logging.getLogger("sluicegate.store")


def _url_capacity(url: str, query: str) -> int | None:
    capacity = None
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        if k != "capacity":
            raise ConfigError(f"store URL {url!r}: unknown option {k!r} (the one option is capacity=N)")
        try:
            capacity = int(v)
        except ValueError:
            raise ConfigError(f"store URL {url!r}: capacity must be an int, got {v!r}") from None
    return capacity


def _open_shm(url: str, rest: str, opts: dict[str, Any]) -> SharedStore:
    if not rest or "/" in rest:
        raise ConfigError(f"store URL {url!r}: write shm://NAME (a name without '/')")
    return SharedStore(rest, **opts)


def _open_file(url: str, rest: str, opts: dict[str, Any]) -> SharedStore:
    if not rest.startswith("/"):
        raise ConfigError(f"store URL {url!r}: write file:///absolute/path (three slashes)")
    return SharedStore(path=rest, **opts)


# the one place that maps a URL scheme to a store (redis:// arrives with the Redis store)
_SCHEMES: dict[str, Callable[[str, str, dict[str, Any]], SharedStore]] = {"shm": _open_shm, "file": _open_file}


def open_store(url: str, *, capacity: int | None = None, policies: int | None = None,
               create: bool = True) -> SharedStore:
    """A store from a URL: "shm://orders" (named), "file:///var/lib/app/limits.sg"
    (file-backed); "?capacity=N" (or capacity=N) sets the capacity of a store this call
    creates, policies=N its directory room.  A bare name or a path (containing '/') is
    accepted too, as in $SLUICEGATE_STORE.  create=False attaches only (StoreNotFound
    when the store does not exist)."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"store URL must be a non-empty str, got {url!r}")
    scheme, sep, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    in_url = _url_capacity(url, query) if sep else None
    if in_url is not None and capacity is not None and in_url != capacity:
        raise ConfigError(f"store URL {url!r} says capacity={in_url} but capacity={capacity} was given")
    opts: dict[str, Any] = {"capacity": capacity if in_url is None else in_url, "policies": policies,
                            "create": create}
    if not sep:
        return SharedStore(path=url, **opts) if "/" in url else SharedStore(url, **opts)
    opener = _SCHEMES.get(scheme.lower())
    if opener is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigError(f"store URL {url!r}: unknown scheme {scheme!r}; sluicegate opens {known}")
    return opener(url, rest, opts)


_default: SharedStore | None = None
_url_stores: dict[str, SharedStore] = {}  # stores resolve_store opened from a URL
_default_lock = threading.Lock()


def _remove_stale_defaults() -> None:
    """Unlink default stores of this user whose application has ended (best effort)."""
    try:
        names = os.listdir(_shm_dir())
    except OSError:
        return
    for f in names:
        if f.startswith(_PREFIX + _approot.PREFIX) and _approot.is_stale(f[len(_PREFIX) :]):
            try:
                os.unlink(os.path.join(_shm_dir(), f))
                _log.debug("removed the default store of an ended application: %s", f)
            except OSError:
                pass


def default_store() -> SharedStore:
    """The store policies use when given none: shared by every process of this application.

    $SLUICEGATE_STORE (a name, a path, or a URL for open_store) chooses it.  Otherwise it
    is a named store keyed by this process's application root (see _approot): gunicorn
    and uvicorn workers, multiprocessing and ProcessPoolExecutor children (fork, spawn,
    forkserver) and Celery workers all find the same one, with or without --preload,
    while an unrelated application on the same host gets its own.
    """
    global _default
    if _default is None or _default.closed:
        with _default_lock:
            if _default is None or _default.closed:
                spec = os.environ.get(ENV_STORE)
                if spec:
                    _default = open_store(spec)
                    why = f"${ENV_STORE}={spec}"
                else:
                    name = _approot.default_store_name()
                    _default = SharedStore(name)
                    if _default.created:
                        _remove_stale_defaults()
                    why = "this application's default"
                _log.debug("default store: %r (%s)", _default, why)
    return _default


def resolve_store(store: SharedStore | str | None) -> SharedStore:
    """The one place that picks a policy's store: store=None is default_store(),
    a URL ("shm://name", "file:///path") goes to open_store()."""
    if store is None:
        return default_store()
    if isinstance(store, str) and "://" in store:
        # one mapping per URL in this process, however many policies name it
        with _default_lock:
            opened = _url_stores.get(store)
            if opened is None or opened.closed:
                opened = _url_stores[store] = open_store(store)
        return opened
    if not isinstance(store, SharedStore):
        hint = f" such as 'shm://{store}'" if isinstance(store, str) else ""
        raise ConfigError(f"store must be a SharedStore or a store URL{hint}, not {store!r}")
    store._check_open()
    return store
