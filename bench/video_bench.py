"""End-to-end video throughput: the overlapped pipeline against a plain sequential loop.

    python bench/video_bench.py [--seconds 6] [--size 320x240] [--fps 25] [--batch 4] [--repeat 2]
                                [--max-side N] [--keep-size] [--style NAME | --width 0.45] [--fp32]
                                [--device cpu] [--compile [MODE]]

Both paths decode the same generated clip with OpenCV, run the same network in batches of the
same size and encode with the same ffmpeg settings; the sequential loop does one stage at a
time in one thread. Without --style a randomly initialised AnimeGANv2 is used (speed does
not depend on the weights' values). Prints one JSON object, with the largest pixel difference
between the two written videos (the pipeline must give the sequential loop's frames). The
plain precision is a separate run with --fp32. ``--compile`` runs the network through
torch.compile (``Stylizer(compile_mode=...)``); its compile time is reported apart, not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from animegan import video  # noqa: E402
from animegan.cli.options import add_compile_flag  # noqa: E402
from animegan.stylize import Stylizer  # noqa: E402


def make_clip(path: Path, seconds: float, size: str, fps: int) -> None:
    subprocess.run([video.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={fps},hue=H=2*PI*t*0.3", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(path)], check=True)


def sequential(src: Path, out: Path, stylizer: Stylizer, batch: int, max_side: int | None, keep_size: bool) -> int:
    """Decode a batch, stylize it, encode it, repeat: no stage overlaps another."""
    info = video.probe_video(src)
    reader = video.FrameReader(info)
    # The style's working size, as stylize_video uses by default.
    plan = video.plan_geometry(info.width, info.height, None, max_side, keep_size, stylizer.working_side)
    encoder = video._Encoder(out, plan.out, reader.fps)
    frames = 0
    try:
        pending = []
        for rgb in reader.frames():
            pending.append(video._resize(rgb, plan.work))
            if len(pending) == batch:
                for styled in stylizer.run_arrays(pending):
                    encoder.write(video._resize(styled, plan.out))
                frames += len(pending)
                pending = []
        for styled in stylizer.run_arrays(pending):
            encoder.write(video._resize(styled, plan.out))
        frames += len(pending)
        encoder.finish()
    finally:
        reader.close()
    return frames


def frame_differences(a: Path, b: Path) -> dict:
    """Largest and mean pixel difference (of 255) between two written videos, frame by frame."""
    import numpy as np

    readers = [video.FrameReader(video.probe_video(p)) for p in (a, b)]
    means, largest = [], 0
    try:
        for fa, fb in zip(readers[0].frames(), readers[1].frames()):
            d = np.abs(fa.astype(np.int16) - fb.astype(np.int16))
            means.append(float(d.mean()))  # frames of one clip share a size: the mean of means is the mean
            largest = max(largest, int(d.max()))
    finally:
        for r in readers:
            r.close()
    mean = round(sum(means) / len(means), 3) if means else 0.0
    return {"frames_compared": len(means), "max_abs_diff_255": largest, "mean_abs_diff_255": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each; the best time counts")
    parser.add_argument("--style", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp32", action="store_true", help="the network in float32 (the plain precision)")
    parser.add_argument("--width", type=float, default=1.0, help="random init at this width (0.45: a -fast student)")
    parser.add_argument("--max-side", type=int, default=None, help="cap for the network (and output)")
    parser.add_argument("--keep-size", action="store_true", help="write at the source size despite --max-side")
    add_compile_flag(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        style = args.style
        if style is None:
            from animegan.models import build_model
            from animegan.weights import save_weights

            torch.manual_seed(0)
            os.environ["ANIMEGAN_WEIGHTS_DIR"] = str(tmp)
            config = {"width": args.width}
            save_weights(tmp / "bench.safetensors", build_model("animeganv2", config).state_dict(),
                         {"architecture": "animeganv2", "kind": "style", "config": config})
            style = "bench"
        stylizer = Stylizer(style, args.device, half=False if args.fp32 else None, compile_mode=args.compile)
        src = tmp / "clip.mp4"
        make_clip(src, args.seconds, args.size, args.fps)
        w, h = video.plan_geometry(*(int(v) for v in args.size.split("x")), None, args.max_side, args.keep_size,
                                   stylizer.working_side).work
        start = time.perf_counter()
        stylizer.run_arrays([torch.zeros(h, w, 3, dtype=torch.uint8).numpy()] * args.batch)  # warm-up (and compile)
        warm_up_s = time.perf_counter() - start
        if stylizer.compile_error:
            raise SystemExit(stylizer.compile_error)

        # Alternate the two and keep each one's best time: the machine may be shared.
        seq_s = overlap_s = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            frames_seq = sequential(src, tmp / "seq.mp4", stylizer, args.batch, args.max_side, args.keep_size)
            seq_s = min(seq_s, time.perf_counter() - start)
            start = time.perf_counter()
            result = video.stylize_video(src, tmp / "overlap.mp4", stylizer=stylizer, batch_size=args.batch,
                                          max_side=args.max_side, keep_size=args.keep_size)
            overlap_s = min(overlap_s, time.perf_counter() - start)

        # The overlapped run also muxes the sound back (one extra ffmpeg pass); time it alone too.
        start = time.perf_counter()
        video._mux_audio(tmp / "overlap.mp4", str(src), 0.0, result.seconds, tmp / "mux.mp4")
        mux_s = time.perf_counter() - start
        difference = frame_differences(tmp / "seq.mp4", tmp / "overlap.mp4")

    print(json.dumps({
        "clip": {"size": args.size, "fps": args.fps, "seconds": args.seconds, "frames": result.frames},
        "device": str(stylizer.device), "dtype": str(stylizer.dtype)[6:], "width": args.width,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "compile": args.compile, "warm_up_s": round(warm_up_s, 2),
        "batch": args.batch, "repeat": args.repeat, "max_side": args.max_side, "keep_size": args.keep_size,
        "sequential_fps": round(frames_seq / seq_s, 2),
        "overlapped_fps": round(result.frames / overlap_s, 2),
        "overlapped_fps_without_audio_mux": round(result.frames / max(1e-9, overlap_s - mux_s), 2),
        "ratio": round((result.frames / overlap_s) / (frames_seq / seq_s), 3),
        "peak_frames_queued": result.peak_queued,
        **difference,
        "compile_error": stylizer.compile_error,  # set if compiling failed mid-run (then the figures are eager)
        "model_busy_fraction": round(result.model_seconds / max(1e-9, result.model_seconds + result.model_wait_seconds), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
