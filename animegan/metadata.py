"""The metadata of a weights file: what network it holds, and how to rebuild it.

Every ``.safetensors`` the project writes carries a JSON object (format, kind, architecture,
config, data, metrics, licence) in its header under ``HEADER_KEY``, and the same object in
``NAME.json`` beside it. Reading it touches no tensor, so the weights registry, the Hub
download (which checks metadata before fetching weights) and listings can all afford it.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import AnimeGANError, first_line
from .models import ARCHITECTURES, architecture_kind, build_model

FORMAT = "animegan-weights/1"
HEADER_KEY = "animegan"
COMMUNITY_META: dict[str, Any] = {
    "format": FORMAT,
    "kind": "style",
    "architecture": "animeganv2",
    "config": {"align_corners": True},
    "licence": "Community AnimeGANv2 PyTorch port weights (bryandlee/animegan2-pytorch, MIT code); "
               "check that repository for the terms of the weights.",
}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of a safetensors weights file: the sidecar JSON, else the header's copy."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise AnimeGANError(f"{sidecar}: metadata is not valid JSON ({exc})") from None
    else:
        meta = _header_metadata(path)
    return check_metadata(meta, path)


def _header_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except FileNotFoundError:
        raise AnimeGANError(f"{path}: no such weights file") from None
    except Exception as exc:  # safetensors raises several types for bad files
        raise AnimeGANError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    if HEADER_KEY not in header:
        if _has_community_v2_layout(path):
            return {**COMMUNITY_META, "name": path.stem, "description": path.name}
        raise AnimeGANError(f"{path}: safetensors file without animegan metadata and no {path.stem}.json beside it, "
                            "and not the community AnimeGANv2 layout; say which architecture it is by adding that JSON")
    try:
        return json.loads(header[HEADER_KEY])
    except ValueError:
        raise AnimeGANError(f"{path}: damaged animegan metadata in the safetensors header") from None


def _has_community_v2_layout(path: Path) -> bool:
    """True when a safetensors file holds exactly the community AnimeGANv2 keys, with their shapes.

    Conversions of the community checkpoints to safetensors carry no metadata of ours; their
    key names say what they are (``../shared/formats``). Only names are trusted here, never the
    order: safetensors does not keep it. Read from the header alone, no tensor is loaded.
    """
    from safetensors import safe_open

    reference = _community_v2_shapes()
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
            return keys == set(reference) and all(
                tuple(fh.get_slice(k).get_shape()) == reference[k] for k in keys)
    except Exception:  # unreadable: the caller's message says what the file lacks
        return False


@functools.lru_cache(maxsize=1)
def _community_v2_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = build_model("animeganv2")
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    """A metadata dict with a known architecture, ``kind`` and ``config`` filled in; AnimeGANError otherwise."""
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise AnimeGANError(f"{path}: metadata has no 'architecture'")
    if meta["architecture"] not in ARCHITECTURES:
        raise AnimeGANError(f"{path}: unknown architecture {meta['architecture']!r} "
                            f"(this version knows {', '.join(sorted(ARCHITECTURES))})")
    meta.setdefault("kind", architecture_kind(meta["architecture"]))
    meta.setdefault("config", {})
    return meta
