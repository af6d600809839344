"""A training run folder -> ``weights/NAME.safetensors`` (+ ``NAME.json``) for the app, the CLI and the Hub.

``export_run`` picks the export by the run's config.json: a photo-to-anime run
(``python -m train.animegan``) goes to ``export_style``, a face run (``python -m train.faces``)
to ``export_faces``. Both read the run folder alone (``animegan.runs``): the config the trainer
recorded says which network it trained, so no trainer code is needed. The trainers' ``--export``
flags, the app's Training tab and ``python -m animegan push RUN`` all come here.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .discriminator_file import discriminator_path, save_discriminator
from .errors import AnimeGANError, first_line
from .faces import FaceGenerator, compute_sliders, save_sliders
from .models import make_config
from .models.dcgan import DCGANConfig, _check_size, variant_configs
from .names import check_name
from .runs import RunFolder
from .weights import save_weights, weights_dir as default_weights_dir

# A style run's recipe -> the generator architecture it trains (``train.animegan --recipe``).
RECIPES = {"v2": "animeganv2", "v3": "animeganv3"}
STYLE_LICENCE_NOTE = ("Trained with anime-studio's train.animegan; the weights carry the terms of their training "
                      "images (check them: e.g. research-only data gives research-only weights).")
FACE_LICENCE_NOTE = ("Trained on images that are copyrighted by their owners or licensed for non-commercial research; "
                     "these weights are for non-commercial research use only.")
FACE_ARCHS = ("dcgan", "dcgan_improved")


def training_history(weights: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """What a weights file says of its training: the steps, images seen and train hours that an export
    of a run warm-started from it (or a 128 px pair built on it) adds to its own, so the count goes on
    across machines.

    Style files keep ``images_seen`` and ``train_hours`` at the top; face files written before their
    exporter recorded them keep ``images_seen`` and ``training_hours_cpu`` in ``metrics``. A 128 px
    pair (``dcgan_upscaled``) gives its 64 px stage's own: what a warm start from it trains on, and
    what a new pair on that stage adds its upscaler to (counting the upscaler's twice otherwise).
    """
    measured = metadata.get("metrics") if isinstance(metadata.get("metrics"), dict) else {}

    def number(kind: type, *values: Any) -> Any:
        for value in values:
            try:
                if value is not None:
                    return max(kind(value), 0)
            except (TypeError, ValueError):  # weights from elsewhere may carry anything here
                pass
        return kind(0)

    history = {"weights": str(weights), "steps": number(int, metadata.get("steps")),
               "images": number(int, metadata.get("images_seen"), measured.get("images_seen")),
               "hours": number(float, metadata.get("train_hours"), measured.get("training_hours_cpu"))}
    if metadata.get("architecture") == "dcgan_upscaled":
        upscaler = (metadata.get("training_data") or {}).get("upscaler") or {}
        history["images"] = max(history["images"] - _upscaler_images(upscaler), 0)
        history["hours"] = max(round(history["hours"] - number(float, upscaler.get("hours")), 6), 0.0)
    return history


def _upscaler_images(upscaler: dict[str, Any]) -> int:
    """The images an upscaler's training record says it saw (older records: steps x batch)."""
    try:
        return int(upscaler.get("images") or int(upscaler.get("step", 0))
                   * int((upscaler.get("training_config") or {}).get("batch_size", 16)))
    except (TypeError, ValueError):  # a record from elsewhere may carry anything here
        return 0


def is_style_run(config: dict[str, Any]) -> bool:
    """True for a config.json written by the photo-to-anime trainer (else a face run)."""
    return config.get("trainer") == "animegan" or "recipe" in config


def is_upscaler_run(config: dict[str, Any]) -> bool:
    """True for a config.json written by the face upscaler's trainer (``train.face_upscaler``)."""
    return config.get("trainer") == "face_upscaler"


def face_generator_config(config: dict[str, Any]) -> DCGANConfig:
    """The generator a face run trains, from its config.json; ValueError for an impossible one.

    The face trainer builds its generator with this too, so a run and its export always agree.
    config.json records every field; the defaults are the trainer's, for a config written by hand.
    """
    arch = config.get("arch", "dcgan_improved")
    image_size = int(config.get("image_size", 64))
    _check_size(image_size)
    g, _ = variant_configs(arch, image_size, config.get("latent_dim") or None, int(config.get("g_width", 64)))
    return replace(g, upsample=config.get("upsample") or g.upsample)


def export_run(run_dir: Path, workdir: Path, name: str | None = None) -> Path:
    """Export a training run's generator into ``workdir`` as the Training tab would: its best evaluated
    step when it was evaluated, else its newest."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise AnimeGANError(f"{run_dir}: a folder, but not a training run (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AnimeGANError(f"{config_path}: not valid JSON ({first_line(exc)})") from None
    name = name or re.sub(r"[^\w\-]+", "-", run_dir.resolve().name).strip("-.") or "model"
    if is_style_run(config):  # its best evaluated step when it was evaluated, as the Training tab exports
        return export_style(run_dir, name, weights_folder=workdir, best=None)
    if config.get("arch") in FACE_ARCHS:
        return export_faces(run_dir, name, weights_dir=workdir, best=None)
    if is_upscaler_run(config):
        return export_upscaled_faces(run_dir, name, weights_dir=workdir)
    raise AnimeGANError(f"{run_dir}: not a run of train.animegan, train.faces or train.face_upscaler; "
                        "export it first")


def _newest_checkpoint(run: RunFolder) -> dict[str, Any]:
    state = run.load_latest_checkpoint()
    if state is None:
        raise AnimeGANError(f"{run.path}: no checkpoint to export yet")
    return state


def _chosen_state(run: RunFolder, best: bool | None, how: str) -> dict[str, Any]:
    """The run's best evaluated step (``best``), that one when there is one (None), or the newest checkpoint
    (False); ``how`` says which flags evaluate a run, for the error when ``best`` finds none."""
    state = run.load_best() if best or best is None else None
    if state is None:
        if best:
            raise AnimeGANError(f"{run.path}: no evaluated step to export ({how})")
        state = _newest_checkpoint(run)
    return state


def export_style(run_dir: str | Path, name: str, weights_folder: str | Path | None = None,
                 description: str | None = None, best: bool | None = False) -> Path:
    """Write a style run's newest generator (``best``: its best evaluated one; None: that one when the run
    has it; the EMA of its weights when the run kept one) to ``weights/NAME.safetensors``.

    After this the style is listed by ``animegan.weights.available_styles()`` and usable by
    ``animegan.stylize`` and the app. Its metadata counts the steps, images and hours of training,
    those of the weights a warm-started run began from included.
    """
    name = check_name(name, "style name")  # the one rule for names that become files under weights/
    rf = RunFolder(run_dir)
    config = rf.read_config()
    state = _chosen_state(rf, best, "train with --eval-every and --eval-photos")
    step = int(state["step"])
    architecture = RECIPES.get(config.get("recipe", "v2"), "animeganv2")
    arch_config = asdict(make_config(architecture, config.get("generator") or {}))
    records = [r for r in rf.metrics() if r["step"] <= step]
    logged = [r for r in records if any(k.startswith("loss_") for k in r)]  # an evaluation line may have none
    metrics = {k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("loss_")}
    evaluated = [r for r in records if "kid" in r]
    if evaluated:  # the step's own evaluation when it has one, else the latest before it
        metrics.update({k: v for k, v in evaluated[-1].items() if k not in ("time", "images_per_s", "train_hours")
                        and not k.startswith("loss_")})
        metrics["evaluated_step"] = metrics.pop("step")
    prior = config.get("warm_start") or {}
    images = int(state.get("images_seen", step * int(config.get("batch", 0)) * int(config.get("world_size", 1))))
    meta = {
        "name": name,
        "kind": "style",
        "architecture": architecture,
        "config": arch_config,
        "description": description or (f"Trained with train.animegan ({config.get('recipe')} recipe, "
                                        f"{config.get('preset')} preset, {int(prior.get('steps', 0)) + step} steps)"),
        "training_data": config.get("data_description", config.get("data", "")),
        "steps": int(prior.get("steps", 0)) + step,
        "images_seen": int(prior.get("images", 0)) + images,
        "train_hours": round(float(prior.get("hours", 0.0)) + float(state.get("trained_s", 0.0)) / 3600, 6),
        "run_steps": step,
        "warm_start": prior.get("weights"),
        "recipe": config.get("recipe"),
        "preset": config.get("preset"),
        "perceptual_network": config.get("perceptual_network"),
        "train_config": {k: config[k] for k in ("size", "batch", "init_steps", "pretrain_steps", "lr_g", "d_every",
                                                 "d_warmup", "d_lr_ratio", "ema_decay", "gan_loss", "loss_weights")
                         if k in config},
        "metrics": metrics,
        "run": str(rf.path),
        "licence": STYLE_LICENCE_NOTE,
    }
    folder = Path(weights_folder) if weights_folder else default_weights_dir()
    # A checkpoint of a run with an EMA holds both: the EMA is what was evaluated (best.pt holds only it).
    path = save_weights(folder / f"{name}.safetensors", state.get("generator_ema") or state["generator"], meta)
    _save_run_discriminator(path, state if "discriminator" in state else rf.load_latest_checkpoint() or {},
                            "discriminator", config.get("discriminator") or {})
    return path


def export_faces(run_dir: str | Path, name: str, weights_dir: str | Path | None = None, use_ema: bool = True,
                 description: str | None = None, sliders: bool = True, discriminator: bool = True,
                 best: bool | None = False) -> Path:
    """Write a face run's newest generator (its EMA when there is one) as ``weights/NAME.safetensors``;
    with ``best`` its best evaluated step (lowest fid or ``best_by``, ``checkpoints/best.pt``), with None that one
    when the run has it.

    With ``sliders`` the semantic slider directions go beside it (``NAME.sliders.safetensors``);
    with ``discriminator`` the run's D of that step (``NAME.d.safetensors``), so a warm start from
    these weights continues the GAN instead of facing a new D.
    """
    name = check_name(name, "weights name")  # the one rule for names that become files under weights/
    run = RunFolder(run_dir)
    config = run.read_config()
    try:
        g_cfg = face_generator_config(config)
    except ValueError as exc:
        raise AnimeGANError(f"{run.path}: bad face run config ({exc})") from None
    ckpt = _chosen_state(run, best, "train with --fid-every N")
    state = ckpt["G_ema"] if use_ema and "G_ema" in ckpt else ckpt["G"]
    arch = config.get("arch", "dcgan_improved")
    step = int(ckpt["step"])
    prior = config.get("warm_start") or {}  # a warm start's steps, images and hours come first
    steps = int(prior.get("steps", 0)) + step
    images = int(ckpt.get("images_seen", step * int(config.get("batch_size", 64))))  # older checkpoints lack it
    measured = {}
    for record in run.metrics():  # the step's own evaluation, else the latest before it
        if record["step"] <= step and "fid" in record:
            # fid/kid, and fid64/kid64 where the run also measured against the faces shrunk to its size
            measured = {k: v for k, v in record.items() if re.fullmatch(r"(fid|kid)\d*", k)}
            measured.update({f"{k}_step": record["step"] for k in ("fid", "kid") if k in measured})
    status = run.read_status()
    metadata = {
        "kind": "faces",
        "architecture": "dcgan",
        "config": asdict(g_cfg),
        "description": description or f"Anime faces {g_cfg.image_size}x{g_cfg.image_size} ({arch}, {steps} steps)",
        "training_data": {"folder": str(config.get("data", "")), "images": status.get("images"), "variant": arch,
                          "training_config": config, "weights": "ema" if state is ckpt.get("G_ema") else "G"},
        "steps": steps,
        "images_seen": int(prior.get("images", 0)) + images,
        "train_hours": round(float(prior.get("hours", 0.0)) + float(ckpt.get("trained_s", 0.0)) / 3600, 6),
        "run_steps": step,
        "warm_start": prior.get("weights"),
        "metrics": measured,
        "licence": FACE_LICENCE_NOTE,
    }
    path = _save_face_weights(name, weights_dir, state, metadata, sliders)
    if discriminator:
        _save_run_discriminator(path, ckpt, "D", {"image_size": g_cfg.image_size, "width": config.get("d_width"),
                                                  "spectral_norm": config.get("spectral_norm"),
                                                  "batch_norm": config.get("d_batch_norm")})
    return path


def _save_run_discriminator(weights_path: Path, checkpoint: dict[str, Any], key: str, config: dict[str, Any]) -> None:
    """The run's D (``checkpoint[key]``) beside freshly written weights, or none: never an older export's.

    A style's best step keeps only its generator, so its D is the newest checkpoint's: a few
    hundred steps on, which a continuation takes up as it would after a resume.
    """
    discriminator_path(weights_path).unlink(missing_ok=True)
    if key in checkpoint:
        save_discriminator(weights_path, checkpoint[key], {"config": config, "step": int(checkpoint["step"])})


def upscaler_base(weights: str | Path, size: int) -> tuple[Any, Any]:
    """The plain face generator a 2x upscaler to ``size`` px runs on: (its ``LoadedWeights``, the built
    network, fp32); one line naming the file when it is another model or makes another size."""
    from .weights import build_from_weights, load_weights

    loaded = load_weights(weights, kind="faces")
    if loaded.kind != "faces" or loaded.architecture != "dcgan":
        raise AnimeGANError(f"{weights}: not a plain face generator (a {loaded.architecture} {loaded.kind} model)")
    net = build_from_weights(loaded).float()
    if 2 * net.image_size != size:
        raise AnimeGANError(f"{weights}: makes {net.image_size} px faces, but the upscaler makes {size} px "
                            f"from {size // 2} px")
    return loaded, net


def upscaler_state(weights: str | Path) -> tuple[Any, dict[str, Any]]:
    """The upscaler inside a 128 px upscaled-face weights file: (its ``LoadedWeights``, the upscaler's
    state dict); one line naming the file when it holds none."""
    from .weights import load_weights

    loaded = load_weights(weights, kind="faces")
    if loaded.architecture != "dcgan_upscaled":
        raise AnimeGANError(f"{weights}: holds no upscaler (a {loaded.architecture} {loaded.kind} model)")
    prefix = "upscaler."
    return loaded, {k[len(prefix):]: v for k, v in loaded.state_dict.items() if k.startswith(prefix)}


def export_upscaled_faces(run_dir: str | Path, name: str, weights_dir: str | Path | None = None,
                          generator: str | Path | None = None, description: str | None = None,
                          sliders: bool = True) -> Path:
    """A 64 px face generator and an upscaler run's best step (else its newest) as one 128 px face model.

    ``generator`` (a face weights name or file) defaults to the one the run evaluated with. The
    file is an ordinary face weights file (architecture ``dcgan_upscaled``): the Faces tab, the
    CLI and the Hub use it like any other.
    """
    name = check_name(name, "weights name")
    run = RunFolder(run_dir)
    config = run.read_config()
    if not is_upscaler_run(config):
        raise AnimeGANError(f"{run.path}: not a face upscaler run (train.face_upscaler)")
    source = generator or config.get("generator")
    if not source:
        raise AnimeGANError(f"{run.path}: the run names no generator; pass the 64 px face weights to pair it with")
    loaded, base = upscaler_base(source, int(config.get("size", 128)))
    state = run.load_best() or _newest_checkpoint(run)
    # The run's FID/KID measured its own generator's samples: they describe this pair only if it is that one,
    # tensor for tensor (a file of the same name may have been exported again since).
    recorded = config.get("generator_tensors")
    same_generator = weights_tensors_digest(loaded.source) == recorded if recorded else \
        _same_file(loaded.source, config.get("generator"))
    u_config = {"channels": int(config["channels"]), "blocks": int(config["blocks"])}
    upscaler = {"folder": str(config.get("data", "")), "training_config": config, "step": int(state["step"]),
                "images": int(state["step"]) * int(config.get("batch_size", 16))}
    if "trained_s" in state:  # best steps saved before it was recorded have no clock
        upscaler["hours"] = round(float(state["trained_s"]) / 3600, 6)
    metrics = {k: v for k, v in (state.get("metrics") or {}).items()
               if k in (("fid", "kid", "fid_real", "psnr") if same_generator else ("fid_real", "psnr"))}
    return _save_upscaled_faces(name, weights_dir, loaded, base.config, Path(str(source)).stem, state["U"], u_config,
                                upscaler, metrics, description, sliders)


def pair_upscaled_faces(upscaled: str | Path, generator: str | Path, name: str,
                        weights_dir: str | Path | None = None, description: str | None = None,
                        sliders: bool = True) -> Path:
    """A 128 px face model's upscaler with another 64 px generator, as a new ``dcgan_upscaled`` model.

    The upscaler learnt from real faces alone, so it serves any generator of its input size: this
    gives the shipped upscaler a better generator where its run folder is gone (a new machine).
    The old pair's FID/KID describe other samples and are dropped; the upscaler's own figures
    (PSNR, FID of upscaled real faces) and its training record are kept.
    """
    name = check_name(name, "weights name")
    source, u_state = upscaler_state(upscaled)
    config = source.metadata.get("config") or {}
    loaded, base = upscaler_base(generator, 2 * int(config["generator"]["image_size"]))
    upscaler = (source.metadata.get("training_data") or {}).get("upscaler") or {}
    metrics = {k: v for k, v in (source.metadata.get("metrics") or {}).items() if k in ("fid_real", "psnr")}
    return _save_upscaled_faces(name, weights_dir, loaded, base.config, Path(str(generator)).stem, u_state,
                                config["upscaler"], upscaler, metrics, description, sliders)


def _save_upscaled_faces(name: str, weights_dir: str | Path | None, loaded: Any, g_config: DCGANConfig,
                         g_name: str, u_state: dict[str, Any], u_config: dict[str, Any], upscaler: dict[str, Any],
                         metrics: dict[str, Any], description: str | None, sliders: bool) -> Path:
    """One ``dcgan_upscaled`` file: a loaded 64 px generator, and an upscaler's weights and record."""
    from .models.face_upscaler import UpscaledFacesConfig

    tensors = {**{f"generator.{k}": v for k, v in loaded.state_dict.items()},
               **{f"upscaler.{k}": v for k, v in u_state.items()}}
    size = 2 * g_config.image_size
    made = training_history(g_name, loaded.metadata)  # the generator's; the upscaler's adds to it
    made["images"] += _upscaler_images(upscaler)
    metadata = {
        "kind": "faces",
        "architecture": "dcgan_upscaled",
        "config": asdict(UpscaledFacesConfig(generator=asdict(g_config), upscaler=u_config)),
        "description": description or f"Anime faces {size}x{size} ({g_name} and a 2x upscaler, "
                                      f"{int(upscaler.get('step', 0))} steps)",
        "training_data": {"generator": {"weights": g_name, "steps": loaded.metadata.get("steps"),
                                        "training_data": loaded.metadata.get("training_data")},
                          "upscaler": upscaler},
        "steps": loaded.metadata.get("steps"),
        "images_seen": made["images"],
        "metrics": metrics,
        "licence": FACE_LICENCE_NOTE,
    }
    if "hours" in upscaler:  # both stages' CPU time, or none rather than a part of it
        metadata["train_hours"] = round(made["hours"] + float(upscaler["hours"]), 6)
    return _save_face_weights(name, weights_dir, tensors, metadata, sliders)


