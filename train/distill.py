"""Distil a style into a slimmer generator: the ``<style>-fast`` styles for CPU video.

    python -m train.distill --teacher STYLE --photos DIR --out runs/NAME [--steps 3000]
        [--width 0.45] [--size 256] [--batch 8] [--resume] [--export NAME]

The student is an AnimeGANv2 generator with every channel count scaled by ``width`` (0.45:
about 4.5x fewer FLOPs than the full network). It learns the teacher's outputs on random crops
of the photos: L1 to the teacher's picture plus L1 between their perceptual features (the
trainers' perceptual network: VGG19 where its weights are on the machine, else the offline
Inception-v3). The run folder is the other trainers' (``animegan.runs``): config.json,
metrics.jsonl, sample grids (photo / teacher / student rows), checkpoints and ``--resume``.

``evaluate`` measures how far a student is from its teacher on held-out photos (perceptual
distance, PSNR, mean absolute difference) and ``--export`` writes those figures into the
weights' metadata, beside the FLOPs of both networks.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from animegan.device import inference_dtype, pick_device, prepare
from animegan.errors import AnimeGANError
from animegan.models import build_model
from animegan.models.flops import conv_flops
from animegan.names import check_name
from animegan.runs import RunFolder

from .animegan import threading_main
from .common import GracefulStop, image_rows_grid, read_config_arg, rng_state, set_rng_state, step_generator
from .perceptual import Perceptual
from .precision import add_fp32_flag, train_precision
from .style_data import PhotoCrops

FAST_SUFFIX = "-fast"


@dataclass
class DistillConfig:
    """Everything a distillation run depends on; saved as the run's config.json."""

    teacher: str = ""
    photos: str = ""
    width: float = 0.45
    steps: int = 3000
    size: int = 256
    batch: int = 8
    lr: float = 5e-4
    perceptual_weight: float = 0.01  # features are on a 0-255-like scale: ~0.5 against L1's ~0.2 at the start
    perceptual: str = "auto"
    seed: int = 0
    val_photos: int = 4
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    amp: bool = True  # bf16 autocast where the device has it natively (train/precision.py)
    channels_last: bool = True
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AnimeGANError(f"unknown distillation config keys: {', '.join(unknown)}")
        cfg = cls(**values)
        if not cfg.teacher:
            raise AnimeGANError("a teacher style is required (--teacher NAME or a weights file)")
        if not 0 < cfg.width < 1:
            raise AnimeGANError(f"width must be between 0 and 1 (a slimmer network), not {cfg.width}")
        for name in ("steps", "size", "batch", "log_every", "sample_every", "checkpoint_every"):
            if int(getattr(cfg, name)) < 1:
                raise AnimeGANError(f"{name} must be at least 1")
        return cfg


