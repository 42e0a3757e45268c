"""Command line (also `python -m sluicegate ...`): `demo`; `config apply|show|clear`;
seeing a store: `ls`, `inspect`, `top`, `health`; operating one: `reset`, `open`,
`close`, `disable`, `unlink`.  Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import SluicegateError


def _parser() -> argparse.ArgumentParser:
    from .directory import KINDS

    p = argparse.ArgumentParser(
        prog="sluicegate",
        description="Rate limiters, circuit breakers, pools and concurrency caps shared by every process on a host.",
    )
    p.add_argument("--version", action="version", version=f"sluicegate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser(
        "demo",
        help="N worker processes hammer one shared rate limiter; watch them share one limit live",
        description="Start N worker processes that hammer ONE shared rate limiter (a named store), print live "
        "the admissions per worker and in total against the configured limit and the decisions per second, "
        "then check that the total never went above the limit.",
    )
    d.add_argument("--workers", "-w", type=int, default=4, help="worker processes (default 4)")
    d.add_argument("--seconds", "-s", type=float, default=5.0, help="how long to hammer (default 5)")
    d.add_argument("--rate", "-r", default="2000/second", help='the shared limit (default "2000/second")')
    d.add_argument(
        "--algorithm",
        "-a",
        default="token_bucket",
        choices=["token_bucket", "gcra", "fixed_window", "sliding_window"],
        help="default token_bucket",
    )
    d.add_argument("--burst", "-b", type=int, default=None, help="token bucket burst (default: the rate's limit)")
    d.add_argument(
        "--start-method", default="spawn", choices=["spawn", "fork", "forkserver"], help="default spawn"
    )
    d.add_argument("--refresh", type=float, default=0.5, help="seconds between live updates (default 0.5)")
    d.add_argument("--no-live", action="store_true", help="print updates one after another instead of in place")

    c = sub.add_parser(
        "config",
        help="change the policies of a running service: apply a file as runtime overrides, show, clear",
        description="Read and change the policies of a live store. Every process of the service follows a "
        "change at its next decision. The store is --store (a name, a path or a URL such as shm://NAME), else "
        "$SLUICEGATE_STORE.",
    )
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    store_help = "the service's store: a name, a path or a URL (default: $SLUICEGATE_STORE)"
    ca = csub.add_parser(
        "apply",
        help="set the policies a TOML file declares as runtime overrides",
        description="Set the options a TOML file (the load_config format) gives each limiter, breaker, cap and "
        "pool as that policy's runtime override, replacing any earlier override; it outranks the configuration "
        "in code until `sluicegate config clear`. Policies that name no store go to --store. Everything is "
        "checked before anything is set.",
    )
    ca.add_argument("file", help="a TOML file in the load_config format")
    ca.add_argument("--store", help=store_help)
    ca.add_argument("--create", action="store_true",
                    help="record policies no process has made yet (their file configuration becomes their code "
                    "configuration and their override); without it they are an error")
    cs = csub.add_parser("show", help="print the effective configuration of every policy, marking overrides",
                         description="Print every policy of the store with its effective configuration, as "
                         "TOML that `config apply` reads back; overridden options are marked with the code's value.")
    cs.add_argument("--store", help=store_help)
    cs.add_argument("--json", action="store_true", help="print JSON instead")
    cc = csub.add_parser("clear", help="clear a policy's runtime override (the code's configuration applies again)")
    cc.add_argument("name", help="the policy's name")
    cc.add_argument("--kind", choices=list(KINDS), help="needed when several kinds share the name")
    cc.add_argument("--store", help=store_help)
    _add_observe_commands(sub)

    m = sub.add_parser(
        "metrics",
        help="serve every policy's metrics from a store's shared memory on /metrics (Prometheus)",
        description="Serve the counters, gauges and histograms of every policy of the store(s) on "
        "http://HOST:PORT/metrics, read from shared memory at each scrape: a sidecar that never made the "
        "policies. A store that does not exist yet is attached when it appears. Stops on SIGINT or SIGTERM. "
        "Needs prometheus_client (pip install 'sluicegate[prometheus]').",
    )
    m.add_argument("--store", action="append", help="a store: a name, a path or a URL (repeat for several; "
                   "default: $SLUICEGATE_STORE)")
    m.add_argument("--port", type=int, default=9464, help="default 9464 (0: any free port, printed)")
    m.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    return p


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < v <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds > 0 and at most 86400, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return v


def _add_store_argument(p: argparse.ArgumentParser) -> None:
    """STORE, optional: positional or --store, else $SLUICEGATE_STORE."""
    p.add_argument("store", nargs="?", metavar="STORE",
                   help="the store: a name, a path or a URL such as shm://NAME (default: $SLUICEGATE_STORE)")
    p.add_argument("--store", dest="store_option", metavar="STORE", help="the same, as an option")


def _add_observe_commands(sub: Any) -> None:
    """ls, inspect, top, health; reset, open, close, disable, unlink."""
    from .directory import KINDS
    from .health import Thresholds

    ls = sub.add_parser(
        "ls", help="list the stores on this host",
        description="List the named stores of this host (the files in the shared-memory directory), and any "
        "store files given: name, path, size, fill, policies, owner and how many processes have it mapped. A "
        "file that is not a store this user can open is listed with the reason.")
    ls.add_argument("paths", nargs="*", metavar="PATH", help="store files to describe as well (file-backed stores)")
    ls.add_argument("--json", action="store_true", help="print JSON instead")

    i = sub.add_parser(
        "inspect", help="every policy of a store: kind, options, state and counts",
        description="Print every policy of a store: its kind, its effective options (overridden ones marked "
        "with the code's value), its state and its counts (its stats(), summed over every process).")
    _add_store_argument(i)
    i.add_argument("--json", action="store_true", help="print JSON instead")

    t = sub.add_parser(
        "top", help="a live view of a store's policies: decisions/s, denials/s, breaker states, cap use",
        description="Refresh a view of every policy of a store: decisions and denials per second for limiters, "
        "state, calls and rejections per second for breakers, permits in use for caps. In a terminal it redraws "
        "in place; piped, it prints one frame after another. Ctrl-C ends it.")
    _add_store_argument(t)
    t.add_argument("--interval", "-i", type=_positive_seconds, default=1.0, help="seconds between frames (default 1)")
    t.add_argument("--iterations", "-n", type=_positive_int, default=None,
                   help="stop after this many frames (default: until Ctrl-C)")
    t.add_argument("--json", action="store_true", help="print each frame as one line of JSON")

    h = sub.add_parser(
        "health", help="judge a store's health; exit 0 healthy, 1 degraded, 2 unhealthy (a container probe)",
        description="Judge every policy of a store and the store's fill, print why, and exit 0 when healthy, "
        "1 when degraded, 2 when unhealthy, 3 when the store cannot be read or an argument is wrong. Limiter "
        "denials are judged over each limiter's lifetime, or with --interval S over S seconds between two "
        "readings.")
    h.add_argument("--store", help="the service's store: a name, a path or a URL (default: $SLUICEGATE_STORE)")
    h.add_argument("--json", action="store_true", help="print JSON instead")
    h.add_argument("--interval", type=_positive_seconds, default=None,
                   help="take two readings this many seconds apart and judge rates over that interval")
    d = Thresholds  # the defaults live there
    h.add_argument("--denied-fraction", type=float, default=d.denied_fraction, help="a limiter denying more than "
                   f"this fraction of its decisions is degraded (default {d.denied_fraction})")
    h.add_argument("--min-decisions", type=int, default=d.min_decisions,
                   help=f"fewer decisions than this are not judged (default {d.min_decisions})")
    h.add_argument("--cap-saturation", type=float, default=d.cap_saturation,
                   help=f"a cap with this fraction of its limit in use is degraded (default {d.cap_saturation})")
    h.add_argument("--fill-warning", type=float, default=d.fill_warning,
                   help=f"store fill above which it is degraded (default {d.fill_warning})")
    h.add_argument("--fill-critical", type=float, default=d.fill_critical,
                   help=f"store fill above which it is unhealthy (default {d.fill_critical})")
    h.add_argument("--memory", action="store_true",
                   help="judge memory pressure too (sg.MemoryMonitor: warning degraded, critical unhealthy)")

    r = sub.add_parser(
        "reset", help="reset a policy: a breaker to closed and zeroed, a limiter's key to a full budget",
        description="Reset a policy in every process: a breaker to closed, its window, backoff and stats "
        "cleared; a limiter's keys (--key, repeatable) back to a full budget.")
    r.add_argument("store", metavar="STORE", help="the store: a name, a path or a URL")
    r.add_argument("policy", metavar="POLICY", help="the policy's name")
    r.add_argument("--key", "-k", action="append", help="a limiter's key to reset (repeat for several)")
    r.add_argument("--kind", choices=list(KINDS), help="the policy's kind, when several kinds share the name")
    for name, what in (("open", "force a breaker open: every process rejects calls until `sluicegate close`"),
                       ("close", "close a breaker now (from any state, forced or disabled included)"),
                       ("disable", "disable a breaker: every process admits everything, and it never trips, "
                                   "until `sluicegate close`")):
        b = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        b.add_argument("store", metavar="STORE", help="the store: a name, a path or a URL")
        b.add_argument("breaker", metavar="BREAKER", help="the breaker's name")

    u = sub.add_parser(
        "unlink", help="remove a store (processes still attached keep their mapping)",
        description="Remove a named store or a store file. Processes that have it mapped keep using their "
        "mapping, while processes that open it afterwards create a new, empty one: so it refuses while "
        "processes have it mapped, unless --yes.")
    u.add_argument("store", metavar="STORE", help="the store: a name, a path or a URL")
    u.add_argument("--yes", "-y", action="store_true", help="unlink even while processes have it mapped")


class _Fail(Exception):
    """One line for stderr, and a non-zero exit."""


def _store(spec: str | None, *, needed: bool = True) -> Any:
    from .errors import StoreNotFound
    from .store import ENV_STORE, open_store

    spec = spec or os.environ.get(ENV_STORE) or None
    if spec is None:
        if not needed:
            return None
        raise _Fail(f"which store? pass --store NAME|PATH|URL (or set ${ENV_STORE}) naming the store your "
                    "service uses: this command is not one of the service's processes, so its default store "
                    "would be another, empty one")
    try:
        return open_store(spec, create=False)
    except StoreNotFound:
        raise _Fail(f"store {spec!r} does not exist: is the service running, and is this the store it uses? "
                    "(a store is made by the first process that uses it)") from None


def _toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    return json.dumps(v)  # JSON's strings, numbers, booleans and arrays read as TOML


def _show(store: Any, as_json: bool) -> str:
    from .config import kind_table

    infos = store.policies()
    if as_json:
        return json.dumps({"store": repr(store), "policies": [
            {"kind": p.kind, "name": p.name, "config": p.config, "code": p.code, "override": p.override,
             "overridden": sorted(p.override or {}), "version": p.version, "created": p.created,
             "updated": p.updated} for p in infos]}, indent=2, sort_keys=True)
    lines = [f"# {store!r}: {len(infos)} {'policy' if len(infos) == 1 else 'policies'}"]
    for p in infos:
        lines.append("")
        lines.append(f"[{kind_table(p.kind)}.{_toml_key(p.name)}]  # version {p.version}"
                     + ("; runtime override set" if p.override else ""))
        for k in sorted(p.config):
            v = p.config[k]
            note = f"  # override (code: {_toml_value(p.code.get(k))})" if k in (p.override or {}) else ""
            lines.append(f"# {k} = none{note}" if v is None else f"{k} = {_toml_value(v)}{note}")
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> int:
    from . import directory
    from .config import apply_overrides

    if args.config_command == "apply":
        for line in apply_overrides(args.file, _store(args.store, needed=False), create=args.create):
            print(line)
    elif args.config_command == "show":
        print(_show(_store(args.store), args.json))
    else:
        store = _store(args.store)
        info = directory.find(store, args.name, args.kind)
        if info.override is None:
            print(f"{info.kind} {info.name!r} in {store!r} has no runtime override")
        else:
            directory.Entry(store, info.kind, info.name, create=False).set_override(None)
            print(f"{info.kind} {info.name!r} in {store!r}: override {info.override} cleared; "
                  f"its code configuration applies: {info.code}")
    return 0


# -- reading stores ---------------------------------------------------------------------------
def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    """A policy's counts without the identity keys some stats() repeat."""
    return {k: v for k, v in stats.items() if k not in ("kind", "name")}


