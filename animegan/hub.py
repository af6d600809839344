"""Hugging Face Hub: use a shared style or face model by its id, and share one.

Pull: ``hub:USER/NAME`` works anywhere a style name does (``load_weights`` routes it here).
Optional parts: a file when a repo holds several, a revision (branch, tag or commit) last::

    hub:USER/NAME                          -> model.safetensors on main
    hub:USER/NAME@v1                       -> the same file at tag/branch/commit v1
    hub:USER/NAME/other.safetensors@abc123 -> another file at a commit

Files go through ``huggingface_hub.hf_hub_download`` into the standard HF cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), so they work
offline afterwards (``HF_HUB_OFFLINE=1`` or ``ANIMEGAN_OFFLINE=1``). The small metadata JSON
is downloaded and checked (format, architecture, config, kind) before the weights file is
even downloaded; the weights themselves are then loaded by the weights registry as usual.

Push: ``prepare_upload`` lays out a folder (weights, metadata, model card, sample grid)
without any network; ``push_folder`` uploads it with ``HfApi``; ``push_weights`` does both.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .errors import AnimeGANError
from .fileio import atomic_path, atomic_write_bytes, atomic_write_json

PREFIX = "hub:"
DEFAULT_FILE = "model.safetensors"
LIBRARY_NAME = "anime-studio"
SAMPLE_FILE = "sample.png"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
FACE_GRID_SEEDS = tuple(range(16))
ID_FORM = "hub:USER/NAME[/FILE.safetensors][@REVISION]"
_REVISION_RE = re.compile(r"^[\w.\-/]{1,200}$")
# The largest files a hub: id may make this app download. The project's generators are a few MB
# (fp16 AnimeGANv2: 4.3 MB); a 1 GiB safetensors is far past any of them.
MAX_WEIGHTS_BYTES = 1 << 30
MAX_SIDE_FILE_BYTES = 16 << 20  # model.json, the sliders file
# Keys that only make sense on the machine that trained the model (local paths).
_PRIVATE_KEYS = ("run",)
# Keys, at any depth, whose values are local folders: published as the folder's name alone
# ("anime_faces"), which says what the data was without showing the trainer's disk.
_PATH_KEYS = {"folder", "data", "photos", "anime", "eval_photos", "fid_reference"}


# ----------------------------------------------------------------------------------------
# Hub ids
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubId:
    """A weights file on the Hub: repository, file in it, revision (None = main)."""

    repo_id: str
    filename: str = DEFAULT_FILE
    revision: str | None = None

    def __str__(self) -> str:
        text = PREFIX + self.repo_id
        if self.filename != DEFAULT_FILE:
            text += "/" + self.filename
        return text + (f"@{self.revision}" if self.revision else "")

    @property
    def metadata_filename(self) -> str:
        return self.filename[: -len(".safetensors")] + ".json"

    @property
    def sliders_filename(self) -> str:
        return self.filename[: -len(".safetensors")] + ".sliders.safetensors"


def is_hub_name(text: Any) -> bool:
    """True for names of the form ``hub:...``."""
    return isinstance(text, str) and text.strip().startswith(PREFIX)


def parse_repo_id(text: str, what: str = "repository") -> str:
    """Check ``USER/NAME`` (the Hub's naming rules) and return it; AnimeGANError otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo = str(text).strip()
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise AnimeGANError(f"bad Hub {what} {text!r}: expected USER/NAME, e.g. alice/paprika-style")
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise AnimeGANError(f"bad Hub {what} {text!r}: {_first_sentence(exc)}") from None
    return repo


def parse_hub_id(text: str) -> HubId:
    """``hub:USER/NAME[/FILE.safetensors][@REVISION]`` -> HubId; a clear error for anything else."""
    raw = str(text).strip()
    if not raw.startswith(PREFIX):
        raise AnimeGANError(f"bad hub id {text!r}: expected {ID_FORM}")
    body = raw[len(PREFIX):].strip()
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
        if revision.endswith(".safetensors"):
            raise AnimeGANError(f"bad hub id {text!r}: put the revision last, as in {ID_FORM}")
        if not _REVISION_RE.match(revision) or ".." in revision:
            raise AnimeGANError(f"bad hub id {text!r}: revision {revision!r} is not a branch, tag or commit name")
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise AnimeGANError(f"bad hub id {text!r}: expected {ID_FORM}")
    repo = parse_repo_id("/".join(parts[:2]))
    filename = "/".join(parts[2:]) or DEFAULT_FILE
    if "\\" in filename or any(p in ("", ".", "..") for p in filename.split("/")):
        raise AnimeGANError(f"bad hub id {text!r}: {filename!r} is not a file path inside the repository")
    if not filename.endswith(".safetensors"):
        raise AnimeGANError(f"bad hub id {text!r}: the file must be a .safetensors weights file, not {filename!r}")
    return HubId(repo, filename, revision)


# ----------------------------------------------------------------------------------------
# Pull
# ----------------------------------------------------------------------------------------
def hub_cache_dir() -> Path | None:
    """The HF cache folder from the environment, read now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None  # huggingface_hub's own default


def _offline() -> bool:
    from huggingface_hub import constants

    from .weights import offline

    return offline() or constants.is_offline_mode()


def _check_size(hid: HubId, filename: str, revision: str | None) -> None:
    """Refuse a file that is not cached yet and is larger than any model of this project could be.

    One HEAD request (``get_hf_file_metadata``) before the download: a typed ``hub:`` id on a
    shared app must not make the server fetch gigabytes.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hid.repo_id, filename, cache_dir=hub_cache_dir(), revision=revision), str):
        return
    limit = MAX_WEIGHTS_BYTES if filename.endswith(".safetensors") else MAX_SIDE_FILE_BYTES
    try:
        size = get_hf_file_metadata(hf_hub_url(hid.repo_id, filename, revision=revision)).size
    except Exception:  # unreachable, no such repo or file ...: the download itself says which, clearly
        return
    if size is not None and size > limit:
        raise AnimeGANError(f"{hid}: {filename} is {size / 2**20:,.0f} MiB, more than the {limit / 2**20:,.0f} MiB "
                            "a model of this project can need; not downloaded")


