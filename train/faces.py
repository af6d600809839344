"""The face trainer: ``python -m train.faces --data DIR --out RUN_DIR --steps N``.

A separate process that writes a run folder (``animegan/runs.py``) the app reads while it grows:
config.json, metrics.jsonl (loss_G, loss_D, d_real = mean sigmoid D(x), d_fake = mean
sigmoid D(G(z)), images_per_s, fid/kid when evaluated), samples/ (fixed-latent grids),
checkpoints/ (G, D, EMA, optimisers, scaler, step; ``best.pt``: the evaluated step of lowest fid, or
of the figure ``best_by`` names, which pruning never removes) and status.json.

With ``--eval-upscaler`` (a 128 px face model, e.g. ``weights/faces128.safetensors``) every
evaluation also measures the samples upscaled by that model's 2x upscaler against the real faces:
``fid_pair``/``kid_pair``, what this step would score shipped as a 128 px pair. Neither stage figure
foretells the pair reliably, so a campaign for the 128 px model picks its best step by it
(``--best-by fid_pair``). A warm start is measured before its first step too (step 0): the bar.

Every random draw of a step (batch choice, flips, noise, DiffAugment) comes from
``step_generator(seed, step, rank)``, so ``--resume`` after a kill gives the same weights as
an uninterrupted run. SIGTERM/SIGINT: checkpoint, then exit 0. Multi-GPU: ``torchrun
--nproc_per_node K -m train.faces ...`` (gloo on CPU). ``--export NAME`` writes
``weights/NAME.safetensors`` + ``NAME.json`` (+ ``NAME.sliders.safetensors``) with
``animegan.export.export_faces``: the newest step, or with ``--best`` the best evaluated one.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
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
from torch import nn

from animegan.curve import read_curve
from animegan.errors import AnimeGANError
from animegan.export import export_faces, face_generator_config, training_history
from animegan.models.dcgan import VARIANTS, DCGANConfig, DCGANDiscriminator, DCGANDiscriminatorConfig, \
    DCGANGenerator, variant_configs
from animegan.names import check_name
from animegan.runs import RunFolder

from . import distributed
from . import splits
from .common import GracefulStop, TrainClock, check_export_best, check_resume_keeps_config, ema_decay_at, \
    ema_update, load_generator_weights, load_shipped_discriminator, read_config_arg, step_generator
from .data import ImageFolderDataset, augment, list_images, report_skipped
from .diffaugment import diff_augment, parse_policy
from .losses import d_fake_loss, d_real_loss, g_adv_loss
from .precision import add_fp32_flag, train_precision


@dataclass
class FaceTrainConfig:
    """Everything a run depends on. Fields left as None take the variant's default (``resolved``)."""

    data: str = ""
    arch: str = "dcgan_improved"          # "dcgan" (the seeds) or "dcgan_improved"
    image_size: int = 64
    latent_dim: int = 0                   # 0: 300 at 64x64, 256 at 128x128 (the seeds' sizes)
    g_width: int = 64
    d_width: int = 64
    upsample: str | None = None           # "transposed" | "resize"
    spectral_norm: bool | None = None     # in D
    d_batch_norm: bool | None = None
    loss: str | None = None               # "bce" | "hinge"
    ema: bool | None = None               # exponential moving average of G's weights
    ema_decay: float = 0.999
    diffaugment: str | None = None        # e.g. "color,translation,cutout"; "" is off
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    steps: int = 10_000
    seed: int = 0
    flip: bool = True
    rotate: float = 0.0                   # degrees, +-
    shift: float = 0.0                    # fraction of the side, +-
    holdout: bool = False                 # keep 1 file in 10 out of training (train/splits.py) for FID
    amp: bool = True                      # bf16 autocast where the device has it natively (train/precision.py)
    channels_last: bool = True
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    fid_every: int = 0                    # 0: never during training
    fid_samples: int = 1000
    fid_reference: int = 0                # real images for the reference stats; 0: all
    best_by: str = "fid"                  # the figure whose lowest value picks best.pt: "fid", "fid64" in a
                                          # 64 px run (its faces shrunk to its size: its fair measure), or
                                          # "fid_pair" with eval_upscaler
    eval_upscaler: str = ""               # a 128 px face model whose upscaler each evaluation pairs with G
    sample_count: int = 16
    init_from: str = ""                   # weights file whose generator a fresh run starts from (warm start)
    d_warmup: int = 0                     # first steps that train only D (G frozen): a warm start's new D learns first

    def resolved(self) -> "FaceTrainConfig":
        """A copy with every variant default filled in (what config.json records)."""
        if self.arch not in VARIANTS:
            raise AnimeGANError(f"unknown face architecture {self.arch!r} (known: {', '.join(VARIANTS)})")
        improved = self.arch == "dcgan_improved"
        c = dataclasses.replace(self)
        c.latent_dim = c.latent_dim or variant_configs(c.arch, c.image_size)[0].latent_dim
        c.upsample = c.upsample or ("resize" if improved else "transposed")
        c.spectral_norm = improved if c.spectral_norm is None else c.spectral_norm
        c.d_batch_norm = (not improved) if c.d_batch_norm is None else c.d_batch_norm
        c.loss = c.loss or ("hinge" if improved else "bce")
        c.ema = improved if c.ema is None else c.ema
        c.diffaugment = ("color,translation,cutout" if improved else "") if c.diffaugment is None else c.diffaugment
        if c.loss not in ("bce", "hinge"):
            raise AnimeGANError(f"loss must be 'bce' or 'hinge', not {c.loss!r}")
        try:
            parse_policy(c.diffaugment)
            c.generator_config()
        except ValueError as exc:
            raise AnimeGANError(f"bad face training config: {exc}") from None
        if c.d_warmup < 0:
            raise AnimeGANError("d_warmup must be 0 or more steps")
        if c.batch_size < 1 or c.steps < 0 or c.sample_count < 1:
            raise AnimeGANError("batch size and sample_count must be at least 1, steps at least 0")
        if min(c.log_every, c.sample_every, c.checkpoint_every) < 1 or min(c.fid_every, c.fid_reference) < 0:
            raise AnimeGANError("log_every, sample_every and checkpoint_every must be at least 1, "
                                "fid_every and fid_reference 0 or more")
        if c.best_by not in ("fid", f"fid{c.image_size}", PAIR_FIGURE):
            raise AnimeGANError(f"best_by must be 'fid', 'fid{c.image_size}' (against the faces shrunk to "
                                f"the run's size) or '{PAIR_FIGURE}' (with eval_upscaler), not {c.best_by!r}")
        if c.best_by == PAIR_FIGURE and not c.eval_upscaler:
            raise AnimeGANError(f"best_by {PAIR_FIGURE} needs eval_upscaler: the 128 px face model whose upscaler "
                                f"makes the pair (e.g. --eval-upscaler weights/faces128.safetensors)")
        if c.fid_every and c.fid_samples < 2:
            raise AnimeGANError("fid_samples must be at least 2 (FID needs two images)")
        if not (c.lr_g > 0 and c.lr_d > 0) or not (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1):
            raise AnimeGANError("lr_g and lr_d must be positive and beta1, beta2 in [0, 1)")
        if not 0 <= c.ema_decay < 1:
            raise AnimeGANError(f"ema_decay must be in [0, 1), such as 0.999 (got {c.ema_decay})")
        return c

    def generator_config(self) -> DCGANConfig:
        """The generator of a resolved config (the library's mapping: exports rebuild the same network)."""
        return face_generator_config(asdict(self))

    def discriminator_config(self) -> DCGANDiscriminatorConfig:
        return DCGANDiscriminatorConfig(image_size=self.image_size, width=self.d_width,
                                        spectral_norm=bool(self.spectral_norm), batch_norm=bool(self.d_batch_norm))