def _pct(used: Any, capacity: Any) -> float | None:
    return used / capacity if isinstance(used, int) and isinstance(capacity, int) and capacity > 0 else None


def _fmt_pct(f: float | None) -> str:
    return "-" if f is None else f"{f:.0%}" if f >= 0.01 or f == 0 else "<1%"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _mappers() -> dict[tuple[int, int, int], set[int]] | None:
    """(device major, minor, inode) -> pids that have that file mapped, from /proc/*/maps
    (the processes this user may read); None where there is no /proc.  By inode, not by
    path: the process that created a store maps it under its temp file's name."""
    if not os.path.isdir("/proc/self"):
        return None
    out: dict[tuple[int, int, int], set[int]] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[4] != "0":
                        major, _, minor = parts[3].partition(":")
                        out.setdefault((int(major, 16), int(minor, 16), int(parts[4])), set()).add(int(entry))
        except (OSError, ValueError):
            continue  # gone, or another user's
    return out


def _attached(st: os.stat_result, mappers: dict[tuple[int, int, int], set[int]] | None) -> list[int] | None:
    if mappers is None:
        return None
    return sorted(mappers.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), ()))


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _describe(name: str | None, path: str, mappers: dict[tuple[int, int, int], set[int]] | None) -> dict[str, Any]:
    from .health import store_label
    from .store import SharedStore

    d: dict[str, Any] = {"name": name, "path": path, "store": None, "size": None, "owner_uid": None,
                         "owner": None, "fill": None, "state_fill": None, "stats": None, "policies": None,
                         "attached": None, "error": None}
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as e:
        d["error"] = f"cannot stat: {e.strerror}"
        return d
    d.update(size=st.st_size, owner_uid=st.st_uid, owner=_owner(st.st_uid),
             attached=_attached(st, mappers))
    try:
        store = SharedStore(name, create=False) if name is not None else SharedStore(path=path, create=False)
    except (SluicegateError, OSError) as e:
        d["error"] = str(e)
        return d
    try:
        stats = store.stats()
        d.update(store=store_label(store), stats=stats, policies=len(store.policies()),
                 fill=_pct(stats.get("used"), stats.get("capacity")),
                 state_fill=_pct(stats.get("permanent_used"), stats.get("permanent_capacity")))
    except (SluicegateError, OSError) as e:
        d["error"] = str(e)
    finally:
        store.close()
    return d


