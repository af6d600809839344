"""Hugging Face Hub: share a style or face model, and use a shared one by its id.

Pull (``hub:USER/NAME`` ids, downloads with the metadata checked first) is
``animegan.hub_pull``, below the weights registry; its public names are importable from here
too, so ``animegan.hub`` is the one place a user looks.

Push: ``prepare_upload`` lays out a folder (weights, metadata, model card, sample grid)
without any network; ``push_folder`` uploads it with ``HfApi``; ``push_weights`` does both.
A run folder is exported first (``animegan.export``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .errors import AnimeGANError, first_line
from .export import export_run
from .fileio import atomic_path, atomic_write_bytes, atomic_write_json
# The pull side's public names, re-exported: ``animegan.hub.parse_hub_id`` and friends.
from .hub_pull import (DEFAULT_FILE, LIBRARY_NAME, PREFIX, HubId, cached_hub_path,  # noqa: F401
                       check_hub_metadata, hub_cache_dir, hub_offline, hub_weights_path, is_hub_name, parse_hub_id,
                       parse_repo_id)
from .metadata import HEADER_KEY, read_metadata
from .weights import project_weights, weights_dir

SAMPLE_FILE = "sample.png"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
FACE_GRID_SEEDS = tuple(range(16))
# Keys that only make sense on the machine that trained the model (local paths).
_PRIVATE_KEYS = ("run",)
# Keys, at any depth, whose values are local folders or files: published as the last name alone
# ("anime_faces", "faces64.safetensors"), which says what was used without showing the trainer's disk.
_PATH_KEYS = {"folder", "data", "photos", "anime", "eval_photos", "fid_reference", "generator", "init_from"}
# Keys that hold a path or a description: a path is cut to its last part, a description kept as written.
_PATH_OR_TEXT_KEYS = {"training_data", "warm_start", "weights"}


# ----------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------
def get_token(token: str | None = None) -> str | None:
    """The token to use: the one given, else ``HF_TOKEN``, else the saved ``hf auth login``."""
    if token:
        return token
    from huggingface_hub import get_token as hf_get_token

    return os.environ.get("HF_TOKEN") or hf_get_token() or None


def token_available() -> bool:
    """True when a push could authenticate (``HF_TOKEN`` set or a saved login)."""
    return bool(get_token())


def check_can_push(token: str | None = None) -> str:
    """The token for a push; a clear error when there is none or downloads/uploads are off."""
    found = require_token(token)
    if hub_offline():
        raise AnimeGANError("cannot push while offline (HF_HUB_OFFLINE / ANIMEGAN_OFFLINE is set)")
    return found


def require_token(token: str | None = None) -> str:
    found = get_token(token)
    if not found:
        raise AnimeGANError("no Hugging Face token: set HF_TOKEN (a token with write access from "
                            "https://huggingface.co/settings/tokens) or run 'hf auth login'")
    return found


# ----------------------------------------------------------------------------------------
# Push: what gets uploaded
# ----------------------------------------------------------------------------------------
def resolve_source(path_or_name: str | os.PathLike[str], workdir: Path, name: str | None = None) -> Path:
    """A weights file, a project weights name or a training run folder -> a ``.safetensors`` file.

    A run folder is exported first (into ``workdir``) by ``animegan.export.export_run``.
    """
    text = str(path_or_name).strip()
    if not text:
        raise AnimeGANError("name the weights to push: a .safetensors file, a project style/face name or a run folder")
    if is_hub_name(text):
        raise AnimeGANError(f"{text}: already on the Hub; push a local weights file or run folder")
    path = Path(text).expanduser()
    if path.is_dir():
        return export_run(path, workdir, name)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise AnimeGANError(f"{path}: only .safetensors weights made by anime studio can be pushed "
                                "(community .pt files carry their authors' terms)")
        return path
    if "/" not in text and os.sep not in text and text in project_weights():
        return weights_dir() / f"{text}.safetensors"
    raise AnimeGANError(f"{text!r}: no such weights file, project weights name or run folder")


def _folder_name(path: str) -> str:
    """'../shared/data/anime_faces/' -> 'anime_faces' (POSIX or Windows separators)."""
    parts = [p for p in re.split(r"[\\/]", path) if p not in ("", ".", "..")]
    return parts[-1] if parts else path


def _looks_like_path(text: str) -> bool:
    """'/home/bob/pics', 'C:\\data', '../x', 'data/photos' are paths; a sentence that names one is not."""
    return (os.path.isabs(text) or bool(re.match(r"^([A-Za-z]:[\\/]|~|\.{1,2}[\\/])", text))
            or (bool(re.search(r"[\\/]", text)) and not re.search(r"\s", text)))


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata to publish: no run folder path, and data folders by their names alone."""
    def path_key(key: str, value: Any) -> bool:
        return isinstance(value, str) and (key in _PATH_KEYS or (key in _PATH_OR_TEXT_KEYS and _looks_like_path(value)))

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (_folder_name(v) if path_key(k, v) else clean(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean({k: v for k, v in meta.items() if k not in _PRIVATE_KEYS})


def prepare_upload(path_or_name: str | os.PathLike[str], folder: str | os.PathLike[str], repo: str,
                   name: str | None = None, sample_size: int = 256,
                   examples: Sequence[str | os.PathLike[str]] | None = None) -> Path:
    """Write everything a Hub repo gets into ``folder``; no network.

    Layout: ``model.safetensors`` (tensors unchanged, public metadata in the header),
    ``model.json``, ``README.md`` (the model card), ``sample.png`` (made now; skipped with a
    note in the card when it cannot be made) and, for face models, ``model.sliders.safetensors``
    when the source has one.
    """
    from safetensors.torch import load_file, save_file

    repo = parse_repo_id(repo)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AnimeGANError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise AnimeGANError(f"{folder}: not empty; give an empty or new folder for the upload")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="animegan-export-") as tmp:
        source = resolve_source(path_or_name, Path(tmp), name)
        meta = check_hub_metadata(read_metadata(source), str(source))
        meta = public_metadata(meta)
        weights = folder / DEFAULT_FILE
        try:
            tensors = load_file(str(source))
        except Exception as exc:  # safetensors raises several types for bad files
            raise AnimeGANError(f"{source}: not a readable safetensors file ({first_line(exc)})") from None
        with atomic_path(weights) as part:
            save_file(tensors, str(part), metadata={HEADER_KEY: json.dumps(meta)})
        atomic_write_json(folder / "model.json", meta)
        sliders = source.with_name(f"{source.stem}.sliders.safetensors")
        if meta["kind"] == "faces" and sliders.is_file():
            shutil.copyfile(sliders, folder / "model.sliders.safetensors")
    sample_note, figures = make_sample(weights, meta, folder / SAMPLE_FILE, sample_size, examples)
    card = model_card(meta, repo, weights, sample=(folder / SAMPLE_FILE).is_file(),
                      sample_note=sample_note, figures=figures)
    atomic_write_bytes(folder / "README.md", card.encode("utf-8"))
    return folder


# ----------------------------------------------------------------------------------------
# Sample grids
# ----------------------------------------------------------------------------------------
def make_sample(weights: Path, meta: dict[str, Any], out: Path, sample_size: int = 256,
                examples: Sequence[str | os.PathLike[str]] | None = None) -> tuple[str, dict[str, float]]:
    """Make the card's sample image; return (caption or note, figures measured on it)."""
    if meta["kind"] == "style":
        return _style_sample(weights, out, sample_size, examples)
    return _faces_sample(weights, out)


def _style_sample(weights: Path, out: Path, side: int,
                  examples: Sequence[str | os.PathLike[str]] | None) -> tuple[str, dict[str, float]]:
    from .images import image_files, open_image
    from .stylize import Stylizer

    files = image_files([str(p) for p in examples]) if examples is not None else (
        image_files([str(EXAMPLES_DIR)]) if EXAMPLES_DIR.is_dir() else [])
    if not files:
        return "No sample images were available when this card was made.", {}
    photos = [np.asarray(ImageOps.fit(open_image(f).convert("RGB"), (side, side), Image.Resampling.LANCZOS))
              for f in files]
    stylizer = Stylizer(str(weights), device="cpu", half=False)
    anime = stylizer.run_arrays(photos, tile=0)
    _save_grid([*photos, *anime], cols=len(photos), out=out)
    return (f"Top: photos from the project's examples (public domain / CC0); bottom: this style "
            f"({len(photos)} images at {side}x{side}, made when this card was written)."), style_figures(photos, anime)


def style_figures(photos: Sequence[np.ndarray], anime: Sequence[np.ndarray]) -> dict[str, float]:
    """Simple figures of how strongly a style changes photos (on the sample images)."""
    p = np.stack(photos).astype(np.float32)
    a = np.stack(anime).astype(np.float32)

    def saturation(x: np.ndarray) -> float:
        return float((x.max(-1) - x.min(-1)).mean() / 255.0)

    def edges(x: np.ndarray) -> float:
        g = x.mean(-1)
        return float((np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=2)).mean()) / 2)

    return {"mean_abs_change": float(np.abs(a - p).mean()),
            "saturation_photo": saturation(p), "saturation_style": saturation(a),
            "edge_strength_photo": edges(p), "edge_strength_style": edges(a)}


