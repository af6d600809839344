"""Time training steps of the photo-to-anime trainer; prints one JSON object.

    python bench/train_animegan_bench.py [--recipes v2 v3] [--size 256] [--batch 4] [--steps 6] [--device cpu]
        [--data DIR]

Without ``--data`` it draws a small synthetic dataset in a temporary folder (the speed of a
step does not depend on what the pictures show). The first two steps (warm-up, the init
phase) are not timed; D steps come once per ``d_every`` as in training.

Each recipe runs twice from the same seed on the same batches: the plain way (``amp`` and
``channels_last`` off: fp32 NCHW) and the trainer's default fast path (train/precision.py).
The JSON gives both rates and their ratio, and how closely the two compute the same step:
the relative difference of the first step's loss (the content-only init phase) and the
cosine similarity of the generator's gradients from it (same weights, same batch), beside the
cosine between the plain way's gradients on two different batches for scale. Outputs
after several steps are no measure: Adam's first updates move each weight by about the
learning rate whatever the gradient's size, so even fp32 NCHW against fp32 channels_last (the
same arithmetic summed in another order) ends six steps 20 levels of 255 apart on average.
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
            row: dict = {"recipe": recipe}
            first: dict = {}
            for way, fast in (("plain", False), ("project", True)):
                cfg = StyleTrainConfig.from_dict(dict(data=data, recipe=recipe, size=args.size, batch=args.batch,
                                                      steps=args.steps + 2, init_steps=1, device=args.device,
                                                      log_every=1000, sample_every=10**6, checkpoint_every=10**6,
                                                      amp=fast, channels_last=fast))
                trainer = StyleTrainer(cfg, Path(tmp) / f"run_{recipe}_{way}", quiet=True)
                trainer.generator.train()
                loss = trainer.train_step(0)["loss_init_content"]
                grads = torch.cat([p.grad.double().flatten() for p in trainer.generator.parameters()])
                first[way] = (loss, grads)
                if way == "plain":  # the scale to judge the fast path by: another batch, same weights
                    other = StyleTrainer(cfg, Path(tmp) / f"run_{recipe}_other", quiet=True)
                    other.generator.train()
                    other.train_step(0, batch=other.make_batch(1))
                    first["other"] = (0.0, torch.cat([p.grad.double().flatten() for p in other.generator.parameters()]))
                trainer.train_step(1)
                sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
                sync()
                t0 = time.perf_counter()
                for step in range(2, args.steps + 2):
                    trainer.train_step(step)
                sync()
                elapsed = time.perf_counter() - t0
                row[f"{way}_s_per_step"] = round(elapsed / args.steps, 3)
                row[f"{way}_images_per_s"] = round(args.steps * args.batch / elapsed, 3)
                row[f"{way}_precision"] = trainer.precision.describe()
                row["perceptual"] = trainer.perceptual.name
            (loss_a, grad_a), (loss_b, grad_b) = first["plain"], first["project"]
            row["speedup"] = round(row["plain_s_per_step"] / row["project_s_per_step"], 2)
            row["first_loss_rel_diff"] = round(abs(loss_a - loss_b) / abs(loss_a), 5)
            row["first_grad_cosine"] = round(float(torch.nn.functional.cosine_similarity(grad_a, grad_b, dim=0)), 5)
            row["other_batch_grad_cosine"] = round(float(torch.nn.functional.cosine_similarity(
                grad_a, first["other"][1], dim=0)), 5)
            results.append(row)
    print(json.dumps({"bench": "train_animegan", "device": str(trainer.device), "size": args.size,
                      "batch": args.batch, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
