"""Face generation latency and trainer throughput, both variants; prints one JSON object.

    python bench/faces_bench.py [--device cpu] [--size 128] [--train-size 64] [--batch 16] [--steps 6]
                                [--threads N] [--no-train]

Latency: one 128x128 face (batch 1, eval mode, after warm-up), median of repeats, through
``FaceGenerator`` (seed -> latent -> PIL) with the default widths. Throughput: training
images/s of ``train.faces`` on a small made-up folder (median of the logged intervals after
the first, which pays for start-up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animegan.faces import FaceGenerator  # noqa: E402
from animegan.models.dcgan import VARIANTS, DCGANGenerator, variant_configs  # noqa: E402


def latency(variant: str, size: int, device: str, repeats: int = 20) -> dict:
    torch.manual_seed(0)
    fg = FaceGenerator(DCGANGenerator(variant_configs(variant, size)[0]), device=device)
    for seed in range(3):
        fg.face(seed)
    times = []
    for seed in range(repeats):
        t = time.perf_counter()
        fg.face(seed)
        if fg.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}


def throughput(variant: str, size: int, batch: int, steps: int, device: str, data: Path, out: Path) -> dict:
    from train.faces import FaceTrainConfig, train
    from train.runs import RunFolder

    cfg = FaceTrainConfig(data=str(data), arch=variant, image_size=size, batch_size=batch, steps=steps,
                          log_every=2, sample_every=10**9, checkpoint_every=10**9)
    train(cfg, out, device=device, verbose=False)
    rates = [r["images_per_s"] for r in RunFolder(out).metrics()][1:] or [0.0]
    return {"images_per_s": round(statistics.median(rates), 1), "batch": batch, "size": size}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-train", action="store_true", help="latency only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"device": args.device, "torch_threads": torch.get_num_threads(), "latency_1_face": {},
                    "trainer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(64):
            Image.fromarray(rng.integers(0, 255, (args.train_size, args.train_size, 3), dtype=np.uint8)).save(
                data / f"{i}.png")
        for variant in VARIANTS:
            result["latency_1_face"][f"{variant}_{args.size}"] = latency(variant, args.size, args.device)
            if args.no_train:
                continue
            result["trainer"][f"{variant}_{args.train_size}"] = throughput(
                variant, args.train_size, args.batch, args.steps, args.device, data, Path(tmp) / variant)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
