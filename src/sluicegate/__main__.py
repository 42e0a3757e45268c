"""Command line: `sluicegate demo`, `sluicegate config apply|show|clear` (also
`python -m sluicegate ...`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import SluicegateError


def _parser() -> argparse.ArgumentParser:
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
        description="Set the options a TOML file (the load_config format) gives each limiter, breaker and cap "
        "as that policy's runtime override, replacing any earlier override; it outranks the configuration "
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
    cc.add_argument("--kind", choices=["limiter", "breaker", "cap"], help="needed when several kinds share the name")
    cc.add_argument("--store", help=store_help)

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "config":
        try:
            return _config(args)
        except (_Fail, SluicegateError) as e:
            print(f"sluicegate config {args.config_command}: {e}", file=sys.stderr)
            return 1
    if args.command == "metrics":
        from .contrib.prometheus import main as metrics_main
        from .store import ENV_STORE

        stores = args.store or ([os.environ[ENV_STORE]] if os.environ.get(ENV_STORE) else [])
        if not stores:
            print(f"sluicegate metrics: which store? pass --store NAME|PATH|URL (or set ${ENV_STORE})",
                  file=sys.stderr)
            return 1
        return metrics_main(stores, args.port, args.host)
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
