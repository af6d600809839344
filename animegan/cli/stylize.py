"""``python -m animegan stylize INPUT... -o OUT --style NAME``."""
from __future__ import annotations

import argparse
import sys

from ..batch import stylize_files
from .options import LazyBar, add_device_flags, half_from_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="turn photos into anime", description=(
        "Stylize image files or folders (searched recursively). With one input and an -o that ends in an image "
        "suffix, writes that file; otherwise -o is a folder."))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--style", default=None, help="style name, .safetensors or community .pt file "
                   "(default: the first offline style; with --portrait, the portrait style)")
    p.add_argument("--portrait", action="store_true", help="crop the largest face and stylize it at 512x512")
    p.add_argument("--keep-colors", action="store_true", help="keep the photo's colours (Lab statistics)")
    p.add_argument("--max-side", type=int, default=None,
                   help="cap on the long side for inference (output keeps the input size); "
                        "default: the style's working size; 0: full size")
    p.add_argument("--tile", type=int, default=1024, help="tile side for large images (0 = never tile)")
    add_device_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    progress = LazyBar("img", "stylize")
    try:
        report = stylize_files(args.inputs, args.output, style=args.style, portrait=args.portrait,
                               keep_colors=args.keep_colors, max_side=args.max_side, tile=args.tile,
                               device=args.device, half=half_from_flags(args), progress=progress)
    finally:
        progress.close()
    for path in report.written:
        print(path)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for source, message in report.failed:
        print(f"skipped {source}: {message}", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} of {len(report.failed) + len(report.written)} files failed", file=sys.stderr)
        return 1
    return 0

