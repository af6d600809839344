"""Photo-to-anime trainer: the AnimeGAN v2 and v3 recipes on unpaired folders.

    python -m train.animegan --data DIR --out runs/NAME --steps 20000 [--recipe v2|v3]
        [--preset scenery|portrait] [--config JSON] [--resume] [--export NAME]
        [--eval-every N --eval-photos HELD_OUT_DIR [--eval-limit 64]] [--init-from WEIGHTS] [--best]

DIR holds ``real_images/`` (photos) and ``anime_images/`` (one anime style). The run folder
is the face trainer's (``animegan.runs``). Schedule: ``init_steps`` of content-only
reconstruction, then the GAN phase, where D (learning rate ``d_lr_ratio`` x G's) is updated
once per ``d_every`` G updates; with ``d_warmup`` the GAN phase's first steps train only D (G
frozen), so a warm start's new D learns the anime before G answers it. Every random draw comes
from ``step_generator(seed, step, rank)``, so ``--resume`` from a checkpoint gives exactly the
uninterrupted run. Under ``torchrun`` it trains with DDP (each rank draws its own batches).

With ``eval_every`` the main process measures the current generator every N steps (and at the
last) on held-out photos, as ``python -m train.evaluate_style`` does (``style_figures``): ``fid``,
``kid`` and ``content``, beside the untouched photos' ``baseline_fid``, ``baseline_kid`` and
``content_unrelated``, all logged into metrics.jsonl. The generator of the step with the lowest
style KID is kept apart (``checkpoints/best.pt``); ``--export NAME --best`` exports it.

With ``ema_decay`` (say 0.999) an exponential moving average of G's weights is kept beside G; it
is what is sampled, evaluated, kept as the best and exported, as in the face trainer: a GAN's
generator swings from step to step, and its average is both better and steadier to judge.

``--init-from WEIGHTS`` starts a new run's generator from a style weights file (a campaign on a new
machine continues from the shipped weights) and skips the content-only phase; the export then counts
the steps, images and hours of both.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from animegan.device import pick_device
from animegan.errors import AnimeGANError
from animegan.export import RECIPES, export_style, training_history
from animegan.images import image_files
from animegan.models import build_model, make_config
from animegan.names import check_name
from animegan.runs import RunFolder

from . import distributed
from .common import (GracefulStop, TrainClock, check_export_best, ema_decay_at, ema_update, image_rows_grid,
                     load_generator_weights, load_shipped_discriminator, read_config_arg, rng_state, set_rng_state,
                     step_generator)
from .diffaugment import diff_augment, parse_policy
from .losses import (GAN_LOSSES, PRESETS, color_loss, content_loss, d_adv_loss, domain_loss, g_adv_loss,
                     gray_style_loss, preset_weights, region_smoothing_loss, revision_target, style_loss,
                     superpixel_average, tv_loss)
from .perceptual import Perceptual
from .precision import add_fp32_flag, train_precision
from .style_data import Skipped, StyleBatch, StyleData, load_images, resize_to


@dataclass
class StyleTrainConfig:
    """Everything a run depends on; saved as the run's config.json."""

    data: str = ""
    recipe: str = "v2"
    preset: str = "scenery"
    steps: int = 20000
    size: int = 256
    batch: int = 4
    init_steps: int = 1000
    lr_init: float = 2e-4
    lr_g: float = 8e-5
    d_lr_ratio: float = 0.5
    d_every: int = 5
    d_warmup: int = 0  # GAN-phase steps that train only D (G frozen): a warm start's new D learns first
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    gan_loss: str = "lsgan"
    grad_clip: float = 10.0
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)  # overrides of the preset's loss weights
    generator: dict[str, Any] = field(default_factory=dict)  # architecture config of the generator
    discriminator: dict[str, Any] = field(default_factory=dict)  # PatchDiscriminatorConfig fields
    perceptual: str = "auto"  # auto (VGG19 if its weights are here, else Inception), vgg19, inception
    perceptual_min_side: int = 96
    inception_layer: str = "mixed_2"
    perceptual_scale: float = 0.0  # 0: the network's calibrated default (train.perceptual.FEATURE_SCALES)
    smooth_gray: bool = True  # v2 shows D the grayscale edge-smoothed anime, as the original
    # DiffAugment before D, on every image it sees (anime, G's output, gray, smoothed), in D's step and
    # G's: a D trained on a few hundred stills memorises them otherwise. "translation,cutout" suits a
    # style; "color" would make some real anime look like D's grayscale negatives.
    diffaugment: str = ""
    superpixels: int = 64  # v3 region smoothing: superpixels per crop
    val_photos: int = 4
    eval_every: int = 0  # measure style FID/KID and content on held-out photos every N steps; 0: never
    eval_photos: str = ""  # the held-out photos (never trained on; python -m train.split_folder makes them)
    eval_limit: int = 64  # the first N of them (sorted by path)
    init_from: str = ""  # a style weights file (name or path) a new run's generator starts from
    ema_decay: float = 0.0  # 0: off; else an EMA of G's weights is what is evaluated and exported
    scale_jitter: float = 1.25
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    amp: bool = True  # bfloat16 autocast where the device has it natively (train/precision.py)
    channels_last: bool = True
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StyleTrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise AnimeGANError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return cls(**values).checked()

    def checked(self) -> "StyleTrainConfig":
        if self.recipe not in RECIPES:
            raise AnimeGANError(f"unknown recipe {self.recipe!r} (choose v2 or v3)")
        if self.preset not in PRESETS:
            raise AnimeGANError(f"unknown preset {self.preset!r} (choose {', '.join(PRESETS)})")
        if self.gan_loss not in GAN_LOSSES:
            raise AnimeGANError(f"unknown gan_loss {self.gan_loss!r} (choose {', '.join(GAN_LOSSES)})")
        for name in ("steps", "batch", "d_every", "log_every", "sample_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise AnimeGANError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.init_steps < 0:
            raise AnimeGANError(f"init_steps must be 0 or more (got {self.init_steps})")
        if self.d_warmup < 0:
            raise AnimeGANError(f"d_warmup must be 0 or more steps (got {self.d_warmup})")
        if self.eval_every < 0:
            raise AnimeGANError(f"eval_every must be 0 (never) or more (got {self.eval_every})")
        if self.eval_every and not self.eval_photos:
            raise AnimeGANError("eval_every needs eval_photos: a folder of held-out photos (--eval-photos DIR; "
                                "python -m train.split_folder SRC --train DATA/real_images --eval DIR makes one)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise AnimeGANError(f"ema_decay must be 0 (off) or in (0, 1), such as 0.999 (got {self.ema_decay})")
        if self.eval_limit < 2:
            raise AnimeGANError(f"eval_limit must be at least 2 (got {self.eval_limit})")
        preset_weights(self.preset, self.weights)  # unknown weight names fail now, not at step 1000
        try:
            parse_policy(self.diffaugment)
        except ValueError as exc:
            raise AnimeGANError(str(exc)) from None
        try:
            make_config(RECIPES[self.recipe], self.generator)
            make_config("patch_discriminator", self.discriminator)
        except ValueError as exc:
            raise AnimeGANError(str(exc)) from None
        return self

    @property
    def pretrain_steps(self) -> int:
        """Steps of the content-only phase: none for a warm start, whose generator already reconstructs."""
        return 0 if self.init_from else self.init_steps

    @property
    def architecture(self) -> str:
        return RECIPES[self.recipe]


class _TrainForward(nn.Module):
    """What DDP wraps: v3 trains both tails, so its training forward is ``forward_both``."""

    def __init__(self, generator: nn.Module, both: bool) -> None:
        super().__init__()
        self.generator, self.both = generator, both

    def forward(self, x: torch.Tensor) -> Any:
        return self.generator.forward_both(x) if self.both else self.generator(x)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _clip(params: Any, limit: float) -> None:
    if limit > 0:
        torch.nn.utils.clip_grad_norm_(params, limit)


class StyleTrainer:
    """Builds data, networks and optimisers for one run, then trains (``run``)."""

    def __init__(self, cfg: StyleTrainConfig, out: str | Path, resume: bool = False,
                 dist: distributed.Dist | None = None, quiet: bool = False) -> None:
        self.cfg = cfg.checked()
        self.dist = dist or distributed.Dist(device=pick_device(None if cfg.device == "auto" else cfg.device))
        self.device = self.dist.device
        self.quiet = quiet
        self.run_folder = RunFolder(out, keep_checkpoints=cfg.keep_checkpoints)
        self.resume = resume
        self.weights = preset_weights(cfg.preset, cfg.weights)
        cuda = self.device.type == "cuda"
        # Older GPUs train in fp32: no fp16 fallback, so no loss scaling to get right.
        self.precision = train_precision(self.device, cfg.amp, cfg.channels_last)
        fmt = self.precision.memory_format

        # Listed on every rank before the (slow) data: a bad folder is a message at start.
        self.eval_files = eval_photo_files(cfg) if cfg.eval_every else []
        # The main process builds the smoothing cache; the others then read it.
        if not self.dist.is_main:
            distributed.barrier(self.dist)
        self.data = StyleData(cfg.data, size=cfg.size, val_photos=cfg.val_photos, scale_jitter=cfg.scale_jitter,
                              log=self.dist.is_main and not quiet)
        if self.dist.is_main:
            distributed.barrier(self.dist)

        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.generator = build_model(cfg.architecture, cfg.generator).to(self.device, memory_format=fmt)
        self.discriminator = build_model("patch_discriminator", cfg.discriminator).to(self.device, memory_format=fmt)
        # The warm start's weights and their training (steps, images, hours); a resumed run keeps the
        # record its config.json has (config.json is rewritten at each start).
        self.prior: dict[str, Any] = {}
        saved = self.run_folder.read_config() if resume and self.run_folder.config_path.is_file() else {}
        # With checkpoints to resume from, the warm start waits until none of them loads (``run``).
        self._warm_start_pending = bool(cfg.init_from) and resume and bool(self.run_folder.checkpoints())
        if cfg.init_from and not self._warm_start_pending:
            self.prior = warm_start(self.generator, cfg, self.discriminator)
        elif isinstance(saved.get("warm_start"), dict):
            self.prior = saved["warm_start"]
        # Starts at G (a warm start's weights); a checkpoint's own EMA replaces it on resume.
        self.generator_ema: nn.Module | None = (copy.deepcopy(self.generator).eval().requires_grad_(False)
                                                if cfg.ema_decay else None)
        # The best step is judged on one set of held-out photos: another set starts the judging again.
        self._eval_set_changed = bool(saved) and (saved.get("eval_photos"), saved.get("eval_limit")) != (
            cfg.eval_photos, cfg.eval_limit)
        self.perceptual = Perceptual(cfg.perceptual, self.device, cfg.perceptual_min_side, cfg.inception_layer,
                                     cfg.perceptual_scale or None).to(memory_format=fmt)
        betas = tuple(cfg.betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_init, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_g * cfg.d_lr_ratio, betas=betas)
        self.g_train: nn.Module = _TrainForward(self.generator, cfg.recipe == "v3")
        self.d_train: nn.Module = self.discriminator
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if cuda else None
            self.g_train = DDP(self.g_train, device_ids=ids)
            self.d_train = DDP(self.discriminator, device_ids=ids)
        self.step = 0
        self.clock = TrainClock()  # this run's training seconds; a resume carries the checkpoint's count on
        self.images_seen = 0  # this run's training images over all processes, across resumes
        self.best_kid = float("inf")
        self.last_d: dict[str, float] = {}
        # Only the main process evaluates: it reads the held-out photos now (unreadable ones fail here),
        # the anime set's statistics and the baseline at the first evaluation (``evaluate``).
        self.eval_images: list[torch.Tensor] = []
        self._eval: dict[str, Any] = {}
        if self.eval_files and self.dist.is_main:
            self.eval_images = load_eval_photos(self.eval_files, cfg.size, cfg.eval_limit,
                                                getattr(self.generator, "size_multiple", 1), log=not quiet)

    # -- helpers ------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast()

    def _feat(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceptual(x).float()

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True).contiguous(memory_format=self.precision.memory_format)

    @property
    def sampler(self) -> nn.Module:
        """The generator that is sampled, evaluated, kept as the best and exported: the EMA when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": rng_state(),
                 "last_d": dict(self.last_d), "trained_s": self.clock.seconds, "images_seen": self.images_seen}
        if self.generator_ema is not None:
            state["generator_ema"] = self.generator_ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        if self.generator_ema is not None:  # an EMA turned on at a resume (ema_decay) starts at G
            self.generator_ema.load_state_dict(state.get("generator_ema", state["generator"]))
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        set_rng_state(state["rng"])
        self.last_d = dict(state.get("last_d", {}))
        self.clock = TrainClock(float(state.get("trained_s", 0.0)))
        self.images_seen = int(state.get("images_seen", int(state["step"]) * self.cfg.batch * self.dist.world_size))
        self.step = int(state["step"])

    # -- one step -----------------------------------------------------------------------
    def make_batch(self, step: int) -> StyleBatch:
        """This step's batch: a function of (seed, step, rank) only, so it can be made ahead."""
        return self.data.batch(self.cfg.batch, step_generator(self.cfg.seed, step, self.dist.rank))

    def train_step(self, step: int, batch: StyleBatch | None = None) -> dict[str, float]:
        """One G update (and, on D's turn, one D update first) on this step's batch; D alone in ``d_warmup``."""
        cfg, w = self.cfg, self.weights
        b = batch if batch is not None else self.make_batch(step)
        photo = self._move(b.photo)
        v3 = cfg.recipe == "v3"
        terms: dict[str, torch.Tensor] = {}

        if step < cfg.pretrain_steps:
            _set_lr(self.opt_g, cfg.lr_init)
            with self._autocast():
                out = self.g_train(photo)
                with torch.no_grad():
                    f_photo = self._feat(photo)
                outs = out if v3 else (out,)
                terms["init_content"] = w.content * sum(content_loss(f_photo, self._feat(o)) for o in outs)
            self._g_update(terms, step)
            return {f"loss_{k}": float(v.detach()) for k, v in terms.items()}

        _set_lr(self.opt_g, cfg.lr_g)
        _set_lr(self.opt_d, cfg.lr_g * cfg.d_lr_ratio)
        anime, anime_gray = self._move(b.anime), self._move(b.anime_gray)
        # Its own stream (not the batch's), drawn in the same order on a resume.
        aug = step_generator(cfg.seed + 1, step, self.dist.rank) if cfg.diffaugment else None
        warming_up = step < cfg.pretrain_steps + cfg.d_warmup  # G frozen: no graph through it, D every step
        # One G forward serves both updates: D's sees its output detached, before G changes.
        with torch.set_grad_enabled(not warming_up), self._autocast():
            out = self.g_train(photo)
        if warming_up or (step - cfg.pretrain_steps - cfg.d_warmup) % cfg.d_every == 0:
            smooth = self._move(b.smooth_gray if cfg.smooth_gray else b.smooth)
            self._d_update((out[1] if v3 else out).detach(), anime, anime_gray, smooth, aug)
        if warming_up:
            return dict(self.last_d)

        for p in self.discriminator.parameters():
            p.requires_grad_(False)  # G's step must not touch (or all-reduce) D's gradients
        try:
            with self._autocast():
                with torch.no_grad():
                    f_photo = self._feat(photo)
                if v3:
                    support, main = out[0].float(), out[1].float()
                    terms["content"] = w.content * content_loss(f_photo, self._feat(support))
                    terms["gray_style"] = w.gray_style * gray_style_loss(self._feat, support, anime_gray)
                    terms["color"] = w.color * color_loss(photo, main)
                    f_main = self._feat(main)
                    with torch.no_grad():
                        # v3 compares both targets in perceptual features, like the content term.
                        f_regions = self._feat(superpixel_average(main.detach(), cfg.superpixels))
                        f_revised = self._feat(revision_target(support))
                    terms["region"] = w.region * region_smoothing_loss(f_main, f_regions)
                    terms["domain"] = w.domain * domain_loss(main, support, f_main, f_revised)
                    fake = main
                else:
                    fake = out.float()
                    f_fake = self._feat(fake)
                    with torch.no_grad():
                        f_gray = self._feat(anime_gray)
                    terms["content"] = w.content * content_loss(f_photo, f_fake)
                    terms["style"] = w.style * style_loss(f_fake, f_gray)
                    terms["color"] = w.color * color_loss(photo, fake)
                terms["tv"] = w.tv * tv_loss(fake)
                seen = diff_augment(fake, cfg.diffaugment, aug) if aug is not None else fake
                terms["adv_g"] = w.adv_g * g_adv_loss(self.discriminator(seen).float(), cfg.gan_loss)
            self._g_update(terms, step)
        finally:
            for p in self.discriminator.parameters():
                p.requires_grad_(True)
        values = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        values["loss_g"] = sum(values.values())
        values.update(self.last_d)
        return values

    def _g_update(self, terms: dict[str, torch.Tensor], step: int) -> None:
        loss = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        _clip(self.generator.parameters(), self.cfg.grad_clip)
        self.opt_g.step()
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator,
                       ema_decay_at(self.cfg.ema_decay, step, bool(self.cfg.init_from)))

    def _d_update(self, fake: torch.Tensor, anime: torch.Tensor, gray: torch.Tensor, smooth: torch.Tensor,
                  aug: torch.Generator | None = None) -> None:
        """One D step on this step's anime, G's output (detached; the main tail for v3), gray and smoothed anime."""
        cfg, w = self.cfg, self.weights
        n = anime.shape[0]
        with self._autocast():
            # One D pass over all four kinds: one DDP forward per backward, one spectral-norm step.
            seen = torch.cat([anime, fake.to(anime.dtype), gray, smooth])
            if aug is not None:
                seen = diff_augment(seen, cfg.diffaugment, aug)
            logits = self.d_train(seen).float()
        real_l, fake_l, gray_l, smooth_l = logits.split(n)
        loss = w.adv_d * d_adv_loss(real_l, fake_l, gray_l, smooth_l, cfg.gan_loss,
                                    (w.d_real, w.d_fake, w.d_gray, w.d_smooth))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        _clip(self.discriminator.parameters(), cfg.grad_clip)
        self.opt_d.step()
        self.last_d = {"loss_d": float(loss.detach())}

    # -- samples, checkpoints -----------------------------------------------------------
    @torch.no_grad()
    def sample(self) -> Image.Image:
        """Held-out photos (top), the v3 support tail (middle), the output (bottom)."""
        photos = self.data.validation_batch()
        x = self._move(photos)
        rows = [photos]
        if self.cfg.recipe == "v3":
            support, main = self.sampler.forward_both(x)
            rows += [support.cpu(), main.cpu()]
        else:
            rows.append(self.sampler(x).cpu())
        return image_rows_grid(rows)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The sampler's figures on the held-out photos, as ``train.evaluate_style`` measures them.

        The untouched photos' figures (``baseline_*``, ``content_unrelated``) are computed once per
        process and repeated in each result. Global RNG states are restored afterwards, so an
        evaluation changes nothing a later step draws.
        """
        from animegan.metrics import compute_stats

        from .evaluate_style import flat_figures, style_figures

        ev = self._eval
        rng = rng_state()
        try:
            if "reference" not in ev:  # the whole anime set; its statistics are cached on disk too
                ev["reference"] = compute_stats(self.data.anime_names, self.device)
                ev["perceptual"] = Perceptual("inception", self.device)
            after = self.stylize_eval_photos()
            table = style_figures(self.eval_images, after, ev["reference"], ev["perceptual"], device=self.device,
                                  baseline=ev.get("baseline"))
        finally:
            set_rng_state(rng)
        ev.setdefault("baseline", table)
        return flat_figures(table)

    @torch.no_grad()
    def stylize_eval_photos(self, batch: int = 4) -> list[torch.Tensor]:
        """The held-out photos through the sampler (eval mode, the training autocast), on the CPU."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(self.eval_images)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, photo in enumerate(self.eval_images):
            by_size.setdefault(tuple(photo.shape), []).append(i)
        generator = self.sampler
        was_training = generator.training
        generator.eval()
        try:
            for indices in by_size.values():
                for start in range(0, len(indices), batch):
                    chunk = indices[start:start + batch]
                    x = self._move(torch.cat([self.eval_images[i] for i in chunk]))
                    with self._autocast():
                        y = generator(x)
                    for i, one in zip(chunk, y.float().clamp(-1, 1).cpu().split(1)):
                        out[i] = one.contiguous()
        finally:
            generator.train(was_training)
        return out

    def keep_best(self, figures: dict[str, float]) -> None:
        """Keep the generator of this step as the run's best (the export of a campaign), with its figures."""
        from .evaluate_style import FIGURES

        self.run_folder.save_best(self.step, {"generator": self.sampler.state_dict(), "trained_s": self.clock.seconds,
                                              "images_seen": self.images_seen,
                                              "figures": {k: float(figures[k]) for k in FIGURES}})

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            self.run_folder.save_checkpoint(self.step, self.state_dict())

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> str:
        """Train up to ``cfg.steps``; returns 'finished' or 'stopped' (on SIGTERM/SIGINT, after a checkpoint)."""
        cfg, rf, main = self.cfg, self.run_folder, self.dist.is_main
        if main:
            rf.create(self.config_record(), resume=self.resume)
        distributed.barrier(self.dist)
        if self.resume:
            state = rf.load_latest_checkpoint(map_location=self.device, set_aside_damaged=main)
            if state is not None:
                self.load_state_dict(state)
            elif self._warm_start_pending:  # every checkpoint was damaged: start again from the warm start
                warm_start(self.generator, cfg, self.discriminator)
                if self.generator_ema is not None:
                    self.generator_ema.load_state_dict(self.generator.state_dict())
            if main:
                rf.truncate_metrics(self.step)  # those lines are redone
                # From the kept lines: a best.pt of a later step (a crash before its checkpoint) is
                # redone identically and replaced then.
                kids = [r["kid"] for r in rf.metrics() if isinstance(r.get("kid"), (int, float))]
                finite = [k for k in kids if math.isfinite(k)]
                self.best_kid = float("inf") if self._eval_set_changed else min(finite, default=float("inf"))
                if not self.quiet:
                    print(f"resumed {rf.path} at step {self.step}", flush=True)
        if main and not self.quiet and self.prior and not self.step and "discriminator" in self.prior:
            print(f"generator initialised from {self.prior['weights']}; "
                  + ("its discriminator too" if self.prior["discriminator"] else "a new discriminator"), flush=True)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if threading_main() else {}
        stop = GracefulStop().install() if handlers else GracefulStop()
        extra = {"total": cfg.steps, "recipe": cfg.recipe, "photos": len(self.data.photos),
                 "anime": len(self.data.anime), "skipped": len(self.data.skipped.files),
                 "precision": self.precision.describe()}
        if main:
            rf.write_status("running", step=self.step, **extra)
        progress = None
        if main and not self.quiet:
            from tqdm import tqdm

            progress = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self.generator.train()
        self.discriminator.train()
        t0, images = time.time(), 0
        state = "finished"
        # The next batch is cut on a thread while this step computes (cv2 releases the GIL).
        pool = ThreadPoolExecutor(max_workers=1)
        pending = pool.submit(self.make_batch, self.step)
        try:
            while self.step < cfg.steps:
                if self._stop_requested(stop):
                    state = "stopped"
                    break
                batch = pending.result()
                pending = pool.submit(self.make_batch, self.step + 1)
                values = self.train_step(self.step, batch)
                self.step += 1
                images += cfg.batch * self.dist.world_size
                self.images_seen += cfg.batch * self.dist.world_size
                if progress is not None:
                    progress.update(1)
                last = self.step == cfg.steps
                record: dict[str, float] = {}
                if self.step % cfg.log_every == 0 or last:
                    values = {k: float(distributed.all_reduce_mean(torch.tensor(v), self.dist))
                              for k, v in sorted(values.items())}
                    record.update(values, images_per_s=images / max(time.time() - t0, 1e-9))
                    if progress is not None:
                        shown = {k[5:]: f"{v:.3g}" for k, v in values.items() if k.startswith("loss_")}
                        progress.set_postfix(shown, refresh=False)
                    t0, images = time.time(), 0
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or last):
                    started = time.time()
                    if main:
                        record.update(self.evaluate())
                        if record["kid"] < self.best_kid:  # NaN never is
                            self.best_kid = record["kid"]
                            self.keep_best(record)
                    distributed.barrier(self.dist)  # the other ranks wait for the main one's evaluation
                    t0 += time.time() - started  # images/s counts training time only
                    if progress is not None:
                        progress.write(f"step {self.step}: style FID {record['fid']:.2f} (photos "
                                       f"{record['baseline_fid']:.2f}), content {record['content']:.3g} "
                                       f"(unrelated {record['content_unrelated']:.3g}); "
                                       f"{time.time() - started:.1f} s")
                if main and record:
                    record["train_hours"] = self.clock.hours
                    rf.log(self.step, **record)
                    rf.write_status("running", step=self.step, **extra)
                if main and (self.step % cfg.sample_every == 0 or self.step == cfg.steps):
                    rf.save_sample(self.step, self.sample())
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
            if state == "stopped":
                self.save_checkpoint()
            if main:
                rf.write_status(state, step=self.step, **extra)
        except BaseException as exc:
            if main:
                rf.write_status("failed", step=self.step, **extra, error=str(exc)[:500])
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if progress is not None:
                progress.close()
            for sig, handler in handlers.items():  # an embedding process gets its own handlers back
                signal.signal(sig, handler)
        return state

    def _stop_requested(self, stop: GracefulStop) -> bool:
        flag = torch.tensor(1.0 if stop.requested else 0.0)
        if self.dist.enabled:
            import torch.distributed as tdist

            tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(flag.item())

    def config_record(self) -> dict[str, Any]:
        record = asdict(self.cfg)
        record["trainer"] = "animegan"
        record["loss_weights"] = self.weights.to_dict()
        record["perceptual_network"] = self.perceptual.name
        record["data_description"] = self.data.describe()
        record["world_size"] = self.dist.world_size
        record["precision"] = self.precision.describe()
        record["pretrain_steps"] = self.cfg.pretrain_steps
        if self.prior:
            record["warm_start"] = self.prior
        return record


