"""Time training steps of the photo-to-anime trainer; prints one JSON object.

    python bench/train_animegan_bench.py [--recipes v2 v3] [--size 256] [--batch 4] [--steps 6] [--device cpu]
        [--data DIR]

Without ``--data`` it draws a small synthetic dataset in a temporary folder (the speed of a
step does not depend on what the pictures show). The first two steps (warm-up, the init
phase) are not timed; D steps come once per ``d_every`` as in training.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from train.animegan import StyleTrainConfig, StyleTrainer  # noqa: E402


def synthetic(root: Path, n: int = 12, side: int = 300) -> Path:
    rng = np.random.default_rng(0)
    (root / "real_images").mkdir(parents=True)
    (root / "anime_images").mkdir(parents=True)
    for i in range(n):
        noise = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((side, side), Image.Resampling.BICUBIC).save(root / "real_images" / f"{i}.png")
        im = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(60, 230, 3)))
        ImageDraw.Draw(im).line((0, i * 9, side, side - i * 7), fill=(0, 0, 0), width=3)
        im.save(root / "anime_images" / f"{i}.png")
    return root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", default=["v2", "v3"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--device", default="auto")
    p.add_argument("--data")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(synthetic(Path(tmp) / "ds"))
        for recipe in args.recipes:
            cfg = StyleTrainConfig.from_dict(dict(data=data, recipe=recipe, size=args.size, batch=args.batch,
                                                  steps=args.steps + 2, init_steps=1, device=args.device,
                                                  log_every=1000, sample_every=10**6, checkpoint_every=10**6))
            trainer = StyleTrainer(cfg, Path(tmp) / f"run_{recipe}", quiet=True)
            trainer.generator.train()
            for step in range(2):
                trainer.train_step(step)
            sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
            sync()
            t0 = time.perf_counter()
            for step in range(2, args.steps + 2):
                trainer.train_step(step)
            sync()
            elapsed = time.perf_counter() - t0
            results.append({"recipe": recipe, "s_per_step": elapsed / args.steps,
                            "images_per_s": args.steps * args.batch / elapsed,
                            "perceptual": trainer.perceptual.name})
    print(json.dumps({"bench": "train_animegan", "device": str(trainer.device), "size": args.size,
                      "batch": args.batch, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
