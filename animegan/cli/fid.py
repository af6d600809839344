"""``python -m animegan fid A B``: FID (and KID) between two image folders, or a face model and a folder.

When A is a face training run folder, its newest checkpoint's generator (the EMA when present)
makes ``--samples`` images, and the figures are appended to the run's metrics.jsonl. When A is
a face weights file (``weights/faces128.safetensors``), its generator makes them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fid", help="FID/KID between two image folders, or a face run or weights file and a folder")
    p.add_argument("source", metavar="DIR_OR_RUN", help="image folder, a face training run folder, or a face "
                                                        "weights file (.safetensors)")
    p.add_argument("reference", metavar="DIR", help="reference image folder (statistics cached)")
    p.add_argument("--kid", action="store_true", help="also compute KID (always printed when cheap)")
    p.add_argument("--samples", type=int, default=5000, help="generated images when the first argument is a run or weights file")
    p.add_argument("--limit", type=int, help="use at most this many images of each folder")
    p.add_argument("--seed", type=int, default=0, help="latent seed for generated samples")
    p.add_argument("--device", help="cpu, cuda ... (default: auto)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import AnimeGANError
    from ..metrics import compute_stats, fid_from_stats, generator_batches, kid_from_features

    source = Path(args.source)
    if not source.exists():
        raise AnimeGANError(f"{source}: no such folder")
    if args.samples < 2:
        raise AnimeGANError("--samples must be at least 2")
    run_folder = generator = None
    if (source / "config.json").is_file() and (source / "checkpoints").is_dir():
        from ..runs import RunFolder

        run_folder = RunFolder(source)
        generator, step = _run_generator(run_folder, args.device)  # before the reference: a bad run fails fast
    elif source.is_file():
        from ..faces import FaceGenerator

        generator = FaceGenerator(source, device=args.device, half=False).net
    reference = compute_stats(args.reference, args.device, limit=args.limit, progress=True)
    if generator is not None:
        stats = compute_stats(generator_batches(generator, args.samples, seed=args.seed, device=args.device),
                              args.device, limit=args.samples, progress=True)
    else:
        stats = compute_stats(source, args.device, limit=args.limit, progress=True)
    result = {"fid": fid_from_stats(stats, reference)}
    kid_mean, kid_std = kid_from_features(stats.features, reference.features)
    result.update(kid=kid_mean, kid_std=kid_std, count_a=stats.count, count_b=reference.count)
    if run_folder is not None:
        result["step"] = step
        run_folder.log(step, fid=result["fid"], kid=result["kid"], fid_samples=args.samples,
                       fid_reference=str(args.reference))
    print(json.dumps(result))
    return 0


def _run_generator(run, device_name: str | None = None):
    """The newest checkpoint's generator of a face run (EMA weights when the run keeps them)."""
    from ..device import pick_device, prepare
    from ..errors import AnimeGANError
    from ..export import face_generator_config, is_style_run, is_upscaler_run
    from ..models.dcgan import DCGANGenerator

    config = run.read_config()
    if is_style_run(config):
        raise AnimeGANError(f"{run.path}: a photo-to-anime style run; FID of a run folder samples a face "
                            "generator. For a style, stylize held-out photos and compare that folder instead")
    if is_upscaler_run(config):
        raise AnimeGANError(f"{run.path}: a face upscaler run; export it with its generator (python -m "
                            "train.face_upscaler --out RUN --resume --export NAME), then measure "
                            "weights/NAME.safetensors")
    try:
        g_cfg = face_generator_config(config)
    except ValueError as exc:
        raise AnimeGANError(f"{run.path}: bad face run config ({exc})") from None
    ckpt = run.load_latest_checkpoint()
    if ckpt is None:
        raise AnimeGANError(f"{run.path}: the run has no checkpoint yet")
    generator = DCGANGenerator(g_cfg)
    generator.load_state_dict(ckpt.get("G_ema") or ckpt["G"])
    device = pick_device(device_name)
    return prepare(generator, device, torch_float32()), int(ckpt["step"])


def torch_float32():
    import torch

    return torch.float32