def warm_start(generator: nn.Module, cfg: StyleTrainConfig, discriminator: nn.Module | None = None) -> dict[str, Any]:
    """Load ``cfg.init_from``'s style generator into ``generator``; returns what the file says of its training.

    The file must hold the generator this config builds (recipe and ``generator`` settings). The
    discriminator exported beside it (``NAME.d.safetensors``) goes into ``discriminator`` when
    there is one (the record's ``discriminator`` says so); else D starts afresh, as the optimisers do.
    """
    loaded = load_generator_weights(generator, cfg.init_from, "style", "a photo-to-anime style",
                                    architecture=(cfg.architecture, f"the {cfg.recipe} recipe"))
    with_d = discriminator is not None and load_shipped_discriminator(discriminator, loaded.source)
    return {**training_history(cfg.init_from, loaded.metadata), "discriminator": with_d}


def eval_photo_files(cfg: StyleTrainConfig) -> list[Path]:
    """The held-out photo files (sorted), checked: a folder of at least 2 images that is not the training photos."""
    folder = Path(cfg.eval_photos)
    if not folder.is_dir():
        raise AnimeGANError(f"{folder}: held-out photos folder not found (--eval-photos)")
    real = Path(cfg.data) / "real_images"
    resolved, train_dir = folder.resolve(), real.resolve()
    if resolved == train_dir or train_dir in resolved.parents or resolved in train_dir.parents:
        raise AnimeGANError(f"{folder}: the held-out photos must not be (or hold) the training photos {real}; "
                            "python -m train.split_folder SRC --train DATA/real_images --eval DIR splits a folder")
    files = image_files([folder])
    if len(files) < 2:
        raise AnimeGANError(f"{folder}: need at least 2 held-out photos, found {len(files)}")
    return files


