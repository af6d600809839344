"""Time photo stylization at several sizes; prints one JSON object.

    python bench/stylize_bench.py [--sizes 256 512 1024 1920x1080] [--repeat 3] [--device cpu]

Uses a randomly initialised AnimeGANv2 (the speed of a network does not depend on its
weights), so it runs on a fresh machine with no styles downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from animegan.models import build_model  # noqa: E402
from animegan.stylize import StyleOptions, Stylizer  # noqa: E402
from animegan.weights import save_weights  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "1024", "1920x1080"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    os.environ["ANIMEGAN_WEIGHTS_DIR"] = folder
    torch.manual_seed(0)
    save_weights(Path(folder) / "bench.safetensors", build_model("animeganv2").state_dict(),
                 {"architecture": "animeganv2"}, dtype=None)
    stylizer = Stylizer("bench", device=args.device)
    rng = np.random.default_rng(0)
    results = []
    for text in args.sizes:
        w, h = parse_size(text)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        stylizer(image, StyleOptions(tile=0))  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            stylizer(image, StyleOptions(tile=0))
            times.append(time.perf_counter() - start)
        results.append({"size": f"{w}x{h}", "seconds_median": round(statistics.median(times), 3),
                        "megapixels_per_s": round(w * h / 1e6 / statistics.median(times), 3)})
    print(json.dumps({"bench": "stylize", "device": str(stylizer.device), "dtype": str(stylizer.dtype),
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cpu": platform.processor() or platform.machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
