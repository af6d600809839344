"""``python -m animegan video INPUT -o OUTPUT.mp4 --style NAME``."""
from __future__ import annotations

import argparse
import sys
import threading

from ..video import stylize_video
from .options import LazyBar, add_compile_flag, add_device_flags, half_from_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="turn a video into anime (sound kept)", description=(
        "Stylize a video frame by frame. Keeps the frame rate, frame count, orientation and sound. "
        "Writes H.264 MP4 (or a silent GIF when OUTPUT ends in .gif); Ctrl-C cancels and leaves no partial file."))
    p.add_argument("input", metavar="INPUT", help="video file")
    p.add_argument("-o", "--output", required=True, help="output file: .mp4 (also .m4v, .mov, .mkv) or .gif")
    p.add_argument("--style", default=None, help="style name, .safetensors or community .pt file "
                   "(default: the first offline style; with --portrait, the portrait style)")
    p.add_argument("--portrait", action="store_true", help="crop around the face found at the start (one fixed square box)")
    p.add_argument("--keep-colors", action="store_true", help="keep each frame's colours (Lab statistics)")
    p.add_argument("--max-side", type=int, default=None, help="cap on the output's long side in pixels")
    p.add_argument("--keep-size", action="store_true", help="with --max-side: cap only the model's input, write at the source size")
    p.add_argument("--work-side", type=int, default=None,
                   help="cap on the long side the model sees (the result is scaled up to the output's size); "
                        "default: the style's working size; 0: no cap beyond --max-side")
    p.add_argument("--start", type=float, default=None, help="start of the span to stylize, in seconds")
    p.add_argument("--end", type=float, default=None, help="end of the span to stylize, in seconds")
    p.add_argument("--batch", type=int, default=4, help="frames per model call (default 4)")
    add_compile_flag(p)
    add_device_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    progress = LazyBar("frame", "video")
    cancel = threading.Event()

    try:
        result = stylize_video(args.input, args.output, args.style, portrait=args.portrait,
                               keep_colors=args.keep_colors, max_side=args.max_side, start=args.start,
                               end=args.end, batch_size=args.batch, progress=progress, cancel=cancel,
                               device=args.device, half=half_from_flags(args), keep_size=args.keep_size,
                               compile_mode=args.compile, work_side=args.work_side)
    except KeyboardInterrupt:
        # stylize_video has already stopped its threads and removed its temporary files.
        cancel.set()
        raise
    finally:
        progress.close()
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    sound = "with sound" if result.had_audio else "no sound"
    seen = "" if (result.work_width, result.work_height) == (result.width, result.height) else \
        f" (stylized at {result.work_width}x{result.work_height})"
    print(f"{result.path} ({result.frames} frames, {result.width}x{result.height}{seen}, {result.fps:.3f} fps, "
          f"{result.seconds:.2f} s, {sound})")
    return 0