def _ls(args: argparse.Namespace) -> int:
    from .store import _PREFIX, _shm_dir

    directory = _shm_dir()
    mappers = _mappers()
    names = sorted(f for f in os.listdir(directory) if f.startswith(_PREFIX))  # creators' temp files start with "."
    found = [_describe(f[len(_PREFIX):], os.path.join(directory, f), mappers) for f in names]
    found += [_describe(None, os.path.abspath(p), mappers) for p in args.paths]
    if args.json:
        print(json.dumps({"directory": directory, "stores": found}, indent=2, sort_keys=True))
        return 0
    if not found:
        print(f"no stores in {directory}")
        return 0
    rows = [["NAME", "SIZE", "KEYS", "STATE", "POLICIES", "PROCS", "OWNER", "PATH"]]
    errors = []
    for d in found:
        label = d["name"] if d["name"] is not None else d["path"]
        procs = "?" if d["attached"] is None else str(len(d["attached"]))
        size = "-" if d["size"] is None else _fmt_bytes(d["size"])
        if d["error"]:
            rows.append([label, size, "-", "-", "-", procs, d["owner"] or "-", d["path"]])
            errors.append(f"{label}: not readable: {d['error']}")
        else:
            rows.append([label, size, _fmt_pct(d["fill"]), _fmt_pct(d["state_fill"]), str(d["policies"]), procs,
                         d["owner"], d["path"]])
    print("\n".join(_table(rows)))
    for line in errors:
        print(line)
    return 0