# What a --resume may change: the length of the run and how often it reports, never a step's arithmetic.
RESUME_MAY_CHANGE = ("steps", "log_every", "sample_every", "checkpoint_every", "fid_every")


# What a run's config.json records beside its settings: not settings, so never taken from a user's --config.
RECORDED_KEYS = ("warm_start", "eval_upscaler_sha256")

# The figure of the samples upscaled by ``eval_upscaler``, against the real faces at their own size.
PAIR_FIGURE = "fid_pair"


def saved_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json without its records: the settings to build a ``FaceTrainConfig`` from."""
    return {k: v for k, v in config.items() if k not in RECORDED_KEYS}


def config_record(cfg: FaceTrainConfig, warm_start: dict[str, Any], upscaler_sha256: str = "") -> dict[str, Any]:
    """What config.json holds: the settings, the warm start's history when the run has one, and the
    evaluation upscaler's tensors (its figures compare only while they stay the same)."""
    return {**asdict(cfg), **({"warm_start": warm_start} if warm_start else {}),
            **({"eval_upscaler_sha256": upscaler_sha256} if upscaler_sha256 else {})}


def config_from_dict(values: dict[str, Any]) -> FaceTrainConfig:
    names = {f.name for f in dataclasses.fields(FaceTrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise AnimeGANError(f"unknown face training config keys: {', '.join(unknown)}")
    return FaceTrainConfig(**values)


def warm_start(G: nn.Module, G_ema: nn.Module | None, D: nn.Module, weights: str) -> dict[str, Any]:
    """Start G (and its EMA) from a face weights file, so a new run on a new machine loses no CPU-hour.

    The file must hold the same generator the config builds (same size, widths, latent size), or
    a 128 px model (``dcgan_upscaled``) whose 64 px stage is that generator: its stage is taken,
    since that is what this trainer trains (the upscaler has its own trainer).
    The discriminator exported beside it (``NAME.d.safetensors``) comes too when it fits this
    run's D. The optimisers start afresh. Returns the file's training history (``training_history``,
    for a 128 px file the pair's) and whether D came (``discriminator``).
    """
    loaded = load_generator_weights(G, weights, "faces", "a face generator",
                                    stages={"dcgan_upscaled": "generator."})
    if G_ema is not None:
        G_ema.load_state_dict(G.state_dict())
    return {**training_history(weights, loaded.metadata), "discriminator": load_shipped_discriminator(D, loaded.source)}


def load_eval_upscaler(weights: str, device: torch.device) -> tuple[nn.Module, str]:
    """The 2x upscaler inside a 128 px face model (``dcgan_upscaled``), in eval mode, and the SHA-256
    of its tensors; one line naming the file when it holds none."""
    from animegan.discriminator_file import tensors_sha256
    from animegan.export import upscaler_state
    from animegan.weights import build_from_weights

    loaded, state = upscaler_state(weights)
    net = build_from_weights(loaded).upscaler.float()  # the library's shape checks and errors
    return net.to(device).eval().requires_grad_(False), tensors_sha256(state)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------
def train(cfg: FaceTrainConfig, out: str | Path, resume: bool = False, device: str | None = None,
          export_name: str | None = None, verbose: bool = True, export_best: bool = False) -> int:
    """Train (or continue) a run; returns the exit status (0 also after a graceful stop).

    A resumed run keeps its saved config, but takes ``RESUME_MAY_CHANGE`` (steps, intervals) from ``cfg``.
    """
    dist = distributed.setup(device)
    run = RunFolder(out)
    try:
        status = _train(cfg, run, resume, dist, export_name, verbose, export_best)
    except BaseException as exc:
        if dist.is_main and run.created:  # a refused start leaves the folder (and another run's status) as it was
            run.write_status("failed", error=str(exc)[:300])
        raise
    finally:
        distributed.cleanup(dist)
    return status


def _log(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def _train(cfg: FaceTrainConfig, run: RunFolder, resume: bool, dist: distributed.Dist, export_name: str | None,
           verbose: bool, export_best: bool) -> int:
    verbose = verbose and dist.is_main
    prior: dict[str, Any] = {}
    recorded_upscaler = ""
    if resume and run.config_path.is_file():  # the run's config, but for what a resume may change (from cfg)
        raw = run.read_config()
        saved = config_from_dict(saved_settings(raw))
        cfg = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RESUME_MAY_CHANGE})
        prior = raw.get("warm_start") if isinstance(raw.get("warm_start"), dict) else {}
        recorded_upscaler = str(raw.get("eval_upscaler_sha256") or "")
    cfg = cfg.resolved()
    if not cfg.data:
        raise AnimeGANError("no training data: pass --data DIR")
    files = list_images(cfg.data)
    train_files, held = (splits.split(files, "train"), splits.split(files, "eval")) if cfg.holdout else (files, [])
    if not train_files:
        raise AnimeGANError(f"{cfg.data}: no images left for training after the hold-out")
    if cfg.fid_every and cfg.best_by == f"fid{cfg.image_size}" and not _measures_shrunk(held or train_files, cfg.image_size):
        raise AnimeGANError(f"best_by {cfg.best_by} measures against the faces shrunk to {cfg.image_size} px, "
                            f"and these faces are no larger: use best_by fid")
    dev = dist.device
    upscaler, upscaler_sha256 = load_eval_upscaler(cfg.eval_upscaler, dev) if cfg.eval_upscaler else (None, "")
    if recorded_upscaler and upscaler_sha256 != recorded_upscaler:
        raise AnimeGANError(f"{cfg.eval_upscaler} holds another upscaler than the one this run measured "
                            f"{PAIR_FIGURE} with: its figures would not compare (start a new run)")
    if dist.is_main:
        run.create(config_record(cfg, prior, upscaler_sha256), resume=resume)
    distributed.barrier(dist)
    on_cuda = dev.type == "cuda"
    precision = train_precision(dev, cfg.amp, cfg.channels_last, fp16_fallback=True)
    fmt = precision.memory_format

    dataset = ImageFolderDataset(train_files, cfg.image_size, verbose=False)
    if dataset.skipped and dist.is_main:
        report_skipped(dataset.skipped)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank and every fresh run
    G = DCGANGenerator(cfg.generator_config()).to(dev, memory_format=fmt)
    D = DCGANDiscriminator(cfg.discriminator_config()).to(dev, memory_format=fmt)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda and precision.needs_grad_scaler)

    start = 0
    ckpt = run.load_latest_checkpoint(map_location=dev, set_aside_damaged=dist.is_main) if resume else None
    if ckpt is None and cfg.init_from:
        prior = warm_start(G, G_ema, D, cfg.init_from)
        if dist.is_main:  # the export adds the file's steps, images and hours to the run's own
            run.write_config(config_record(cfg, prior, upscaler_sha256))
        _log(verbose, f"generator initialised from {cfg.init_from}; "
                      + ("its discriminator too" if prior["discriminator"] else "a new discriminator"))
    if resume:
        if ckpt is not None:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            if G_ema is not None and "G_ema" in ckpt:
                G_ema.load_state_dict(ckpt["G_ema"])
            opt_g.load_state_dict(ckpt["opt_G"])
            opt_d.load_state_dict(ckpt["opt_D"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            start = int(ckpt["step"])
            _log(verbose, f"resuming from step {start}")
        if dist.is_main:  # steps after the checkpoint are redone (all of them, step 0 too, without one)
            run.truncate_metrics(start if ckpt is not None else -1)
    clock = TrainClock(float(ckpt.get("trained_s", 0.0)) if ckpt is not None else 0.0)
    # Counted, not step x batch: a resume under torchrun may change the world size (older checkpoints lack it).
    images_before = int(ckpt.get("images_seen", start * cfg.batch_size)) if ckpt is not None else 0
    if dist.enabled:
        G = nn.parallel.DistributedDataParallel(G, device_ids=[dev.index] if on_cuda else None)
        D = nn.parallel.DistributedDataParallel(D, device_ids=[dev.index] if on_cuda else None)

    def networks(step: int) -> dict[str, Any]:
        state = {"G": _unwrap(G).state_dict(), "D": _unwrap(D).state_dict(), "trained_s": clock.seconds,
                 "images_seen": images_before + (step - start) * cfg.batch_size * dist.world_size}
        return {**state, "G_ema": G_ema.state_dict()} if G_ema is not None else state

    def checkpoint(step: int) -> None:
        if dist.is_main:
            run.save_checkpoint(step, {**networks(step), "opt_G": opt_g.state_dict(), "opt_D": opt_d.state_dict(),
                                       "scaler": scaler.state_dict()})

    # From the kept lines: a best.pt of a later step (its checkpoint damaged and set aside) is redone
    # identically and replaced then.
    kept = read_curve(run.metrics(), cfg.best_by).best if resume else None
    best_value = kept.value if kept else math.inf

    def keep_best(step: int, figures: dict[str, float]) -> None:
        """The evaluated step of lowest ``best_by``, apart from the pruned checkpoints: what a campaign ships."""
        nonlocal best_value
        if dist.is_main and figures.get(cfg.best_by, math.inf) < best_value:  # NaN never is
            best_value = figures[cfg.best_by]
            run.save_best(step, {**networks(step), "metrics": figures})

    stop = GracefulStop()
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        stop.install()
    else:
        previous = {}
    try:
        return _loop(cfg, run, dist, export_name, export_best, verbose, G, D, G_ema, opt_g, opt_d, scaler,
                     precision, dataset, train_files, held, start, checkpoint, keep_best, stop, clock, upscaler)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop(cfg, run, dist, export_name, export_best, verbose, G, D, G_ema, opt_g, opt_d, scaler, precision,
          dataset, train_files, held, start, checkpoint, keep_best, stop, clock, upscaler) -> int:
    """The training steps (split from the set-up so signal handlers are restored afterwards)."""
    dev = dist.device
    fmt = precision.memory_format
    fixed_z = torch.randn(cfg.sample_count, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    reference = None
    world_batch = cfg.batch_size * dist.world_size
    status_extra = {"total": cfg.steps, "images": len(dataset), "skipped": len(dataset.skipped), "arch": cfg.arch,
                    "precision": precision.describe()}
    if dist.is_main:
        run.write_status("running", step=start, **status_extra)
    _log(verbose, f"training {cfg.arch} {cfg.image_size}px on {len(dataset)} images, steps {start}->{cfg.steps}, "
                  f"batch {world_batch}, device {dev} ({precision.describe()})")

    sampler = G_ema if G_ema is not None else _unwrap(G)  # what the sample grids and evaluations use

    def evaluate(step: int) -> dict[str, float]:
        nonlocal reference
        figures: dict[str, float] = {}
        if dist.is_main:
            if reference is None:
                reference = _reference_stats(cfg, train_files, held, dev)
            figures = _fid(sampler, cfg, reference, dev, upscaler)
            keep_best(step, figures)
        distributed.barrier(dist)
        return figures

    if cfg.fid_every and cfg.init_from and start == 0 < cfg.steps:
        # The warm start's own figures on this run's measure: the bar its steps must pass
        figures = evaluate(0)
        if dist.is_main:
            run.log(0, **figures, train_hours=0.0)
        _log(verbose, "step 0 (the warm start) " + " ".join(f"{k}={v:.4g}" for k, v in figures.items()))

    sums = torch.zeros(4, device=dev)
    interval_start, interval_steps = time.perf_counter(), 0
    autocast = precision.autocast
    step = start
    G.train()
    D.train()
    while step < cfg.steps:
        gen = step_generator(cfg.seed, step, dist.rank)
        idx = torch.randint(len(dataset), (cfg.batch_size,), generator=gen).tolist()
        real = dataset.load_batch(idx).to(dev, non_blocking=True)
        real = augment(real, gen, cfg.flip, cfg.rotate, cfg.shift).contiguous(memory_format=fmt)
        z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen).to(dev)

        warming_up = step < cfg.d_warmup  # G frozen: no graph through it (nor DDP's gradient hooks)
        with autocast():
            if warming_up:  # eval mode too: batch norm's running statistics stay as they were
                G.eval()
                with torch.no_grad():
                    fake = G(z)
                G.train()
            else:
                fake = G(z)
            logits_real = D(diff_augment(real, cfg.diffaugment, gen))
            logits_fake = D(diff_augment(fake.detach(), cfg.diffaugment, gen))
            loss_d = d_real_loss(logits_real.float(), cfg.loss) + d_fake_loss(logits_fake.float(), cfg.loss)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)

        # D's gradients from the generator step are thrown away: no need to all-reduce them.
        with autocast(), (D.no_sync() if dist.enabled else contextlib.nullcontext()), \
                (torch.no_grad() if warming_up else contextlib.nullcontext()):
            loss_g = g_adv_loss(D(diff_augment(fake, cfg.diffaugment, gen)).float(), cfg.loss)
        if not warming_up:
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            if G_ema is not None:
                ema_update(G_ema, _unwrap(G), ema_decay_at(cfg.ema_decay, step, bool(cfg.init_from)))
        scaler.update()
        step += 1
        interval_steps += 1
        with torch.no_grad():
            sums += torch.stack([loss_g.detach().float(), loss_d.detach().float(),
                                 torch.sigmoid(logits_real.detach().float()).mean(),
                                 torch.sigmoid(logits_fake.detach().float()).mean()])

        values: dict[str, Any] = {}
        last = step == cfg.steps
        if step % cfg.log_every == 0 or last:
            mean = distributed.all_reduce_mean(sums / interval_steps, dist).tolist()
            elapsed = time.perf_counter() - interval_start
            values.update(loss_G=mean[0], loss_D=mean[1], d_real=mean[2], d_fake=mean[3],
                          images_per_s=world_batch * interval_steps / max(elapsed, 1e-9))
            sums.zero_()
            interval_steps = 0
        if dist.is_main and (step % cfg.sample_every == 0 or last):
            run.save_sample(step, sample_grid(sampler, fixed_z))
        if cfg.fid_every and (step % cfg.fid_every == 0 or last):
            values.update(evaluate(step))
        if values:
            values["train_hours"] = clock.hours
            if dist.is_main:
                run.log(step, **values)
                run.write_status("running", step=step, **status_extra)
            if "loss_G" in values:
                _log(verbose, f"step {step}/{cfg.steps} " + " ".join(
                    f"{k}={v:.4g}" for k, v in values.items() if k != "train_hours"))
                interval_start = time.perf_counter()
        if step % cfg.checkpoint_every == 0 or last:
            checkpoint(step)
        if _stop_requested(stop, dist):
            if not (step % cfg.checkpoint_every == 0 or last):
                checkpoint(step)
            if dist.is_main:
                run.write_status("stopped", step=step, **status_extra)
            _log(verbose, f"stopped at step {step}; checkpoint written, resume with --resume")
            return 0
        G.train()
    if start >= cfg.steps and not run.checkpoints() and dist.is_main:
        checkpoint(step)
    if dist.is_main:
        run.write_status("finished", step=step, **status_extra)
        if export_name:
            path = export_faces(run.path, export_name, best=export_best)
            _log(verbose, f"exported {path}")
    distributed.barrier(dist)
    return 0


def _stop_requested(stop: GracefulStop, dist: distributed.Dist) -> bool:
    """Every rank must agree to stop at the same step, or the others would wait forever."""
    if not dist.enabled:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=dist.device)
    return bool(distributed.all_reduce_mean(flag, dist).item() > 0)


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, cols: int | None = None):
    """A PIL grid of the generator's images for fixed latents (eval mode, restored afterwards)."""
    from animegan.faces import make_grid, to_pil_images

    was_training = generator.training
    generator.eval()
    param = next(generator.parameters())
    images = generator(z.to(param.device, param.dtype)).float().cpu()
    generator.train(was_training)
    return make_grid(to_pil_images(images), cols=cols)


