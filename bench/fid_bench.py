"""FID/KID feature speed: Inception-v3 pool features per second on this machine, as JSON.

``features_of`` (what FID, KID and the trainers' evaluations use) against the network called on
plain NCHW input, the layout it took before it fed the CPU channels_last.

    python bench/fid_bench.py [--batch 32] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animegan.inception import load_inception  # noqa: E402
from animegan.metrics import INCEPTION_SIZE, features_of  # noqa: E402


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _rate(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, INCEPTION_SIZE, INCEPTION_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = load_inception("cpu")

    def plain() -> None:
        with torch.inference_mode():
            net(x)

    with torch.inference_mode():
        difference = float((torch.from_numpy(features_of([x], device="cpu")) - net(x)).abs().max())
    result = {
        "cpu": _cpu_name(), "threads": torch.get_num_threads(), "batch": args.batch,
        "features_of_images_per_s": round(_rate(lambda: features_of([x], device="cpu"), args.batch, args.repeats), 2),
        "plain_nchw_images_per_s": round(_rate(plain, args.batch, args.repeats), 2),
        "max_abs_feature_difference": difference,
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
