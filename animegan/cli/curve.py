"""``python -m animegan curve RUN``: a run's evaluations against its training hours, its best step,
and whether it has gone flat (the campaigns' rule for when to stop)."""
from __future__ import annotations

import argparse
import json

from ..training import run_curve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="a training run's quality curve: best step, hours, flat or not")
    p.add_argument("folder", metavar="RUN", help="a run folder (runs/NAME)")
    p.add_argument("--metric", help="the figure to judge by (default: kid for a style run, fid for a face run)")
    p.add_argument("--flat", type=float, default=2.0, metavar="HOURS",
                   help="flat means no gain over the last HOURS of training (default 2)")
    p.add_argument("--min-hours", type=float, default=0.0, metavar="HOURS",
                   help="and at least this many hours of training in all (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    curve = run_curve(args.folder, args.metric)
    flat = curve.flat(args.flat, args.min_hours)
    if args.json:
        best = curve.best
        print(json.dumps({"metric": curve.metric, "hours": round(curve.hours, 3),
                          "best": None if best is None else {"step": best.step, "hours": round(best.hours, 3),
                                                             "value": best.value},
                          "hours_since_best": round(curve.hours_since_best, 3), "flat": flat,
                          "points": [[p.step, round(p.hours, 3), p.value] for p in curve.points]}))
        return 0
    print(f"{'step':>10} {'hours':>7} {curve.metric:>12}")
    for p in curve.points:
        print(f"{p.step:>10,} {p.hours:>7.2f} {p.value:>12.5g}" + ("  best" if p == curve.best else ""))
    print(curve.summary())
    print(f"flat (no gain over the last {args.flat:g} h{f', after {args.min_hours:g} h' if args.min_hours else ''}): "
          + ("yes" if flat else "no"))
    return 0
