"""The face upscaler's trainer: ``python -m train.face_upscaler --data DIR --out RUN_DIR --steps N``.

Trains ``animegan.models.face_upscaler.FaceUpscaler`` (64 -> 128 px) on real faces: each face at
the full size is the target, the same face shrunk the way the 64 px generator's training data is
(``train.data.load_square``: Lanczos) is the input. Losses: L1, a perceptual term (the trainers'
frozen network, ``train/perceptual.py``) and a light adversarial one (hinge, a spectral-norm D).

With ``--generator weights/faces64.safetensors`` every evaluation also measures what the app will
show: FID/KID of the upscaled generator's samples against the held-out faces at full size
(``fid``/``kid``), beside ``fid_real`` (the held-out faces shrunk and upscaled) and PSNR against
bilinear upsampling. The best evaluated step is kept (``checkpoints/best.pt``) and ``--export NAME``
writes ``weights/NAME.safetensors``: the generator and the upscaler as one 128 px face model.

The run folder, resume and graceful stop work as in the other trainers (``animegan/runs.py``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from animegan.errors import AnimeGANError
from animegan.export import export_upscaled_faces, upscaler_base, upscaler_state, weights_tensors_digest
from animegan.models.dcgan import DCGANDiscriminator, DCGANDiscriminatorConfig
from animegan.models.face_upscaler import FaceUpscaler, FaceUpscalerConfig, UpscaledFaceGenerator, \
    UpscaledFacesConfig
from animegan.names import check_name
from animegan.runs import RunFolder

from . import splits
from .common import (GracefulStop, TrainClock, check_resume_keeps_config, image_rows_grid, read_config_arg,
                     step_generator)
from .data import ImageFolderDataset, list_images, report_skipped
from .losses import content_loss, d_fake_loss, d_real_loss, g_adv_loss
from .perceptual import Perceptual
from .precision import add_fp32_flag, train_precision

SAMPLE_FACES = 8


@dataclass
class UpscalerTrainConfig:
    """Everything a run depends on."""

    data: str = ""
    size: int = 128                       # the output side; the input is half of it
    channels: int = 32
    blocks: int = 6
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.99
    steps: int = 10_000
    seed: int = 0
    flip: bool = True
    holdout: bool = True                  # keep 1 file in 10 out (train/splits.py): the evaluation's faces
    l1_weight: float = 1.0
    perceptual_weight: float = 0.01
    perceptual: str = "auto"              # auto | inception | vgg19 (train/perceptual.py)
    adv_weight: float = 0.005             # 0: no discriminator
    d_width: int = 32
    generator: str = ""                   # 64 px face weights whose upscaled samples are evaluated and exported
    generator_tensors: str = ""           # set at the start: SHA-256 of its tensors, the ones the run's FIDs measure
    amp: bool = True
    channels_last: bool = True
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    eval_every: int = 0                   # 0: never during training
    eval_samples: int = 2000              # generated faces per FID (with ``generator``)
    eval_limit: int = 1000                # held-out faces for PSNR and fid_real
    init_from: str = ""                   # a 128 px upscaled-face weights file whose upscaler a fresh run starts from

    def resolved(self) -> "UpscalerTrainConfig":
        c = dataclasses.replace(self)
        if c.size < 16 or c.size > 512 or c.size & (c.size - 1):  # the discriminator's sizes
            raise AnimeGANError(f"size must be a power of two from 16 to 512, not {c.size}")
        if c.batch_size < 1 or c.steps < 0 or c.channels < 1 or c.blocks < 0:
            raise AnimeGANError("batch and channels must be at least 1, steps and blocks at least 0")
        if min(c.l1_weight, c.perceptual_weight, c.adv_weight) < 0:
            raise AnimeGANError("loss weights cannot be negative")
        if min(c.log_every, c.sample_every, c.checkpoint_every) < 1 or c.eval_every < 0:
            raise AnimeGANError("log_every, sample_every and checkpoint_every must be at least 1, eval_every 0 or more")
        if c.eval_samples < 2 or c.eval_limit < 2:
            raise AnimeGANError("eval_samples and eval_limit must be at least 2 (FID needs two images)")
        if not c.lr > 0 or not (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1):
            raise AnimeGANError("lr must be positive and beta1, beta2 in [0, 1)")
        if c.generator and Path(c.generator).is_file():  # an absolute path: the app exports from elsewhere
            c.generator = str(Path(c.generator).resolve())
        if c.perceptual == "auto" and c.perceptual_weight:
            from .perceptual import vgg19_available

            c.perceptual = "vgg19" if vgg19_available() else "inception"  # recorded, so a resume keeps it
        return c

    def upscaler_config(self) -> FaceUpscalerConfig:
        return FaceUpscalerConfig(channels=self.channels, blocks=self.blocks)


# What a ``--resume`` may change: when to log, sample, checkpoint and evaluate, never a step's arithmetic.
RESUME_MAY_CHANGE = ("steps", "log_every", "sample_every", "checkpoint_every", "eval_every")


def config_from_dict(values: dict[str, Any]) -> UpscalerTrainConfig:
    values = {k: v for k, v in values.items() if k != "trainer"}  # config.json's marker for exports
    names = {f.name for f in dataclasses.fields(UpscalerTrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise AnimeGANError(f"unknown upscaler training config keys: {', '.join(unknown)}")
    return UpscalerTrainConfig(**values)


def load_face_generator(weights: str, size: int) -> nn.Module:
    """The 64 px face generator (fp32, eval) of a face weights file, checked against the run's output size."""
    return upscaler_base(weights, size)[1].eval().requires_grad_(False)