def _spec(args: argparse.Namespace) -> str | None:
    return getattr(args, "store", None) or getattr(args, "store_option", None)


def _option_value(v: Any) -> str:
    return "none" if v is None else json.dumps(v)


def _inspect_doc(store: Any) -> dict[str, Any]:
    from .health import policy_objects, readings, store_label

    infos = {(p.kind, p.name): p for p in store.policies()}
    policies = []
    for kind, name, obj in policy_objects(store):
        info = infos.get((kind, name))
        if info is None:
            continue
        note = getattr(obj, "why", None)
        policies.append({
            "kind": kind, "name": name, "config": info.config, "code": info.code, "override": info.override,
            "overridden": sorted(info.override or {}), "version": info.version, "created": info.created,
            "updated": info.updated, "stats": None if note is not None else _plain(readings(kind, obj)),
            "note": note})
    stats = store.stats()
    return {"store": store_label(store), "path": store.path, "stats": stats, "policies": policies}


def _state_line(kind: str, st: dict[str, Any]) -> str:
    if kind == "breaker":
        s = str(st.get("state"))
        if s == "open" and isinstance(st.get("retry_after"), (int, float)):
            s += f" (probes in {st['retry_after']:.3g} s)"
        return s
    if kind in ("cap", "pool") and "in_use" in st:
        limit = st.get("limit", st.get("size"))
        return f"{st['in_use']} of {limit} in use"
    if kind == "limiter" and "allowed" in st:
        return f"allowed {st['allowed']}, denied {st['denied']}"
    return ""