def _faces_sample(weights: Path, out: Path) -> tuple[str, dict[str, float]]:
    try:
        from .faces import FaceGenerator
    except ImportError:
        return "No face grid: this install has no animegan.faces module.", {}
    fg = FaceGenerator(weights, device="cpu", half=False)
    images = fg.faces(list(FACE_GRID_SEEDS))
    _save_grid(images, cols=4, out=out)
    return f"Seeds 0 to 15, variety 1.0, {fg.image_size}x{fg.image_size} (made when this card was written).", {}


def _save_grid(images: Sequence[Any], cols: int, out: Path) -> None:
    from .faces import make_grid

    pils = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    with atomic_path(out) as part:
        make_grid(pils, cols=cols).save(part, format="PNG")


# ----------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------
_METRIC_NAMES = {"fid": "FID (lower is better)", "kid": "KID (lower is better)",
                 "mean_abs_change": "Mean absolute change from the photo (0-255)",
                 "saturation_photo": "Colour saturation of the photos (0-1)",
                 "saturation_style": "Colour saturation after the style (0-1)",
                 "edge_strength_photo": "Edge strength of the photos (mean gradient, 0-255)",
                 "edge_strength_style": "Edge strength after the style (mean gradient, 0-255)"}


def _tensor_summary(weights: Path) -> tuple[int, str]:
    from safetensors import safe_open

    count, dtypes = 0, set()
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            sl = fh.get_slice(key)
            count += int(np.prod(sl.get_shape())) if sl.get_shape() else 1
            dtypes.add(str(sl.get_dtype()))
    return count, ", ".join(sorted(dtypes))