def load_eval_photos(files: list[Path], size: int, limit: int, multiple: int = 1,
                     log: bool = False) -> list[torch.Tensor]:
    """The first ``limit`` readable photos, short side scaled to ``size`` (aspect kept), centre-cropped to a
    multiple of ``multiple``: a list of (1, 3, H, W) tensors in [-1, 1]."""
    skipped = Skipped([], [])
    photos: list[torch.Tensor] = []
    for path in files:
        if len(photos) == limit:
            break
        arrays, _ = load_images([path], skipped)
        if not arrays:
            continue
        a = arrays[0]
        h, w = a.shape[:2]
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        a = resize_to(a, new_w, new_h)
        crop_h, crop_w = new_h - new_h % multiple, new_w - new_w % multiple
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        a = np.ascontiguousarray(a[top:top + crop_h, left:left + crop_w])
        photos.append(torch.from_numpy(a).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0).contiguous())
    if skipped.files and log:
        print(f"warning: held-out photos: {skipped.summary()}", flush=True)
    if len(photos) < 2:
        raise AnimeGANError(f"{files[0].parent}: need at least 2 readable held-out photos, found {len(photos)}"
                            + (f"; {skipped.summary()}" if skipped.files else ""))
    return photos


def threading_main() -> bool:
    """Signal handlers can only be installed from the main thread (the UI may run us in another)."""
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.animegan", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder with real_images/ and anime_images/")
    p.add_argument("--out", required=True, help="run folder (created; reused with --resume)")
    p.add_argument("--steps", type=int, help="total generator updates (default 20000)")
    p.add_argument("--config", help="JSON file or inline JSON object of config keys")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--recipe", choices=sorted(RECIPES))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--size", type=int, help="training crop side (default 256)")
    p.add_argument("--batch", type=int, help="batch per process (default 4)")
    p.add_argument("--init-steps", type=int, dest="init_steps", help="content-only steps first (default 1000)")
    p.add_argument("--sample-every", type=int, dest="sample_every")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every")
    p.add_argument("--log-every", type=int, dest="log_every")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int, dest="eval_every",
                   help="measure style FID/KID and content on the held-out photos every N steps (0: never)")
    p.add_argument("--eval-photos", dest="eval_photos", metavar="DIR",
                   help="held-out photos for --eval-every (never trained on; see python -m train.split_folder)")
    p.add_argument("--eval-limit", type=int, dest="eval_limit", help="use the first N held-out photos (default 64)")
    p.add_argument("--init-from", dest="init_from", metavar="WEIGHTS",
                   help="start a new run's generator from these style weights (a name in weights/ or a file)")
    add_fp32_flag(p)
    p.add_argument("--export", metavar="NAME", help="when done, save the generator as weights/NAME.safetensors")
    p.add_argument("--best", action="store_true",
                   help="with --export: the best evaluated step (lowest style KID), not the newest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# What may change when resuming: nothing that alters the arithmetic of a step.
RESUME_OVERRIDABLE = ("steps", "sample_every", "checkpoint_every", "log_every", "keep_checkpoints", "device",
                      "eval_every", "eval_photos", "eval_limit", "ema_decay")


def _same_setting(key: str, saved: Any, given: Any, recipe: str) -> bool:
    """Whether a resumed run's ``key`` is unchanged; network configs compare with their defaults filled in."""
    if saved == given:
        return True
    if key in ("generator", "discriminator") and isinstance(saved, dict) and isinstance(given, dict):
        arch = RECIPES.get(recipe, "animeganv2") if key == "generator" else "patch_discriminator"
        try:
            return asdict(make_config(arch, saved)) == asdict(make_config(arch, given))
        except ValueError:
            return False
    return False


def config_from_args(args: argparse.Namespace) -> StyleTrainConfig:
    """Defaults < the run's saved config (on --resume) < --config < explicit flags."""
    values: dict[str, Any] = {}
    saved = Path(args.out) / "config.json"
    resuming = args.resume and saved.is_file()
    saved_images = 0  # images a step, over all processes, of the run being resumed
    if resuming:
        known = {f.name for f in dataclasses.fields(StyleTrainConfig)}
        record = RunFolder(args.out).read_config()
        values = {k: v for k, v in record.items() if k in known}
        saved_images = int(values.get("batch") or 0) * int(record.get("world_size") or 1)
    flags = {k: getattr(args, k) for k in ("data", "steps", "preset", "recipe", "size", "batch", "init_steps",
                                           "sample_every", "checkpoint_every", "log_every", "device", "seed",
                                           "eval_every", "eval_photos", "eval_limit", "init_from")
             if getattr(args, k) is not None}
    if args.fp32:
        flags["amp"] = False
    extra = read_config_arg(args.config) if args.config else {}
    if resuming:
        recipe = str(values.get("recipe", "v2"))
        # The batch is checked below as images a step: a run may go on under another number of processes.
        changed = [k for k, v in {**extra, **flags}.items() if k not in RESUME_OVERRIDABLE and k in values
                   and not _same_setting(k, values[k], v, recipe) and k not in ("data", "batch")]
        world = distributed.launched_world_size()
        batch = int({**values, **extra, **flags}.get("batch") or 0)
        if changed:
            raise AnimeGANError(f"--resume keeps the run's config; these differ from it: {', '.join(sorted(changed))}")
        if saved_images and batch * world != saved_images:
            raise AnimeGANError(f"this run trained on {saved_images} images a step; {world} process(es) of batch "
                                f"{batch} make {batch * world} (pass --batch {saved_images // world})"
                                if saved_images % world == 0 else
                                f"this run trained on {saved_images} images a step, which {world} processes "
                                "cannot share evenly")
    values.update(extra)
    values.update(flags)
    if not values.get("data"):
        raise AnimeGANError("--data is required (a folder with real_images/ and anime_images/)")
    values["data"] = str(Path(values["data"]))
    return StyleTrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dist = None
    try:
        if args.export:  # refuse a bad name now, not after the whole run
            check_name(args.export, "style name")
        cfg = config_from_args(args)
        check_export_best(args.best, args.export, bool(cfg.eval_every), RunFolder(args.out),
                          "add --eval-every N --eval-photos DIR")
        dist = distributed.setup(None if cfg.device == "auto" else cfg.device)
        trainer = StyleTrainer(cfg, args.out, resume=args.resume, dist=dist, quiet=args.quiet or not dist.is_main)
        if dist.is_main and cfg.pretrain_steps >= cfg.steps:
            print(f"note: init_steps ({cfg.init_steps}) >= steps ({cfg.steps}): this run only does the "
                  "content-only reconstruction phase", file=sys.stderr, flush=True)
        if dist.is_main and not args.quiet:
            print(f"{trainer.data.describe()}; perceptual network {trainer.perceptual.name}; "
                  f"{cfg.recipe} recipe, {cfg.preset} preset; device {dist.device} ({trainer.precision.describe()})",
                  flush=True)
        state = trainer.run()
        if dist.is_main and args.export and state == "finished":
            path = export_style(args.out, args.export, best=args.best)
            if not args.quiet:
                print(f"exported {path}", flush=True)
        return 0
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if dist is not None:
            distributed.cleanup(dist)


if __name__ == "__main__":
    sys.exit(main())