def _inspect(args: argparse.Namespace) -> int:
    import textwrap

    store = _store(_spec(args))
    doc = _inspect_doc(store)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    st = doc["stats"]
    n = len(doc["policies"])
    lines = [f"{doc['store']}: {n} {'policy' if n == 1 else 'policies'}; "
             f"key slots {st['used']} of {st['capacity']} used ({_fmt_pct(_pct(st['used'], st['capacity']))}), "
             f"policy state {st['permanent_used']} of {st['permanent_capacity']} "
             f"({_fmt_pct(_pct(st['permanent_used'], st['permanent_capacity']))}), "
             f"directory {n} of {st['policies_capacity']}"]
    for p in doc["policies"]:
        lines.append("")
        state = "" if p["stats"] is None else _state_line(p["kind"], p["stats"])
        lines.append(f"{p['kind']} {p['name']}" + (f": {state}" if state else "")
                     + f"  (version {p['version']}" + (", runtime override set)" if p["override"] else ")"))
        lines.append("  options:")
        for k in sorted(p["config"]):
            mark = f"  (override; code: {_option_value(p['code'].get(k))})" if k in p["overridden"] else ""
            lines.append(f"    {k} = {_option_value(p['config'][k])}{mark}")
        if p["stats"] is None:
            lines.append(f"  counts: not readable here: {p['note']}")
        else:
            counts = "  ".join(f"{k}={_option_value(v) if not isinstance(v, float) else f'{v:.4g}'}"
                               for k, v in p["stats"].items())
            lines.append(textwrap.fill(counts, width=100, initial_indent="  counts: ", subsequent_indent="    ",
                                       break_on_hyphens=False))
    print("\n".join(lines))
    return 0


# -- top --------------------------------------------------------------------------------------
# kind -> (counter of decisions, counter of denials, how the two rates read)
_TOP_RATES: dict[str, tuple[str, str]] = {
    "limiter": ("total", "denied"),
    "breaker": ("calls", "rejections"),
    "cap": ("granted", "timeouts"),
    "pool": ("checkouts", "timeouts"),
}
_TOP_TOTALS: dict[str, tuple[str, ...]] = {
    "limiter": ("allowed", "denied"),
    "breaker": ("calls", "failures", "rejections"),
    "cap": ("granted", "timeouts", "reclaimed"),
    "pool": ("checkouts", "timeouts", "exhausted"),
}