def load_teacher(style: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher network, frozen, in the inference policy's precision (its outputs are targets only)."""
    from animegan.weights import build_from_weights, load_weights

    weights = load_weights(style, kind="style")
    if weights.kind != "style":
        raise AnimeGANError(f"{weights.source}: holds a {weights.kind} network, not a photo-to-anime style")
    net = prepare(build_from_weights(weights), device, inference_dtype(device))
    for p in net.parameters():
        p.requires_grad_(False)
    return net, dict(weights.metadata)


class Distiller:
    """Teacher, student, data and optimiser of one run; ``run`` trains."""

    def __init__(self, cfg: DistillConfig, out: str | Path, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.quiet, self.resume = cfg, quiet, resume
        self.device = pick_device(None if cfg.device == "auto" else cfg.device)
        self.run_folder = RunFolder(out, keep_checkpoints=cfg.keep_checkpoints)
        self.teacher, self.teacher_meta = load_teacher(cfg.teacher, self.device)
        self.data = PhotoCrops(cfg.photos, size=cfg.size, val_photos=cfg.val_photos)
        torch.manual_seed(cfg.seed)
        self.precision = train_precision(self.device, cfg.amp, cfg.channels_last)
        fmt = self.precision.memory_format
        self.student = build_model("animeganv2", self.student_config()).to(self.device, memory_format=fmt)
        self.perceptual = Perceptual(cfg.perceptual, self.device).to(memory_format=fmt)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.step = 0

    def student_config(self) -> dict[str, Any]:
        align = self.teacher_meta.get("config", {}).get("align_corners", True)
        return {"width": self.cfg.width, "align_corners": bool(align)}

    def targets(self, photo: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.teacher(photo.to(next(self.teacher.parameters()).dtype))
        return out.float().clone()  # out of inference mode, so autograd may read it

    def train_step(self, step: int) -> dict[str, float]:
        photo = self.data.batch(self.cfg.batch, step_generator(self.cfg.seed, step)).to(self.device)
        photo = photo.contiguous(memory_format=self.precision.memory_format)
        target = self.targets(photo)
        with self.precision.autocast():
            out = self.student(photo).float()
            with torch.no_grad():
                target_features = self.perceptual(target).float()
            features = self.perceptual(out).float()
        pixel = F.l1_loss(out, target)
        feature = F.l1_loss(features, target_features)
        loss = pixel + self.cfg.perceptual_weight * feature
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "loss_pixel": pixel.item(), "loss_perceptual": feature.item()}

    def sample(self) -> Any:
        photos = self.data.validation_batch().to(self.device)
        self.student.eval()
        with torch.no_grad():
            rows = [photos, self.targets(photos), self.student(photos)]
        self.student.train()
        return image_rows_grid([r.cpu() for r in rows])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.student.state_dict(), "opt": self.opt.state_dict(), "rng": rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["generator"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def config_record(self) -> dict[str, Any]:
        record = asdict(self.cfg)
        record.update(trainer="distill", perceptual_network=self.perceptual.name, generator=self.student_config(),
                      data_description=self.data.describe(), teacher_name=self.teacher_meta.get("name"),
                      precision=self.precision.describe(),
                      teacher_training_data=self.teacher_meta.get("training_data"))
        return record

    def run(self) -> str:
        """Train up to ``cfg.steps``; 'finished', or 'stopped' (SIGTERM/SIGINT, after a checkpoint)."""
        cfg, rf = self.cfg, self.run_folder
        rf.create(self.config_record(), resume=self.resume)
        if self.resume:
            state = rf.load_latest_checkpoint(map_location=self.device, set_aside_damaged=True)
            if state is not None:
                self.load_state_dict(state)
            rf.truncate_metrics(self.step)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if threading_main() else {}
        stop = GracefulStop().install() if handlers else GracefulStop()
        extra = {"total": cfg.steps, "photos": len(self.data.photos), "teacher": cfg.teacher,
                 "precision": self.precision.describe()}
        rf.write_status("running", step=self.step, **extra)
        progress = None
        if not self.quiet:
            from tqdm import tqdm

            progress = tqdm(total=cfg.steps, initial=self.step, desc="distill", unit="step", dynamic_ncols=True)
        self.student.train()
        sums: dict[str, float] = {}
        t0, count = time.time(), 0
        state = "finished"
        try:
            while self.step < cfg.steps:
                if stop.requested:
                    state = "stopped"
                    break
                for k, v in self.train_step(self.step).items():
                    sums[k] = sums.get(k, 0.0) + v
                self.step += 1
                count += 1
                if progress is not None:
                    progress.update(1)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    means = {k: v / count for k, v in sums.items()}
                    rf.log(self.step, **means, images_per_s=count * cfg.batch / max(time.time() - t0, 1e-9))
                    rf.write_status("running", step=self.step, **extra)
                    if progress is not None:
                        progress.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
                    sums, t0, count = {}, time.time(), 0
                if self.step % cfg.sample_every == 0 or last:
                    rf.save_sample(self.step, self.sample())
                if self.step % cfg.checkpoint_every == 0 or last:
                    rf.save_checkpoint(self.step, self.state_dict())
            if state == "stopped":
                rf.save_checkpoint(self.step, self.state_dict())
            rf.write_status(state, step=self.step, **extra)
        except BaseException as exc:
            rf.write_status("failed", step=self.step, **extra, error=str(exc)[:500])
            raise
        finally:
            if progress is not None:
                progress.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return state


# ----------------------------------------------------------------------------------------
# Evaluation and export
# ----------------------------------------------------------------------------------------
def evaluate(student: nn.Module, teacher: nn.Module, photos: torch.Tensor,
             perceptual: Perceptual | None = None) -> dict[str, float]:
    """How far the student's pictures are from the teacher's on ``photos`` (NCHW in [-1, 1]).

    Both run in float32 here, so the figures measure the distillation, not the precision.
    ``perceptual_distance`` is the mean L1 between the perceptual features, the quantity
    the student was trained to lower; ``perceptual_distance_photo`` is the same between the
    teacher's output and the untouched photo, the scale it should be read against.
    """
    perceptual = perceptual or Perceptual("auto", photos.device)
    teacher32 = prepare(_copy(teacher), photos.device, torch.float32)
    student32 = prepare(_copy(student), photos.device, torch.float32)
    totals = {"perceptual_distance": 0.0, "perceptual_distance_photo": 0.0, "mean_abs_diff_255": 0.0, "mse": 0.0}
    for x in photos.split(4):
        with torch.no_grad():
            t, s = teacher32(x).clamp(-1, 1), student32(x).clamp(-1, 1)
            ft = perceptual(t)
            totals["perceptual_distance"] += float(F.l1_loss(perceptual(s), ft)) * len(x)
            totals["perceptual_distance_photo"] += float(F.l1_loss(perceptual(x), ft)) * len(x)
            totals["mean_abs_diff_255"] += float((s - t).abs().mean()) * 127.5 * len(x)
            totals["mse"] += float(((s - t) / 2).pow(2).mean()) * len(x)
    n = len(photos)
    out = {k: v / n for k, v in totals.items()}
    out["psnr_db"] = float(10 * np.log10(1.0 / max(out.pop("mse"), 1e-12)))
    out["photos"] = n
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def export(run_dir: str | Path, name: str | None = None, photos: str | Path | None = None,
           weights_folder: str | Path | None = None, limit: int = 64) -> Path:
    """Write the run's student to ``weights/NAME.safetensors`` (default ``<teacher>-fast``) with metadata.

    With ``photos`` (held-out photos, not the training folder) the metadata also records the
    student's distance to its teacher (``evaluate``).
    """
    from animegan.weights import save_weights, weights_dir

    rf = RunFolder(run_dir)
    config = rf.read_config()
    state = rf.load_latest_checkpoint()
    if state is None:
        raise AnimeGANError(f"{rf.path}: no checkpoint to export yet")
    cfg = DistillConfig.from_dict({k: v for k, v in config.items() if k in {f.name for f in fields(DistillConfig)}})
    device = torch.device("cpu")
    teacher, teacher_meta = load_teacher(cfg.teacher, device)
    teacher_name = str(teacher_meta.get("name") or Path(cfg.teacher).stem)
    name = check_name(name or f"{teacher_name}{FAST_SUFFIX}", "style name")
    student = build_model("animeganv2", config["generator"])
    student.load_state_dict(state["generator"])
    student.eval()
    teacher32 = prepare(teacher, device, torch.float32)
    flops = {"student_gflop_512": round(conv_flops(student) / 1e9, 2),
             "teacher_gflop_512": round(conv_flops(teacher32) / 1e9, 2)}
    flops["flops_ratio"] = round(flops["teacher_gflop_512"] / flops["student_gflop_512"], 2)
    metrics: dict[str, Any] = {**flops}
    if photos is not None:
        batch = PhotoCrops(photos, size=cfg.size, val_photos=limit).validation_batch()  # centre crops
        metrics["distance_to_teacher"] = {**evaluate(student, teacher32, batch), "photos_folder": str(photos)}
    meta = {
        "name": name,
        "kind": "style",
        "architecture": "animeganv2",
        "config": config["generator"],
        "description": (f"{teacher_name} distilled into a {cfg.width}-width AnimeGANv2 "
                        f"({flops['flops_ratio']}x fewer FLOPs) for fast CPU video"),
        "teacher": teacher_name,
        "training_data": f"teacher outputs on {config.get('data_description', cfg.photos)}",
        "teacher_training_data": teacher_meta.get("training_data"),
        "steps": int(state["step"]),
        "perceptual_network": config.get("perceptual_network"),
        "metrics": metrics,
        "run": str(rf.path),
        "licence": teacher_meta.get("licence") or "the teacher style's terms apply to this distilled copy",
    }
    folder = Path(weights_folder) if weights_folder else weights_dir()
    return save_weights(folder / f"{name}.safetensors", state["generator"], meta)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="style name or weights file to distil")
    p.add_argument("--photos", help="folder of photos (read recursively) to train on")
    p.add_argument("--out", required=True, help="run folder (created; reused with --resume)")
    p.add_argument("--steps", type=int)
    p.add_argument("--width", type=float, help="student channel scale (default 0.45: ~4.5x fewer FLOPs)")
    p.add_argument("--size", type=int, help="training crop side (default 256)")
    p.add_argument("--batch", type=int)
    p.add_argument("--config", help="JSON file or inline JSON object of config keys")
    p.add_argument("--device", help="auto, cpu, cuda ...")
    add_fp32_flag(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--export", nargs="?", const="", metavar="NAME",
                   help="when done, write weights/NAME.safetensors (default name: <teacher>-fast)")
    p.add_argument("--eval-photos", help="held-out photos for the distance figures written at export")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.export:
            check_name(args.export, "style name")
        values: dict[str, Any] = {}
        saved = Path(args.out) / "config.json"
        if args.resume and saved.is_file():
            known = {f.name for f in fields(DistillConfig)}
            values = {k: v for k, v in RunFolder(args.out).read_config().items() if k in known}
        if args.config:
            values.update(read_config_arg(args.config))
        values.update({k: getattr(args, k) for k in ("teacher", "photos", "steps", "width", "size", "batch", "device")
                       if getattr(args, k) is not None})
        if args.fp32:
            values["amp"] = False
        if not values.get("photos"):
            raise AnimeGANError("--photos is required (a folder of photos)")
        cfg = DistillConfig.from_dict(values)
        distiller = Distiller(cfg, args.out, resume=args.resume, quiet=args.quiet)
        if not args.quiet:
            print(f"{distiller.data.describe()}; teacher {cfg.teacher}; student width {cfg.width}; "
                  f"perceptual network {distiller.perceptual.name}; device {distiller.device} "
                  f"({distiller.precision.describe()})", flush=True)
        state = distiller.run()
        if args.export is not None and state == "finished":
            path = export(args.out, args.export or None, photos=args.eval_photos)
            if not args.quiet:
                print(f"exported {path}", flush=True)
        return 0
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
