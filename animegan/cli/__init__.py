"""The command line: ``python -m animegan COMMAND ...``.

Each command is a module here with ``add_parser(subparsers)`` and ``run(args) -> int``; it
parses, calls the library and prints. A library ``AnimeGANError`` becomes one line on
stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import AnimeGANError

# Command modules, in the order ``--help`` lists them. A module missing from this install
# (an optional part) is left out rather than breaking the others.
COMMANDS = ["stylize", "video", "faces", "fid", "styles", "push", "curve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m animegan", description="Photos and videos to anime; anime faces.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output folder that is a file, a full or read-only disk ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