def _download(hid: HubId, filename: str, revision: str | None, optional: bool = False) -> Path | None:
    """One file through hf_hub_download (its size checked first); None for an optional file the repo lacks."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf

    local_only = _offline()
    try:
        if not local_only:
            _check_size(hid, filename, revision)
        return Path(hf_hub_download(hid.repo_id, filename, revision=revision, cache_dir=hub_cache_dir(),
                                    local_files_only=local_only, library_name=LIBRARY_NAME))
    except hf.GatedRepoError:
        raise AnimeGANError(f"{hid}: the repository is gated; accept its terms on huggingface.co and "
                            "set HF_TOKEN (or run 'hf auth login')") from None
    except hf.RepositoryNotFoundError:
        raise AnimeGANError(f"{hid}: no such model repository on the Hub (a private one needs HF_TOKEN "
                            "or 'hf auth login')") from None
    except hf.RevisionNotFoundError:
        raise AnimeGANError(f"{hid}: the repository has no revision {revision!r}") from None
    except hf.RemoteEntryNotFoundError:
        if optional:
            return None
        raise AnimeGANError(f"{hid}: the repository has no file {filename!r}{_other_files_hint(hid)}") from None
    except hf.LocalEntryNotFoundError:
        if optional:
            return None  # the caller decides whether a missing optional file matters
        if local_only:
            raise AnimeGANError(f"{hid}: not in the local Hugging Face cache and downloads are off "
                                "(HF_HUB_OFFLINE / ANIMEGAN_OFFLINE); use it once with a network first") from None
        raise AnimeGANError(f"{hid}: could not reach the Hugging Face Hub and no cached copy exists; "
                            "check the network") from None
    except hf.HfHubHTTPError as exc:
        raise AnimeGANError(f"{hid}: the Hub refused the download ({_first_sentence(exc)})") from None
    except OSError as exc:
        raise AnimeGANError(f"{hid}: could not download {filename!r} ({_first_sentence(exc)})") from None


def _other_files_hint(hid: HubId) -> str:
    """Name the safetensors files the repo does hold (one extra request, on the error path only)."""
    try:
        from huggingface_hub import HfApi

        files = [f for f in HfApi().list_repo_files(hid.repo_id, revision=hid.revision)
                 if f.endswith(".safetensors") and not f.endswith(".sliders.safetensors")]
    except Exception:  # the hint is a courtesy; the error is reported either way
        return ""
    if not files:
        return " (it holds no .safetensors file)"
    return "; name one: " + ", ".join(f"{PREFIX}{hid.repo_id}/{f}" for f in files[:5])


def _snapshot_revision(path: Path, filename: str) -> str | None:
    """The commit a cached file belongs to (``.../snapshots/<commit>/<filename>``)."""
    depth = len(filename.split("/"))
    folder = path.parents[depth - 1]
    return folder.name if folder.parent.name == "snapshots" else None


def check_hub_metadata(meta: Any, where: str, kind: str | None = None) -> dict[str, Any]:
    """Validate metadata before any weights are loaded: format, architecture, config, kind."""
    from .models import architecture_kind, make_config
    from .weights import FORMAT, _check_metadata

    if not isinstance(meta, dict):
        raise AnimeGANError(f"{where}: metadata is not a JSON object")
    fmt = meta.get("format")
    if fmt != FORMAT:
        hint = " (made by a newer anime studio? update it)" if str(fmt).startswith(FORMAT.split("/")[0]) else ""
        raise AnimeGANError(f"{where}: metadata format is {fmt!r}, this version reads {FORMAT!r}{hint}")
    meta = _check_metadata(dict(meta), Path(where))  # known architecture; fills kind/config defaults
    if meta["kind"] != architecture_kind(meta["architecture"]):
        raise AnimeGANError(f"{where}: metadata says kind {meta['kind']!r} but architecture "
                            f"{meta['architecture']!r} is a {architecture_kind(meta['architecture'])!r} network")
    if meta["kind"] not in ("style", "faces"):
        raise AnimeGANError(f"{where}: holds a {meta['kind']} network, not a style or face model")
    if kind is not None and meta["kind"] != kind:
        wanted = {"style": "a photo-to-anime style", "faces": "a face generator"}.get(kind, kind)
        raise AnimeGANError(f"{where}: holds a {meta['kind']!r} model, not {wanted}")
    try:
        make_config(meta["architecture"], meta.get("config"))
    except (TypeError, ValueError) as exc:
        raise AnimeGANError(f"{where}: bad architecture config ({exc})") from None
    return meta


def hub_weights_path(name: str | HubId, kind: str | None = None) -> Path:
    """The local cached ``.safetensors`` file of a hub name, downloading it when needed.

    The metadata JSON comes first and is checked (``check_hub_metadata``, with ``kind`` when
    given) before the weights file is downloaded; both are taken from the same commit. A
    repo without the JSON falls back to the metadata in the safetensors header, checked
    before anything loads the tensors.
    """
    from .weights import read_metadata

    hid = name if isinstance(name, HubId) else parse_hub_id(name)
    meta_path = _download(hid, hid.metadata_filename, hid.revision, optional=True)
    revision = hid.revision
    if meta_path is not None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AnimeGANError(f"{hid}: {hid.metadata_filename} is not valid JSON ({_first_sentence(exc)})") from None
        check_hub_metadata(meta, str(hid), kind)
        revision = _snapshot_revision(meta_path, hid.metadata_filename) or revision
    path = _download(hid, hid.filename, revision)
    assert path is not None
    if meta_path is None:
        check_hub_metadata(read_metadata(path), str(hid), kind)  # header only: no tensor is read
    if kind in (None, "faces") and read_metadata(path).get("kind") == "faces":
        _download(hid, hid.sliders_filename, revision, optional=True)  # lands beside the weights
    return path


def cached_hub_path(name: str) -> Path | None:
    """The cached weights file of a hub name without any network request (None if not cached)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hid = parse_hub_id(name)
    except AnimeGANError:
        return None
    found = try_to_load_from_cache(hid.repo_id, hid.filename, cache_dir=hub_cache_dir(), revision=hid.revision)
    return Path(found) if isinstance(found, str) else None


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
    if _offline():
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

    A run folder is exported first (into ``workdir``) with its trainer's own export.
    """
    from .weights import project_weights, weights_dir

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


def export_run(run_dir: Path, workdir: Path, name: str | None = None) -> Path:
    """Export a training run's newest generator into ``workdir`` with the trainer that made it."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise AnimeGANError(f"{run_dir}: a folder, but not a training run (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AnimeGANError(f"{config_path}: not valid JSON ({_first_sentence(exc)})") from None
    name = name or re.sub(r"[^\w\-]+", "-", run_dir.resolve().name).strip("-.") or "model"
    try:
        if config.get("trainer") == "animegan" or "recipe" in config:
            from train.animegan import export_style

            return export_style(run_dir, name, weights_folder=workdir)
        if config.get("arch") in ("dcgan", "dcgan_improved"):
            from train.faces import export

            return export(run_dir, name, weights_dir=workdir)
    except ImportError as exc:
        raise AnimeGANError(f"{run_dir}: cannot export a run without the train package ({exc})") from None
    raise AnimeGANError(f"{run_dir}: not a run of train.animegan or train.faces; export it first")


def _folder_name(path: str) -> str:
    """'../shared/data/anime_faces/' -> 'anime_faces' (POSIX or Windows separators)."""
    parts = [p for p in re.split(r"[\\/]", path) if p not in ("", ".", "..")]
    return parts[-1] if parts else path


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata to publish: no run folder path, and data folders by their names alone."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (_folder_name(v) if k in _PATH_KEYS and isinstance(v, str) else clean(v))
                    for k, v in value.items()}
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

    from .weights import HEADER_KEY, read_metadata

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
            raise AnimeGANError(f"{source}: not a readable safetensors file ({_first_sentence(exc)})") from None
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
        raise AnimeGANError(f"the Hub refused the upload to {repo} ({_first_sentence(exc)})") from None
    except OSError as exc:  # connection errors are OSErrors too
        raise AnimeGANError(f"could not upload to {repo} ({_first_sentence(exc)}); check the network") from None
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


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
