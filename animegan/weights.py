"""Weights registry: a style name, a file path, a community preset or a hub id -> a ready network.

Three sources, in the order the app lists them:

* the project's own weights in ``weights/``: ``NAME.safetensors`` with ``NAME.json`` beside it;
  the same metadata is embedded in the safetensors header, so a lone file rebuilds itself;
* community AnimeGANv2 presets (``face_paint_512_v2`` ...), downloaded once into the cache
  (``$ANIMEGAN_CACHE``, else ``$XDG_CACHE_HOME/animegan``, else ``~/.cache/animegan``);
* any ``.safetensors`` or ``.pt`` path a user passes (a community checkpoint converted to
  safetensors, with no metadata of ours, is recognised by its AnimeGANv2 key names).

A ``hub:USER/NAME`` id works wherever a name does: ``animegan.hub_pull`` turns it into a checked
file in the Hugging Face cache, loaded here like any other (the hub never imports this module).
The metadata format (reading, checking) is ``animegan.metadata``.

Nothing here unpickles arbitrary objects: safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import AnimeGANError, first_line
from .fileio import atomic_path, atomic_write_json, file_sha256
from .hub_pull import PREFIX, cached_hub_path, hub_weights_path, offline
from .metadata import COMMUNITY_META, FORMAT, HEADER_KEY, check_metadata, read_metadata
from .models import architecture_kind, build_model
from .names import is_sidecar

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

COMMUNITY_URL = "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights/{name}.pt"
COMMUNITY_PRESETS: dict[str, str] = {
    "face_paint_512_v2": "Portraits, strong lines (community AnimeGANv2, trained on 512px face crops)",
    "face_paint_512_v1": "Portraits, softer (community AnimeGANv2, 512px face crops)",
    "celeba_distill": "Portraits, distilled from a CelebA teacher (community AnimeGANv2)",
    "paprika": "Scenery in the style of the film Paprika (community AnimeGANv2)",
}


@dataclass
class LoadedWeights:
    """A state dict with the metadata needed to rebuild its network."""

    source: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.metadata["architecture"]

    @property
    def kind(self) -> str:
        return self.metadata.get("kind") or architecture_kind(self.architecture)


# ----------------------------------------------------------------------------------------
# Where things live
# ----------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """The project's weights folder (``$ANIMEGAN_WEIGHTS_DIR`` overrides it)."""
    return Path(os.environ.get("ANIMEGAN_WEIGHTS_DIR") or PACKAGE_WEIGHTS_DIR)