def _reference_stats(cfg: FaceTrainConfig, train_files: list[Path], held: list[Path],
                     dev: torch.device) -> dict[str, Any]:
    """FID references: the real faces as they are, and (named by the size) shrunk to the generator's size.

    The second is the fair measure of a generator smaller than its data: against the faces at
    full size, even the real faces shrunk to 64 px score far from 0, a floor no 64 px model passes.
    """
    from animegan.metrics import compute_stats

    files = held or train_files
    limit = cfg.fid_reference or None
    references = {"": compute_stats(files, device=dev, limit=limit)}
    if _measures_shrunk(files, cfg.image_size):  # every file, also when the first reference takes a subset
        def shrunk() -> Any:  # read only when the cache has no entry for these files at this size
            small = ImageFolderDataset(files, cfg.image_size, verbose=False)
            for i in range(0, len(small), 64):
                yield small.load_batch(list(range(i, min(i + 64, len(small)))))

        references[str(cfg.image_size)] = compute_stats(shrunk(), device=dev,
                                                        cache_as=(files, f"load_square {cfg.image_size}"))
    return references


def _measures_shrunk(files: list[Path], size: int) -> bool:
    """Whether a ``size`` px run on ``files`` is also measured against them shrunk to its size (``fid{size}``)."""
    return _native_side(files) > size


