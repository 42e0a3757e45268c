"""Command line: `sluicegate demo` (also `python -m sluicegate demo`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