def weights_tensors_digest(weights: str | Path) -> str:
    """SHA-256 of a weights file's tensors (a name in weights/ or a path; metadata edits leave it as it
    was); "" for a source that is no local file."""
    from .discriminator_file import generator_sha256
    from .weights import load_weights

    source = Path(load_weights(weights).source)
    return generator_sha256(source) if source.is_file() else ""


def _same_file(a: str | Path | None, b: str | Path | None) -> bool:
    if not a or not b:
        return False
    pa, pb = Path(str(a)), Path(str(b))
    return pa.resolve() == pb.resolve() if pa.is_file() and pb.is_file() else str(a) == str(b)


def _save_face_weights(name: str, weights_dir: str | Path | None, tensors: dict[str, Any], metadata: dict[str, Any],
                       sliders: bool) -> Path:
    """Write ``weights/NAME.safetensors`` and, with ``sliders``, the slider directions beside it."""
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    path = save_weights(folder / f"{name}.safetensors", tensors, metadata)
    discriminator_path(path).unlink(missing_ok=True)  # an older export's D belongs to older weights
    if sliders:
        # Computed from these weights, never read back from a file of the same name being replaced
        directions = compute_sliders(FaceGenerator(path, device="cpu").net)
        save_sliders(path.with_name(f"{name}.sliders.safetensors"), directions)
    return path
