"""Time training steps of the photo-to-anime trainer; prints one JSON object.

    python bench/train_animegan_bench.py [--recipes v2 v3] [--size 256] [--batch 4] [--steps 6] [--device cpu]
        [--data DIR] [--widths 1.0 0.5] [--split]

Without ``--data`` it draws a small synthetic dataset in a temporary folder (the speed of a
step does not depend on what the pictures show). The first two steps (warm-up, the init
phase) are not timed; D steps come once per ``d_every`` as in training.

Each recipe runs twice from the same seed on the same batches: the plain way (``amp`` and
``channels_last`` off: fp32 NCHW) and the trainer's default fast path (train/precision.py).
The JSON gives both rates and their ratio, and how closely the two compute the same step:
the relative difference of the first step's loss (the content-only init phase) and the
cosine similarity of the generator's gradients from it (same weights, same batch), beside the
cosine between the plain way's gradients on two different batches for scale. ``--widths`` repeats
all of it for generators of those widths (the ``generator.width`` setting), so a narrower layout is
compared with the default on the same machine in the same call. ``--split`` also times the parts
of a GAN-phase step alone, on the fast path (``split``, ms per step, D's update amortised over its
``d_every`` steps): cutting the batch, G forward and backward, the perceptual network (its
no-grad passes and its forward and backward through G's output), D for G's adversarial term, the D
update, and for v3 the superpixels and the guided filter; ``other`` is the rest (losses, optimisers).
Outputs
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


def _ms(fn, repeats: int, sync) -> float:
    """Mean milliseconds of ``fn()`` over ``repeats`` calls, after one untimed call."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) * 1000 / repeats


def split_step(trainer: StyleTrainer, repeats: int) -> dict:
    """Milliseconds per GAN-phase step of each part of it, each timed alone (see the module docstring)."""
    from train.losses import revision_target, superpixel_average

    cfg = trainer.cfg
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    step = cfg.init_steps + 1  # a G-only step of the GAN phase
    b = trainer.make_batch(step)
    photo, anime = trainer._move(b.photo), trainer._move(b.anime)
    gray, smooth = trainer._move(b.anime_gray), trainer._move(b.smooth_gray)
    v3 = cfg.recipe == "v3"
    with torch.no_grad(), trainer._autocast():
        out = trainer.g_train(photo)
    fake = (out[1] if v3 else out).float()
    parts: dict[str, float] = {}
    parts["data"] = _ms(lambda: trainer.make_batch(step), repeats, sync)

    def g_pass() -> None:
        with trainer._autocast():
            y = trainer.g_train(photo)
            loss = sum(t.float().mean() for t in (y if v3 else (y,)))
        loss.backward()
        trainer.generator.zero_grad(set_to_none=True)

    def perceptual() -> None:
        x = fake.detach().requires_grad_(True)
        with trainer._autocast():
            with torch.no_grad():
                trainer._feat(photo)
                trainer._feat(gray)
            f = trainer._feat(x)
        f.float().mean().backward()

    def d_for_g() -> None:
        x = fake.detach().requires_grad_(True)
        with trainer._autocast():
            y = trainer.discriminator(x).float().mean()
        y.backward()
        trainer.discriminator.zero_grad(set_to_none=True)

    parts["generator"] = _ms(g_pass, repeats, sync)
    parts["perceptual"] = _ms(perceptual, repeats, sync)
    parts["d_for_g"] = _ms(d_for_g, repeats, sync)
    state = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    opt = trainer.opt_d.state_dict()
    parts["d_update"] = _ms(lambda: trainer._d_update(out[1] if v3 else out, anime, gray, smooth), repeats,
                            sync) / cfg.d_every
    trainer.discriminator.load_state_dict(state)
    trainer.opt_d.load_state_dict(opt)
    if v3:
        with torch.no_grad():
            parts["superpixels"] = _ms(lambda: superpixel_average(fake, cfg.superpixels), repeats, sync)
            parts["guided_filter"] = _ms(lambda: revision_target(out[0].float()), repeats, sync)
    # The whole step as the trainer runs it: G steps, with one D step in d_every.
    whole = _ms(lambda: [trainer.train_step(step + k, b) for k in range(cfg.d_every)], 1, sync) / cfg.d_every
    parts = {k: round(v, 1) for k, v in parts.items()}
    parts["other"] = round(whole - sum(parts.values()), 1)
    parts["step"] = round(whole, 1)
    return parts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", default=["v2", "v3"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--device", default="auto")
    p.add_argument("--data")
    p.add_argument("--widths", nargs="+", type=float, default=[1.0], help="generator widths to time")
    p.add_argument("--split", action="store_true", help="also time the parts of a step (fast path)")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(synthetic(Path(tmp) / "ds"))
        for recipe, width in [(r, w) for r in args.recipes for w in args.widths]:
            row: dict = {"recipe": recipe, "width": width}
            first: dict = {}
            tag = f"{recipe}_{width}"
            for way, fast in (("plain", False), ("project", True)):
                cfg = StyleTrainConfig.from_dict(dict(data=data, recipe=recipe, size=args.size, batch=args.batch,
                                                      steps=args.steps + 2, init_steps=1, device=args.device,
                                                      log_every=1000, sample_every=10**6, checkpoint_every=10**6,
                                                      amp=fast, channels_last=fast, generator={"width": width}))
                trainer = StyleTrainer(cfg, Path(tmp) / f"run_{tag}_{way}", quiet=True)
                trainer.generator.train()
                loss = trainer.train_step(0)["loss_init_content"]
                grads = torch.cat([p.grad.double().flatten() for p in trainer.generator.parameters()])
                first[way] = (loss, grads)
                if way == "plain":  # the scale to judge the fast path by: another batch, same weights
                    other = StyleTrainer(cfg, Path(tmp) / f"run_{tag}_other", quiet=True)
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
                row["generator_parameters"] = sum(p.numel() for p in trainer.generator.parameters())
            if args.split:
                row["split"] = split_step(trainer, args.steps)
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