def cache_dir() -> Path:
    """Where downloaded presets are kept."""
    if os.environ.get("ANIMEGAN_CACHE"):
        return Path(os.environ["ANIMEGAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "animegan"


# ----------------------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------------------
PORTRAIT_PRESET = "portrait"  # a project style trained with this preset is portrait mode's default


def project_weights(kind: str | None = None) -> dict[str, dict[str, Any]]:
    """name -> metadata for every readable project weights file (optionally of one kind)."""
    found: dict[str, dict[str, Any]] = {}
    folder = weights_dir()
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.safetensors")):
        if is_sidecar(path.name):
            continue
        try:
            meta = read_metadata(path)
        except AnimeGANError:
            continue  # an unreadable file is reported when someone asks for it by name
        if kind is None or meta.get("kind") == kind:
            found[path.stem] = meta
    # By the order their metadata may give, then general styles before portrait ones, then by name.
    return dict(sorted(found.items(), key=lambda kv: (kv[1].get("order", 100),
                                                      kv[1].get("preset") == PORTRAIT_PRESET, kv[0])))


def available_styles() -> list[str]:
    """Style names for menus: the project's own styles first, then the community presets."""
    return [*project_weights("style"), *COMMUNITY_PRESETS]


def offline_styles() -> list[str]:
    """Styles usable right now without a network: project styles and already-cached presets."""
    cached = [n for n in COMMUNITY_PRESETS if _cached_preset_path(n).is_file()]
    return [*project_weights("style"), *cached]


def default_style(portrait: bool = False) -> str:
    """The style used when none is named: the first offline style made for the mode.

    In portrait mode that is the first project style trained with the portrait preset, otherwise the
    first style that was not; when the mode has none of its own, the first offline style.
    """
    styles = offline_styles()
    if not styles:
        raise AnimeGANError(no_styles_message())
    project = project_weights("style")
    for name in styles:
        if (project.get(name, {}).get("preset") == PORTRAIT_PRESET) == portrait:
            return name
    return styles[0]


def style_for_mode(current: str | None, portrait: bool) -> str | None:
    """The style a menu should show once portrait mode is switched on or off.

    A menu showing the other mode's default moves to this mode's default; a style the user picked stays.
    """
    try:
        old, new = default_style(not portrait), default_style(portrait)
    except AnimeGANError:
        return current
    return new if current in (None, "", old) else current


def no_styles_message() -> str:
    return ("no anime style is available offline yet: pass a community preset such as "
            "--style face_paint_512_v2 (downloaded once, then cached), a weights file, or train one "
            "with 'python -m train.animegan --data DIR --out runs/NAME'")


def describe(name: str) -> str:
    """A one-line description for menus."""
    if name in COMMUNITY_PRESETS:
        cached = "" if _cached_preset_path(name).is_file() else " [downloads on first use]"
        return COMMUNITY_PRESETS[name] + cached
    meta = project_weights().get(name, {})
    return meta.get("description", name)


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
def identity(name_or_path: str | os.PathLike[str]) -> str:
    """A key that changes when the weights a name points at change (for caches of loaded models)."""
    text = str(name_or_path).strip()
    if text.startswith(PREFIX):  # the cached copy, looked up without a network request
        cached = cached_hub_path(text)
        if cached is None:
            return text
        stat = cached.stat()
        return f"{text}:{cached.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    candidates = [weights_dir() / f"{text}.safetensors", Path(text).expanduser()]
    if text in COMMUNITY_PRESETS:
        candidates.insert(1, _cached_preset_path(text))
    for path in candidates:
        if path.is_file():
            stat = path.stat()
            return f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    return text


def load_weights(name_or_path: str | os.PathLike[str], kind: str | None = None) -> LoadedWeights:
    """Resolve a style name, preset name, ``hub:USER/NAME`` id or file path to a state dict plus metadata.

    ``kind`` ("style" or "faces"), when given, is checked for hub ids before the weights are
    downloaded; for other sources the caller checks ``LoadedWeights.kind`` as before.
    """
    text = str(name_or_path).strip()
    if not text:
        raise AnimeGANError(no_styles_message())
    if text.startswith(PREFIX):  # a Hugging Face Hub model: animegan.hub_pull fetches it, metadata first
        return _load_safetensors(hub_weights_path(text, kind=kind))
    project_file = weights_dir() / f"{text}.safetensors"
    if os.sep not in text and "/" not in text and project_file.is_file():
        return _load_safetensors(project_file)
    if text in COMMUNITY_PRESETS:
        return _load_community_pt(fetch_preset(text), metadata={**COMMUNITY_META, "name": text,
                                                                "description": COMMUNITY_PRESETS[text]})
    path = Path(text).expanduser()
    if path.is_dir():
        raise AnimeGANError(f"{path}: is a folder, not a weights file")
    if not path.exists():
        known = ", ".join(available_styles()) or "none"
        raise AnimeGANError(f"unknown style or missing file {text!r} (styles: {known})")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        return _load_community_pt(path, metadata={**COMMUNITY_META, "name": path.stem, "description": path.name})
    raise AnimeGANError(f"{path}: unsupported weights file type {path.suffix!r} (use .safetensors or .pt)")


def _load_safetensors(path: Path) -> LoadedWeights:
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for bad files
        raise AnimeGANError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    return LoadedWeights(str(path), state, meta)


def _load_community_pt(path: Path, metadata: dict[str, Any]) -> LoadedWeights:
    state = read_pt_state_dict(path)
    reference = build_model("animeganv2").state_dict()
    return LoadedWeights(str(path), convert_v2_state_dict(state, reference, path), metadata)


def read_pt_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch checkpoint's tensors, loaded without running any pickled code."""
    if path.stat().st_size == 0:
        raise AnimeGANError(f"{path}: empty file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad pickles and bad zips
        message = str(exc)
        if "weights_only" in message or "Unsupported global" in message or "GLOBAL" in message:
            raise AnimeGANError(f"{path}: refused: the file holds Python objects other than tensors, "
                                "and loading it could run code") from None
        if isinstance(exc, (zipfile.BadZipFile, EOFError, RuntimeError)) or "zip" in message.lower():
            raise AnimeGANError(f"{path}: truncated or damaged checkpoint ({first_line(exc)})") from None
        raise AnimeGANError(f"{path}: not a PyTorch checkpoint ({first_line(exc)})") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """Find the generator's tensors in the dict layouts other ports use; strip ``module.``."""
    for key in ("model_state_dict", "state_dict", "generator", "netG", "G", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise AnimeGANError(f"{path}: no state dict found in the checkpoint")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise AnimeGANError(f"{path}: the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def convert_v2_state_dict(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                          path: Path | str) -> dict[str, torch.Tensor]:
    """Match a checkpoint to the community AnimeGANv2 keys: by name, else by tensor order."""
    if set(state) == set(reference):
        _check_shapes(state, reference, path)
        return state
    if len(state) != len(reference):
        raise AnimeGANError(f"{path}: not an AnimeGANv2 generator ({len(state)} tensors, expected {len(reference)})")
    renamed = dict(zip(reference, state.values()))
    for (ours, theirs), (their_key, their_tensor) in zip(reference.items(), state.items()):
        if tuple(theirs.shape) != tuple(their_tensor.shape):
            raise AnimeGANError(f"{path}: not an AnimeGANv2 generator: tensor {their_key!r} has shape "
                                f"{tuple(their_tensor.shape)} where {ours!r} needs {tuple(theirs.shape)}")
    return renamed


def _check_shapes(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], path: Path | str) -> None:
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AnimeGANError(f"{path}: weights do not fit the architecture ({detail})")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise AnimeGANError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                f"the architecture needs {tuple(ref.shape)}")


# No config of these networks has a count or size anywhere near this; a larger one in a file's
# metadata is a damaged or hostile file (it would build millions of layers before any check).
MAX_CONFIG_INT = 8192


def _config_numbers(config: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in a config, nested ones (a composed network's parts) named ``part.key``."""
    if not isinstance(config, dict):
        return []
    found: list[tuple[str, float]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            found += _config_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((f"{prefix}{key}", value))
    return found


def build_from_weights(weights: LoadedWeights) -> nn.Module:
    """Rebuild the network its metadata describes and load the tensors (shapes checked first).

    The shapes are checked on a network built on the meta device, which allocates nothing: a
    few-hundred-byte file whose metadata asks for a giant network costs no memory. Only a
    config whose tensors are all in the file is then built for real.
    """
    config = weights.metadata.get("config")
    for key, value in _config_numbers(config):
        if abs(value) > MAX_CONFIG_INT:
            raise AnimeGANError(f"{weights.source}: implausible architecture config ({key}={value})")
    try:
        with torch.device("meta"):
            skeleton = build_model(weights.architecture, config)
        reference = skeleton.state_dict()
        _check_shapes(weights.state_dict, reference, weights.source)
        model = build_model(weights.architecture, config)
    except (TypeError, ValueError) as exc:
        raise AnimeGANError(f"{weights.source}: bad architecture config ({exc})") from None
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in weights.state_dict.items()})
    return model.eval()


def load_generator(name_or_path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The raw network in eval mode on the CPU (input NCHW in [-1, 1], output in [-1, 1]).

    Accepts a style name, a ``.safetensors`` file or a community ``.pt`` file; ``None``
    means the default style.
    """
    weights = load_weights(name_or_path if name_or_path is not None else default_style())
    model = build_from_weights(weights)
    model.metadata = weights.metadata  # type: ignore[attr-defined]
    return model


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
def save_weights(path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], metadata: dict[str, Any],
                 dtype: torch.dtype | None = torch.float16) -> Path:
    """Write ``NAME.safetensors`` (metadata in its header) and ``NAME.json`` beside it, atomically.

    ``metadata`` needs at least ``architecture`` (and ``config`` when not the default).
    Floating tensors are stored as ``dtype`` (fp16 halves the size; inference upcasts).
    """
    path = Path(path)
    meta = check_metadata({"format": FORMAT, **metadata, "name": metadata.get("name", path.stem)}, path)
    tensors = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(meta)})
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def update_metadata(path: str | os.PathLike[str], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into a project weights file's metadata (header and JSON), tensors unchanged.

    Dict values merge one level deep (``{"metrics": {...}}`` adds figures beside the old ones).
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    for key, value in updates.items():
        meta[key] = {**meta[key], **value} if isinstance(value, dict) and isinstance(meta.get(key), dict) else value
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for bad files
        raise AnimeGANError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    save_weights(path, tensors, meta, dtype=None)
    return meta


# ----------------------------------------------------------------------------------------
# Community presets: download once, verify, cache
# ----------------------------------------------------------------------------------------
def _cached_preset_path(name: str) -> Path:
    return cache_dir() / "presets" / f"{name}.pt"


def _valid_preset(path: Path) -> bool:
    """A cached preset is used only if its checksum matches the one taken when it was fetched."""
    sidecar = path.with_suffix(".sha256")
    if not path.is_file() or not sidecar.is_file():
        return False
    return sidecar.read_text().strip() == file_sha256(path)


def fetch_preset(name: str, url: str | None = None) -> Path:
    """The cached file of a community preset, downloading it first when needed.

    The download goes to a temporary file, must load as a valid AnimeGANv2 state dict, and
    only then is moved into the cache with its checksum; a damaged cached copy is fetched again.
    """
    path = _cached_preset_path(name)
    if _valid_preset(path):
        return path
    if path.exists():
        path.unlink()  # damaged or partial: never load it
    if offline():
        raise AnimeGANError(f"style {name!r} is not cached and downloads are off (offline mode); "
                            "run once with a network, or use a weights file")
    url = url or COMMUNITY_URL.format(name=name)
    with atomic_path(path) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise AnimeGANError(f"could not download style {name!r} from {url} ({first_line(exc)}); "
                                "check the network or use a weights file") from None
        state = read_pt_state_dict(tmp)  # raises a clear error on a broken download
        convert_v2_state_dict(state, build_model("animeganv2").state_dict(), url)
        digest = file_sha256(tmp)
    path.with_suffix(".sha256").write_text(digest + "\n")
    return path
