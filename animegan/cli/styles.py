"""``python -m animegan styles``: list the styles and where each comes from."""
from __future__ import annotations

import argparse

from ..weights import COMMUNITY_PRESETS, available_styles, describe, offline_styles


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("styles", help="list available styles")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ready = set(offline_styles())
    for name in available_styles():
        where = "community preset" if name in COMMUNITY_PRESETS else "project"
        state = "ready" if name in ready else "not downloaded"
        print(f"{name:24s} {where:17s} {state:15s} {describe(name)}")
    return 0