def _rate(now: dict[str, Any], before: dict[str, Any] | None, key: str, dt: float | None) -> float | None:
    if before is None or not dt or not isinstance(now.get(key), int) or not isinstance(before.get(key), int):
        return None
    return max(0, now[key] - before[key]) / dt


def _top_frame(store: Any, cache: dict[tuple[str, str], Any], previous: dict[tuple[str, str], dict[str, Any]],
               dt: float | None) -> dict[str, Any]:
    from .health import policy_objects, readings, store_label

    rows = []
    for kind, name, obj in policy_objects(store, cache):
        note = getattr(obj, "why", None)
        st = None if note is not None else _plain(readings(kind, obj))
        row: dict[str, Any] = {"kind": kind, "name": name, "state": None, "summary": None, "rate": None,
                               "denied_rate": None, "stats": st, "note": note}
        if st is not None:
            before = previous.get((kind, name))
            rate_key, denied_key = _TOP_RATES.get(kind, ("", ""))
            row.update(state=st.get("state"), summary=_state_line(kind, st) if kind != "limiter" else None,
                       rate=_rate(st, before, rate_key, dt), denied_rate=_rate(st, before, denied_key, dt))
            previous[(kind, name)] = st
        rows.append(row)
    return {"store": store_label(store), "time": time.time(), "interval": dt, "policies": rows,
            "stats": store.stats()}


def _fmt_rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}" if r < 1000 else f"{r:.0f}"


def _render_top(frame: dict[str, Any], interval: float) -> str:
    st = frame["stats"]
    head = (f"sluicegate top {frame['store']}  {time.strftime('%H:%M:%S', time.localtime(frame['time']))}  "
            f"every {interval:g} s  key slots {_fmt_pct(_pct(st['used'], st['capacity']))} used  (Ctrl-C to quit)")
    rows = [["KIND", "NAME", "STATE", "RATE/S", "DENIED/S", "TOTALS"]]
    for p in frame["policies"]:
        if p["stats"] is None:
            rows.append([p["kind"], p["name"], "not readable here", "-", "-", ""])
            continue
        keys = _TOP_TOTALS.get(p["kind"]) or tuple(k for k, v in p["stats"].items() if isinstance(v, int))[:3]
        totals = " ".join(f"{k}={p['stats'][k]}" for k in keys if k in p["stats"])
        rows.append([p["kind"], p["name"], p["summary"] or "", _fmt_rate(p["rate"]), _fmt_rate(p["denied_rate"]),
                     totals])
    legend = ("RATE/S: decisions (limiter), calls (breaker), acquires (cap), checkouts (pool) per second; "
              "DENIED/S: denials, rejections, timeouts per second")
    body = _table(rows) if frame["policies"] else ["(no policies yet)"]
    return "\n".join([head, "", *body, "", legend])


def _top(args: argparse.Namespace) -> int:
    store = _store(_spec(args))
    tty = sys.stdout.isatty()
    cache: dict[tuple[str, str], Any] = {}
    previous: dict[tuple[str, str], dict[str, Any]] = {}
    last: float | None = None
    frames = 0
    try:
        while True:
            t = time.monotonic()
            frame = _top_frame(store, cache, previous, None if last is None else t - last)
            last = t
            if args.json:
                out = json.dumps(frame, sort_keys=True) + "\n"
            elif tty:
                out = "\x1b[H\x1b[2J" + _render_top(frame, args.interval) + "\n"
            else:
                out = ("\n" if frames else "") + _render_top(frame, args.interval) + "\n"
            sys.stdout.write(out)
            sys.stdout.flush()
            frames += 1
            if args.iterations is not None and frames >= args.iterations:
                return 0
            time.sleep(max(0.0, args.interval - (time.monotonic() - t)))
    except KeyboardInterrupt:
        if tty and not args.json:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return 0