def _native_side(files: list[Path]) -> int:
    """The short side of the first readable image (the data's own size), 0 if none opens."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as image:
                return min(image.size)
        except (OSError, ValueError):
            continue
    return 0


def _fid(generator: nn.Module, cfg: FaceTrainConfig, references: dict[str, Any], dev: torch.device,
         upscaler: nn.Module | None = None) -> dict[str, float]:
    """``fid``/``kid`` against the real faces, ``fid64``/``kid64`` (for a 64 px run) against them shrunk,
    and with ``upscaler`` ``fid_pair``/``kid_pair``: the same latents' samples upscaled, against the real faces."""
    from animegan.metrics import compute_stats, fid_from_stats, generator_batches, kid_from_features

    def samples() -> Any:
        return generator_batches(generator, cfg.fid_samples, seed=cfg.seed + 2, device=dev)

    def upscaled() -> Any:
        for batch in samples():
            with torch.inference_mode():
                yield upscaler(batch)

    was_training = generator.training
    generator.eval()
    stats = compute_stats(samples(), device=dev, limit=cfg.fid_samples)
    # (suffix, generated, real): fid{size} against the faces at each reference's size, and the pair's at full size
    compared = [(size, stats, reference) for size, reference in references.items()]
    if upscaler is not None:
        compared.append(("_pair", compute_stats(upscaled(), device=dev, limit=cfg.fid_samples), references[""]))
    generator.train(was_training)
    values = {}
    for suffix, generated, reference in compared:
        kid, _ = kid_from_features(generated.features, reference.features, subsets=20)
        values[f"fid{suffix}"] = fid_from_stats(generated, reference)
        values[f"kid{suffix}"] = kid
    return values


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.faces", description="Train an anime-face generator.")
    p.add_argument("--data", help="folder of face images (searched recursively)")
    p.add_argument("--out", required=True, help="run folder to write (config.json, metrics.jsonl, samples/ ...)")
    p.add_argument("--steps", type=int, help="total training steps (a resumed run continues up to this)")
    p.add_argument("--config", help="JSON file with FaceTrainConfig fields; flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--arch", choices=VARIANTS, help="dcgan (the seeds) or dcgan_improved (default)")
    p.add_argument("--size", type=int, help="image size: 64 or 128 (any power of two from 16)")
    p.add_argument("--batch", type=int, help="batch size per process")
    p.add_argument("--lr", type=float, help="learning rate of G and D")
    p.add_argument("--seed", type=int)
    p.add_argument("--fid-every", type=int, help="evaluate FID every N steps (0: never)")
    p.add_argument("--fid-samples", type=int, help="generated images per FID evaluation")
    p.add_argument("--fid-reference", type=int, help="real images for the FID reference statistics (default: all)")
    p.add_argument("--best-by", metavar="FIGURE",
                   help="the figure whose lowest value picks checkpoints/best.pt: fid (default), fid64 in a "
                        "64 px run (against the faces shrunk to its size), or fid_pair with --eval-upscaler")
    p.add_argument("--eval-upscaler", metavar="WEIGHTS",
                   help="a 128 px face model (e.g. weights/faces128.safetensors): each evaluation also measures "
                        "the samples upscaled by its upscaler (fid_pair, kid_pair), what the pair would score")
    p.add_argument("--sample-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--init-from", metavar="WEIGHTS",
                   help="start a new run's generator from these face weights (e.g. weights/faces64.safetensors), "
                        "and its discriminator from NAME.d.safetensors beside them when there is one")
    p.add_argument("--holdout", action="store_true", default=None,
                   help="keep 1 image in 10 (by file-name hash) out of training and measure FID against it")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    add_fp32_flag(p)
    p.add_argument("--export", metavar="NAME", help="when done, write weights/NAME.safetensors for the app")
    p.add_argument("--best", action="store_true",
                   help="with --export: the best evaluated step (lowest fid, or the --best-by figure), "
                        "not the newest")
    p.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> FaceTrainConfig:
    return config_from_dict(asked_values(args))