def _md_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _training_data_lines(data: Any) -> list[str]:
    if not data:
        return ["Not recorded in the weights' metadata."]
    if isinstance(data, dict):
        return [f"- **{k}**: `{json.dumps(v)}`" if isinstance(v, (dict, list)) else f"- **{k}**: {_md_value(v)}"
                for k, v in data.items() if v not in (None, "")]
    return [_md_value(data)]


def model_card(meta: dict[str, Any], repo: str, weights: Path, sample: bool = True, sample_note: str = "",
               figures: dict[str, float] | None = None) -> str:
    """The README.md of a model repo: YAML front matter for the Hub, then the card."""
    from huggingface_hub import EvalResult, ModelCardData

    kind = meta["kind"]
    name = meta.get("name") or repo.split("/")[1]
    recorded = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    figures = figures or {}
    hub_name = f"{PREFIX}{repo}"
    task = "image-to-image" if kind == "style" else "unconditional-image-generation"
    tags = [LIBRARY_NAME, "anime", "gan", meta["architecture"],
            *(["animegan", "style-transfer"] if kind == "style" else ["dcgan", "anime-faces"])]
    data_name = meta.get("training_data") if isinstance(meta.get("training_data"), str) else "training images"
    evals = [EvalResult(task_type=task, dataset_type="images", dataset_name=str(data_name or "training images")[:100],
                        metric_type=key, metric_value=float(recorded[key]), metric_name=key.upper())
             for key in ("fid", "kid") if key in recorded]
    card_data = ModelCardData(library_name=LIBRARY_NAME, license="other", license_name="see-licence-note",
                              tags=tags, pipeline_tag=task, metrics=[k for k in ("fid", "kid") if k in recorded] or None,
                              model_name=name if evals else None, eval_results=evals or None)
    params, dtypes = _tensor_summary(weights)
    what = "a photo-to-anime style" if kind == "style" else "an anime-face generator (latent noise to face)"
    lines = ["---", card_data.to_yaml(), "---", "", f"# {name}", "",
             f"{meta.get('description') or name}", "",
             f"This is {what} for anime studio (the `animegan` Python package). "
             f"Use it by its Hub id `{hub_name}`.", ""]
    if sample:
        lines += [f"![sample]({SAMPLE_FILE})", "", sample_note, ""]
    else:
        lines += [f"_{sample_note}_", ""]
    lines += ["## Use it with anime studio", "", "Command line:", "", "```bash"]
    if kind == "style":
        lines += [f"python -m animegan stylize photo.jpg -o anime.png --style {hub_name}"]
    else:
        lines += [f"python -m animegan faces --weights {hub_name} --count 16 --out faces/ --grid grid.png"]
    lines += ["```", "", "Python:", "", "```python"]
    if kind == "style":
        lines += ["from animegan.stylize import stylize", "",
                  f'stylize("photo.jpg", style="{hub_name}").save("anime.png")']
    else:
        lines += ["from animegan.faces import FaceGenerator", "",
                  f'faces = FaceGenerator("{hub_name}")',
                  'faces.face(42).save("face42.png")  # the same seed gives the same face']
    lines += ["```", "",
              f"In the app, type `{hub_name}` where a style or face model is asked for. The files are downloaded "
              "once into the Hugging Face cache; afterwards it works offline (`HF_HUB_OFFLINE=1`). "
              f"A revision can be pinned: `{hub_name}@<commit>`.", "",
              "## Architecture", "",
              "| | |", "|---|---|",
              f"| architecture | `{meta['architecture']}` |",
              f"| kind | {kind} |",
              f"| config | `{json.dumps(meta.get('config') or {}, sort_keys=True)}` |",
              f"| parameters | {params:,} |",
              f"| stored as | safetensors ({dtypes}) |",
              f"| training steps | {_md_value(meta.get('steps', 'not recorded'))} |", "",
              "## Training data", "", *_training_data_lines(meta.get("training_data")), "",
              "## Metrics", ""]
    if recorded or figures:
        lines += ["| metric | value | source |", "|---|---|---|"]
        lines += [f"| {_METRIC_NAMES.get(k, k)} | {_md_value(v)} | recorded in training |" for k, v in recorded.items()]
        lines += [f"| {_METRIC_NAMES.get(k, k)} | {_md_value(v)} | measured on the sample images |"
                  for k, v in figures.items()]
    else:
        lines += ["No metrics were recorded for these weights."]
    if kind == "faces" and not any(k in recorded for k in ("fid", "kid")):
        lines += ["", "FID/KID were not measured during training; `python -m animegan fid` computes them."]
    lines += ["", "## Licence", "",
              _md_value(meta.get("licence") or "No licence note was recorded: check the terms of the training images "
                                               "before any use."),
              "", "The code of anime studio is separate from these weights; the weights carry the terms of the "
                  "images they were trained on.", "",
              "## Files", "",
              f"- `{DEFAULT_FILE}`: the weights (metadata also in its header)",
              "- `model.json`: the metadata anime studio checks before loading the weights"]
    if kind == "faces":
        lines += ["- `model.sliders.safetensors` (when present): the semantic slider directions the app uses"]
    if sample:
        lines += [f"- `{SAMPLE_FILE}`: the sample grid above"]
    lines += [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Push: the upload
# ----------------------------------------------------------------------------------------
def push_folder(folder: str | os.PathLike[str], repo: str, token: str | None = None, private: bool = False,
                message: str = "Upload with anime studio") -> str:
    """Create the model repo if needed and upload the prepared folder; returns the repo URL."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    repo = parse_repo_id(repo)
    token = check_can_push(token)
    api = HfApi(token=token, library_name=LIBRARY_NAME)
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder), commit_message=message)
    except hf.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise AnimeGANError("the Hugging Face token was rejected: check HF_TOKEN or log in again") from None
        if status == 403:
            raise AnimeGANError(f"the token may not write to {repo}: use a token with write access to "
                                f"that user or organisation") from None
        raise AnimeGANError(f"the Hub refused the upload to {repo} ({first_line(exc)})") from None
    except OSError as exc:  # connection errors are OSErrors too
        raise AnimeGANError(f"could not upload to {repo} ({first_line(exc)}); check the network") from None
    return str(url)


def push_weights(path_or_name: str | os.PathLike[str], repo: str, token: str | None = None,
                 private: bool = False, name: str | None = None,
                 progress: Callable[[float, str], None] | None = None) -> str:
    """Prepare and upload a weights file, project weights name or run folder; returns the repo URL."""
    repo = parse_repo_id(repo)
    token = check_can_push(token)  # before the slow part: fail fast without a token or network
    with tempfile.TemporaryDirectory(prefix="animegan-push-") as tmp:
        if progress:
            progress(0.1, "preparing the model card and sample grid")
        folder = prepare_upload(path_or_name, Path(tmp) / "upload", repo, name=name)
        if progress:
            progress(0.5, f"uploading to {repo}")
        return push_folder(folder, repo, token=token, private=private)