# -- health -----------------------------------------------------------------------------------
def _render_health(h: Any) -> str:
    over = "" if h.interval is None else f"  (rates over the last {h.interval:.3g} s)"
    lines = [f"{h.status}  {h.store['store']}{over}"]
    rows = []
    for p in h.policies:
        rows.append([p.status, f"{p.kind} {p.name}", p.reasons])
    fill = h.store["readings"]
    rows.append([h.store["status"], "store", h.store["reasons"] or [
        f"key slots {_fmt_pct(_pct(fill['used'], fill['capacity']))} used, policy state "
        f"{_fmt_pct(_pct(fill['permanent_used'], fill['permanent_capacity']))}, directory {fill['policies']} of "
        f"{fill['policies_capacity']}"]])
    if h.memory is not None:
        rows.append([h.memory["status"], "memory", h.memory["reasons"] or [f"level {h.memory['readings']['level']}"]])
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for status, what, reasons in rows:
        first, *more = list(reasons) or [""]
        lines.append(f"  {status.ljust(w0)}  {what.ljust(w1)}  {first}".rstrip())
        lines.extend(f"  {'':{w0}}  {'':{w1}}  {r}" for r in more)
    return "\n".join(lines)


def _health(args: argparse.Namespace) -> int:
    from .health import Thresholds, judge, wait_and_judge

    thresholds = Thresholds(args.denied_fraction, args.min_decisions, args.cap_saturation, args.fill_warning,
                            args.fill_critical)  # checked before the store is opened
    options: dict[str, Any] = {k: getattr(thresholds, k) for k in
                               ("denied_fraction", "min_decisions", "cap_saturation", "fill_warning", "fill_critical")}
    if args.memory:
        monitor = getattr(sys.modules[__package__ or "sluicegate"], "MemoryMonitor", None)
        if monitor is None:
            raise _Fail("--memory needs sg.MemoryMonitor, which this version of sluicegate does not have")
        options["memory"] = monitor()
    store = _store(args.store)
    h = wait_and_judge(store, args.interval, **options) if args.interval else judge(store, **options)
    print(json.dumps(h.to_dict(), indent=2, sort_keys=True) if args.json else _render_health(h))
    return int(h.exit_code)


# -- operating ---------------------------------------------------------------------------------
def _reset(args: argparse.Namespace) -> int:
    from . import directory

    store = _store(args.store)
    info = directory.find(store, args.policy, args.kind)
    what = f"{info.kind} {info.name!r} in {_label(store)}"
    if info.kind == "limiter":
        if not args.key:
            raise _Fail(f"{what}: a limiter is reset key by key: pass --key KEY (repeatable)")
        lim = store.policy(info.name, "limiter")
        for key in args.key:
            lim.reset(key)
        print(f"{what}: {len(args.key)} {'key' if len(args.key) == 1 else 'keys'} reset to a full budget: "
              + ", ".join(map(repr, args.key)))
        return 0
    if args.key:
        raise _Fail(f"{what}: --key is for limiters; a {info.kind} has no keys")
    obj = store.policy(info.name, info.kind)
    if not callable(getattr(obj, "reset", None)):
        raise _Fail(f"{what}: a {info.kind} cannot be reset")
    before = getattr(obj, "state", None)
    obj.reset()
    after = getattr(obj, "state", None)
    print(f"{what}: reset" + (f" ({before} -> {after}; window, backoff and counts cleared)" if before else ""))
    return 0


_BREAKER_ACTIONS = {
    "open": ("force_open", "every process rejects its calls until `sluicegate close`"),
    "close": ("force_close", "every process admits calls; the failure window starts afresh"),
    "disable": ("disable", "every process admits every call and it never trips until `sluicegate close`"),
}


def _breaker_action(args: argparse.Namespace) -> int:
    store = _store(args.store)
    kinds = [p.kind for p in store.policies() if p.name == args.breaker]
    if kinds and "breaker" not in kinds:
        raise _Fail(f"{args.breaker!r} in {_label(store)} is a {' and a '.join(kinds)}, not a breaker")
    br = store.policy(args.breaker, "breaker")
    method, effect = _BREAKER_ACTIONS[args.command]
    before = br.state
    getattr(br, method)()
    print(f"breaker {args.breaker!r} in {_label(store)}: {before} -> {br.state}; {effect}")
    return 0


def _label(store: Any) -> str:
    from .health import store_label

    return store_label(store)