def warm_start(upscaler: FaceUpscaler, weights: str) -> None:
    """Start the upscaler from the one inside a 128 px upscaled-face weights file."""
    loaded, state = upscaler_state(weights)
    try:
        upscaler.load_state_dict(state)
    except RuntimeError as exc:
        raise AnimeGANError(f"{weights}: its upscaler does not fit this run's config "
                            f"({loaded.metadata.get('config', {}).get('upscaler')})") from exc


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of images in [-1, 1], after rounding to 8 bits as they are shown."""
    qa = ((a.float().clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.float().clamp(-1, 1) + 1) * 127.5).round()
    mse = ((qa - qb) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


def bilinear_up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------
def train(cfg: UpscalerTrainConfig, out: str | Path, resume: bool = False, export_name: str | None = None,
          verbose: bool = True) -> int:
    """Train (or continue) a run; returns the exit status (0 also after a graceful stop)."""
    run = RunFolder(out)
    stop = GracefulStop()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        stop.install()
    try:
        return _train(cfg, run, resume, export_name, verbose, stop)
    except BaseException as exc:
        if run.created:  # a refused start leaves the folder (and another run's status) as it was
            run.write_status("failed", error=str(exc)[:300])
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


class _Eval:
    """The held-out pairs, the reference statistics and the generator, made once per process."""

    def __init__(self, cfg: UpscalerTrainConfig, held: list[Path], dev: torch.device) -> None:
        from animegan.metrics import compute_stats

        if not held:
            raise AnimeGANError("evaluation needs held-out faces: keep holdout on")
        self.hr, self.lr = _held_pairs(held[: cfg.eval_limit], cfg.size)
        self.reference = compute_stats(held, device=dev)  # every held-out face, cached by the metrics module
        self.generator = load_face_generator(cfg.generator, cfg.size).to(dev) if cfg.generator else None
        self.dev = dev

    @torch.no_grad()
    def measure(self, upscaler: FaceUpscaler, cfg: UpscalerTrainConfig) -> dict[str, float]:
        from animegan.metrics import compute_stats, fid_from_stats, generator_batches, kid_from_features

        was_training = upscaler.training
        upscaler.eval()
        ups = torch.cat([upscaler(x.to(self.dev)).float().cpu() for x in self.lr.split(64)])
        values = {"psnr": psnr(ups, self.hr), "psnr_bilinear": psnr(bilinear_up(self.lr), self.hr)}
        values["fid_real"] = fid_from_stats(compute_stats(ups, device=self.dev), self.reference)
        if self.generator is not None:
            composite = _composite(self.generator, upscaler)
            stats = compute_stats(generator_batches(composite, cfg.eval_samples, seed=cfg.seed + 2, device=self.dev),
                                  device=self.dev, limit=cfg.eval_samples)
            values["fid"] = fid_from_stats(stats, self.reference)
            values["kid"] = kid_from_features(stats.features, self.reference.features, subsets=20)[0]
        upscaler.train(was_training)
        return values


def _held_pairs(files: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The readable ones of ``files`` at ``size`` and at half of it (unreadable faces are skipped)."""
    hr = ImageFolderDataset(files, size, preload=True, verbose=False)  # drops what it cannot read
    lr = ImageFolderDataset(hr.files, size // 2, preload=True, verbose=False)
    return hr.load_batch(range(len(hr))), lr.load_batch(range(len(lr)))


def _composite(generator: nn.Module, upscaler: FaceUpscaler) -> UpscaledFaceGenerator:
    """The generator and the upscaler as the one network an export writes (sharing their tensors)."""
    with torch.device("meta"):
        net = UpscaledFaceGenerator(UpscaledFacesConfig(generator=asdict(generator.config),
                                                        upscaler=asdict(upscaler.config)))
    net.generator, net.upscaler = generator, upscaler
    return net.eval()


def _train(cfg: UpscalerTrainConfig, run: RunFolder, resume: bool, export_name: str | None, verbose: bool,
           stop: GracefulStop) -> int:
    if resume and run.config_path.is_file():  # the run's config, but for what a resume may change (from cfg)
        saved = config_from_dict(run.read_config())
        cfg = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RESUME_MAY_CHANGE})
    cfg = cfg.resolved()
    if not cfg.data:
        raise AnimeGANError("no training data: pass --data DIR")
    files = list_images(cfg.data)
    train_files, held = (splits.split(files, "train"), splits.split(files, "eval")) if cfg.holdout else (files, [])
    if not train_files:
        raise AnimeGANError(f"{cfg.data}: no images left for training after the hold-out")
    if cfg.eval_every and not held:
        raise AnimeGANError("--eval-every needs held-out faces (holdout)")
    # A wrong generator file fails now, before the run folder is made.
    sample_generator = load_face_generator(cfg.generator, cfg.size) if cfg.generator else None
    if cfg.generator:
        digest = weights_tensors_digest(cfg.generator)
        if resume and cfg.generator_tensors and digest != cfg.generator_tensors:
            raise AnimeGANError(f"{cfg.generator}: its weights changed since this run started, and the run's "
                                "FID/KID measured the earlier ones; start a new run to evaluate these")
        cfg = dataclasses.replace(cfg, generator_tensors=digest)
    run.create({"trainer": "face_upscaler", **asdict(cfg)}, resume=resume)
    dev = torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda")
    precision = train_precision(dev, cfg.amp, cfg.channels_last, fp16_fallback=False)
    fmt = precision.memory_format

    hr_data = ImageFolderDataset(train_files, cfg.size, verbose=False)
    # The same readable files, in the same order (and preloaded alike, so the same ones are dropped).
    lr_data = ImageFolderDataset(hr_data.files, cfg.size // 2, preload=hr_data.cache is not None, verbose=False)
    if hr_data.skipped:
        report_skipped(hr_data.skipped)

    torch.manual_seed(cfg.seed)
    U = FaceUpscaler(cfg.upscaler_config()).to(dev, memory_format=fmt)
    D = DCGANDiscriminator(DCGANDiscriminatorConfig(image_size=cfg.size, width=cfg.d_width,
                                                    spectral_norm=True, batch_norm=False)).to(dev, memory_format=fmt)
    opt_u = torch.optim.Adam(U.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    perceptual = Perceptual(cfg.perceptual, dev).to(dev, memory_format=fmt) if cfg.perceptual_weight else None

    start = 0
    ckpt = run.load_latest_checkpoint(map_location=dev, set_aside_damaged=True) if resume else None
    if ckpt is not None:
        U.load_state_dict(ckpt["U"])
        D.load_state_dict(ckpt["D"])
        opt_u.load_state_dict(ckpt["opt_U"])
        opt_d.load_state_dict(ckpt["opt_D"])
        start = int(ckpt["step"])
        _log(verbose, f"resuming from step {start}")
    elif cfg.init_from:
        warm_start(U, cfg.init_from)
        _log(verbose, f"upscaler initialised from {cfg.init_from}")
    if resume:
        run.truncate_metrics(start)
    clock = TrainClock(float(ckpt.get("trained_s", 0.0)) if ckpt is not None else 0.0)
    best = run.load_best() if resume else None
    # A best step after the resumed one (its checkpoint was damaged and set aside) is redone, not trusted.
    best_score = best.get("score", math.inf) if best and int(best.get("step", 0)) <= start else math.inf

    def checkpoint(step: int) -> None:
        run.save_checkpoint(step, {"U": U.state_dict(), "D": D.state_dict(), "opt_U": opt_u.state_dict(),
                                   "opt_D": opt_d.state_dict(), "trained_s": clock.seconds})

    evaluation: _Eval | None = None
    sample_hr = sample_lr = generated = None
    if held:
        sample_hr, sample_lr = _held_pairs(held[:SAMPLE_FACES], cfg.size)
    if sample_generator is not None:  # the same latents at every step, as the face trainer's grids
        z = torch.randn(SAMPLE_FACES, sample_generator.latent_dim,
                        generator=torch.Generator().manual_seed(cfg.seed + 1))
        with torch.no_grad():
            generated = sample_generator(z)
    status_extra = {"total": cfg.steps, "images": len(hr_data), "skipped": len(hr_data.skipped),
                    "arch": "face_upscaler", "precision": precision.describe()}
    run.write_status("running", step=start, **status_extra)
    _log(verbose, f"training a 2x face upscaler {cfg.size // 2}->{cfg.size}px on {len(hr_data)} faces, "
                  f"steps {start}->{cfg.steps}, batch {cfg.batch_size}, device {dev} ({precision.describe()})")

    names = ("loss_l1", "loss_perceptual", "loss_adv", "loss_D")
    sums = torch.zeros(len(names))
    interval_start, interval_steps = time.perf_counter(), 0
    step = start
    U.train()
    D.train()
    while step < cfg.steps:
        gen = step_generator(cfg.seed, step)
        idx = torch.randint(len(hr_data), (cfg.batch_size,), generator=gen).tolist()
        hr, lr = hr_data.load_batch(idx), lr_data.load_batch(idx)
        if cfg.flip:
            flips = (torch.rand(len(idx), generator=gen) < 0.5).view(-1, 1, 1, 1)
            hr, lr = torch.where(flips, hr.flip(3), hr), torch.where(flips, lr.flip(3), lr)
        hr = hr.to(dev).contiguous(memory_format=fmt)
        lr = lr.to(dev).contiguous(memory_format=fmt)

        with precision.autocast():
            sr = U(lr)
            loss_l1 = (sr.float() - hr.float()).abs().mean()
            loss_p = torch.zeros((), device=dev)
            if perceptual is not None:
                with torch.no_grad():
                    target_features = perceptual(hr)
                loss_p = content_loss(target_features.float(), perceptual(sr).float())
            loss_adv = loss_d = torch.zeros((), device=dev)
            if cfg.adv_weight:
                loss_d = d_real_loss(D(hr).float(), "hinge") + d_fake_loss(D(sr.detach()).float(), "hinge")
        if cfg.adv_weight:
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with precision.autocast():
                loss_adv = g_adv_loss(D(sr).float(), "hinge")
        loss = cfg.l1_weight * loss_l1 + cfg.perceptual_weight * loss_p + cfg.adv_weight * loss_adv
        opt_u.zero_grad(set_to_none=True)
        loss.backward()
        opt_u.step()
        step += 1
        interval_steps += 1
        sums += torch.stack([v.detach().float().cpu() for v in (loss_l1, loss_p, loss_adv, loss_d)])

        values: dict[str, Any] = {}
        last = step == cfg.steps
        if step % cfg.log_every == 0 or last:
            elapsed = time.perf_counter() - interval_start
            values.update({n: float(v) for n, v in zip(names, sums / interval_steps)})
            values["images_per_s"] = cfg.batch_size * interval_steps / max(elapsed, 1e-9)
            sums.zero_()
            interval_steps = 0
        if sample_lr is not None and (step % cfg.sample_every == 0 or last):
            run.save_sample(step, _sample_grid(U, sample_lr, sample_hr, dev, generated))
        if cfg.eval_every and (step % cfg.eval_every == 0 or last):
            evaluation = evaluation or _Eval(cfg, held, dev)
            figures = evaluation.measure(U, cfg)
            values.update(figures)
            score = figures.get("fid", figures["fid_real"])
            if score < best_score:
                best_score = score
                run.save_best(step, {"U": U.state_dict(), "score": score, "metrics": figures,
                                     "trained_s": clock.seconds})
        if values:
            values["train_hours"] = clock.hours
            run.log(step, **values)
            run.write_status("running", step=step, **status_extra)
            _log(verbose, f"step {step}/{cfg.steps} " + " ".join(f"{k}={v:.4g}" for k, v in values.items()
                                                                 if k != "train_hours"))
            interval_start = time.perf_counter()
        if step % cfg.checkpoint_every == 0 or last:
            checkpoint(step)
        if stop.requested:
            if not (step % cfg.checkpoint_every == 0 or last):
                checkpoint(step)
            run.write_status("stopped", step=step, **status_extra)
            _log(verbose, f"stopped at step {step}; checkpoint written, resume with --resume")
            return 0
    if start >= cfg.steps and not run.checkpoints():
        checkpoint(step)
    run.write_status("finished", step=step, **status_extra)
    if export_name:
        path = export_upscaled_faces(run.path, export_name)
        _log(verbose, f"exported {path}")
    return 0


@torch.no_grad()
def _sample_grid(upscaler: FaceUpscaler, lr: torch.Tensor, hr: torch.Tensor, dev: torch.device,
                 generated: torch.Tensor | None = None) -> Any:
    """Rows: bilinear upsampling, the upscaler, the real face (held-out faces); then, with the
    generator's faces, those bilinear and upscaled (what the app shows)."""
    was_training = upscaler.training
    upscaler.eval()
    rows = [bilinear_up(lr), upscaler(lr.to(dev)).float().cpu(), hr]
    if generated is not None:
        rows += [bilinear_up(generated), upscaler(generated.to(dev)).float().cpu()]
    upscaler.train(was_training)
    return image_rows_grid(rows)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.face_upscaler",
                                description="Train a 2x face upscaler (64 -> 128 px) on real faces.")
    p.add_argument("--data", help="folder of face images at the output size or larger (searched recursively)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--steps", type=int, help="total training steps (a resumed run continues up to this)")
    p.add_argument("--config", help="JSON file (or inline JSON) with UpscalerTrainConfig fields; flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--generator", metavar="WEIGHTS",
                   help="64 px face weights: evaluate its upscaled samples (FID) and export with it")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (0: never)")
    p.add_argument("--eval-samples", type=int, help="generated faces per FID")
    p.add_argument("--init-from", metavar="WEIGHTS", help="start the upscaler from a 128 px upscaled-face weights file")
    add_fp32_flag(p)
    p.add_argument("--export", metavar="NAME", help="when done, write weights/NAME.safetensors (needs --generator)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.export:
            check_name(args.export, "weights name")
        values: dict[str, Any] = read_config_arg(args.config) if args.config else {}
        flags = {"data": args.data, "steps": args.steps, "batch_size": args.batch, "lr": args.lr,
                 "generator": args.generator, "eval_every": args.eval_every, "eval_samples": args.eval_samples,
                 "init_from": args.init_from}
        values.update({k: v for k, v in flags.items() if v is not None})
        if args.fp32:
            values["amp"] = False
        run = RunFolder(args.out)
        if args.resume and run.config_path.is_file():
            saved = run.read_config()
            # "auto" names no network: the run's recorded choice stands
            check_resume_keeps_config(saved, {k: v for k, v in values.items() if (k, v) != ("perceptual", "auto")},
                                      RESUME_MAY_CHANGE, asdict(UpscalerTrainConfig()))
            values = {**{k: saved[k] for k in RESUME_MAY_CHANGE if k in saved}, **values}
        cfg = config_from_dict(values)
        if args.export and not (cfg.generator or (args.resume and run.config_path.is_file()
                                                  and run.read_config().get("generator"))):
            raise AnimeGANError("--export writes the generator and the upscaler together: pass --generator WEIGHTS")
        if not args.resume and not cfg.data:
            raise AnimeGANError("pass --data DIR (a folder of face images)")
        return train(cfg, args.out, resume=args.resume, export_name=args.export, verbose=not args.quiet)
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