def asked_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config values the command line names: the ``--config`` file, then the flags given."""
    values: dict[str, Any] = read_config_arg(args.config) if args.config else {}
    flags = {"data": args.data, "steps": args.steps, "arch": args.arch, "image_size": args.size,
             "batch_size": args.batch, "seed": args.seed, "fid_every": args.fid_every, "fid_samples": args.fid_samples,
             "fid_reference": args.fid_reference, "best_by": args.best_by, "eval_upscaler": args.eval_upscaler,
             "sample_every": args.sample_every, "checkpoint_every": args.checkpoint_every,
             "log_every": args.log_every, "holdout": args.holdout, "init_from": args.init_from}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.lr is not None:
        values["lr_g"] = values["lr_d"] = args.lr
    if args.fp32:
        values["amp"] = False
    return values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.export:  # refuse a bad name now, not after the whole run
            check_name(args.export, "weights name")
        cfg = config_from_args(args)
        run = RunFolder(args.out)
        if args.resume and run.config_path.is_file():  # a resumed run keeps its config but for RESUME_MAY_CHANGE
            saved = run.read_config()
            check_resume_keeps_config(saved, asked_values(args), RESUME_MAY_CHANGE, asdict(FaceTrainConfig()))
            cfg = config_from_dict({**saved_settings(saved), **asked_values(args)})
        if not args.resume and not cfg.data:
            raise AnimeGANError("pass --data DIR (a folder of face images)")
        check_export_best(args.best, args.export, bool(cfg.fid_every), run, "give --fid-every N too")
        return train(cfg, args.out, resume=args.resume, device=args.device, export_name=args.export,
                     verbose=not args.quiet, export_best=args.best)
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