def _locate(spec: str) -> tuple[str | None, str]:
    """(name or None, path) of the store a spec names, without opening it (open_store's forms)."""
    from .store import _named_path

    scheme, sep, rest = spec.partition("://")
    rest = rest.partition("?")[0]
    if sep and scheme.lower() == "shm":
        return rest, _named_path(rest)
    if sep and scheme.lower() == "file":
        return None, rest
    if sep:
        raise _Fail(f"{spec!r}: unlink removes shm:// and file:// stores")
    return (None, os.path.abspath(spec)) if "/" in spec else (spec, _named_path(spec))


def _unlink(args: argparse.Namespace) -> int:
    from .errors import StoreNotFound
    from .store import SharedStore

    name, path = _locate(args.store)
    label = f"shm://{name}" if name is not None else f"file://{path}"
    try:
        store = SharedStore(name, create=False) if name is not None else SharedStore(path=path, create=False)
    except StoreNotFound:
        raise _Fail(f"store {label} does not exist") from None
    except SluicegateError as e:
        if name is None:  # any file: remove only what is certainly a store
            raise _Fail(f"{path} is not a store this user can open ({e}); not removing it") from None
        if not args.yes:
            raise _Fail(f"store {label} cannot be opened ({e}); pass --yes to remove it anyway") from None
        what = "unreadable"
    else:
        n = len(store.policies())
        what = f"{_fmt_bytes(os.stat(path).st_size)}, {n} {'policy' if n == 1 else 'policies'}"
        store.close()
    mappers = _mappers()
    attached = _attached(os.stat(path), mappers)
    if attached and not args.yes:
        raise _Fail(f"store {label} is mapped by {len(attached)} running "
                    f"{'process' if len(attached) == 1 else 'processes'} (pid {', '.join(map(str, attached))}): "
                    "they would keep using it while processes that open it later get a new, empty store. Stop "
                    "them first, or pass --yes")
    if attached is None and not args.yes:
        raise _Fail(f"cannot tell whether processes use store {label} (no /proc here); pass --yes to unlink it")
    if name is not None:
        SharedStore.unlink(name)
    else:
        os.unlink(path)
    still = f"; {len(attached)} processes still have it mapped until they exit" if attached else ""
    print(f"unlinked store {label} ({path}: {what}){still}")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from .contrib.prometheus import main as metrics_main
    from .store import ENV_STORE

    stores = args.store or ([os.environ[ENV_STORE]] if os.environ.get(ENV_STORE) else [])
    if not stores:
        raise _Fail(f"which store? pass --store NAME|PATH|URL (or set ${ENV_STORE})")
    return int(metrics_main(stores, args.port, args.host))


_COMMANDS = {"config": _config, "ls": _ls, "inspect": _inspect, "top": _top, "health": _health, "reset": _reset,
             "open": _breaker_action, "close": _breaker_action, "disable": _breaker_action, "unlink": _unlink,
             "metrics": _metrics}
_HEALTH_ERROR = 3  # 0, 1 and 2 are health's answers


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's usage error is 2, which health means as "unhealthy"
        if command == "health" and e.code == 2:
            raise SystemExit(_HEALTH_ERROR) from None
        raise
    handler = _COMMANDS.get(args.command)
    if handler is not None:
        label = f"config {args.config_command}" if args.command == "config" else args.command
        try:
            return handler(args)
        except BrokenPipeError:  # the reader went away (| head): no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except (_Fail, SluicegateError, OSError) as e:
            print(f"sluicegate {label}: {e}", file=sys.stderr)
            return _HEALTH_ERROR if args.command == "health" else 1
        except KeyboardInterrupt:
            print(f"sluicegate {label}: interrupted", file=sys.stderr)
            return 130
    if args.command != "demo":
        parser.print_help()
        return 0
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workers=args.workers,
        seconds=args.seconds,
        rate=args.rate,
        algorithm=args.algorithm,
        burst=args.burst,
        start_method=args.start_method,
        refresh=max(0.05, args.refresh),
        live=False if args.no_live else None,
    )
    try:
        return run_demo(cfg)
    except SluicegateError as e:
        print(f"sluicegate demo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
