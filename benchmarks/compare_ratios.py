"""Compare a run's ratio table with the committed baseline; fail only on a wide regression.

    python benchmarks/compare_ratios.py bench-ratios.json benchmarks/baseline_ratios.json [--margin 2.0]

A ratio whose target reads "<= x" regresses when it grows past baseline * margin; one
whose target reads ">= x" when it falls below baseline / margin.  The margin is wide
(2x by default) because CI machines are shared and noisy: the benchmarks report, and
only a regression of that size fails the run.  A missed target alone does not fail it
(the table says MISSED).  Rows new or gone since the baseline are listed, not judged."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("current")
    p.add_argument("baseline")
    p.add_argument("--margin", type=float, default=2.0)
    a = p.parse_args(argv)
    with open(a.current) as f:
        cur = {r["what"]: r for r in json.load(f)}
    with open(a.baseline) as f:
        base = {r["what"]: r for r in json.load(f)}
    bad = []
    for what, r in cur.items():
        b = base.get(what)
        if b is None:
            print(f"new:       {what}: {r['ratio']:.2f}x")
            continue
        lower_is_better = r["target"].strip().startswith("<")
        worse = r["ratio"] > b["ratio"] * a.margin if lower_is_better else r["ratio"] < b["ratio"] / a.margin
        mark = "REGRESSED" if worse else "ok"
        print(f"{mark:10} {what}: {r['ratio']:.2f}x (baseline {b['ratio']:.2f}x, target {r['target']})")
        if worse:
            bad.append(what)
    for what in base.keys() - cur.keys():
        print(f"gone:      {what}")
    if bad:
        print(f"{len(bad)} ratio(s) regressed past {a.margin}x of the baseline: {', '.join(bad)}")
        return 1
    print(f"no ratio regressed past {a.margin}x of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
