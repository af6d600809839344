"""Hugging Face Hub ids and downloads: ``hub:USER/NAME`` -> a checked weights file in the HF cache.

``hub:USER/NAME`` works anywhere a style name does (``animegan.weights.load_weights`` routes it
here). Optional parts: a file when a repo holds several, a revision (branch, tag or commit) last::

    hub:USER/NAME                          -> model.safetensors on main
    hub:USER/NAME@v1                       -> the same file at tag/branch/commit v1
    hub:USER/NAME/other.safetensors@abc123 -> another file at a commit

Files go through ``huggingface_hub.hf_hub_download`` into the standard HF cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), so they work
offline afterwards (``HF_HUB_OFFLINE=1`` or ``ANIMEGAN_OFFLINE=1``). The small metadata JSON
is downloaded and checked (format, architecture, config, kind) before the weights file is
even downloaded; the weights registry then loads the file as usual.

This module sits below the weights registry: it reads metadata (``animegan.metadata``) but
never imports ``animegan.weights``. Sharing a model (push) is ``animegan.hub``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AnimeGANError, first_line
from .metadata import FORMAT, check_metadata, read_metadata
from .models import architecture_kind, make_config
from .names import is_sidecar

PREFIX = "hub:"
DEFAULT_FILE = "model.safetensors"
LIBRARY_NAME = "anime-studio"
ID_FORM = "hub:USER/NAME[/FILE.safetensors][@REVISION]"
_REVISION_RE = re.compile(r"^[\w.\-/]{1,200}$")
# The largest files a hub: id may make this app download. The project's generators are a few MB
# (fp16 AnimeGANv2: 4.3 MB); a 1 GiB safetensors is far past any of them.
MAX_WEIGHTS_BYTES = 1 << 30
MAX_SIDE_FILE_BYTES = 16 << 20  # model.json, the sliders file


def offline() -> bool:
    """True when downloads are forbidden (``ANIMEGAN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in ("ANIMEGAN_OFFLINE", "HF_HUB_OFFLINE"))


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
        raise AnimeGANError(f"bad Hub {what} {text!r}: {first_line(exc)}") from None
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


def hub_offline() -> bool:
    """True when the Hub may not be reached: ``offline()``, or huggingface_hub's own offline mode."""
    from huggingface_hub import constants

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

    local_only = hub_offline()
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
        raise AnimeGANError(f"{hid}: the Hub refused the download ({first_line(exc)})") from None
    except OSError as exc:
        raise AnimeGANError(f"{hid}: could not download {filename!r} ({first_line(exc)})") from None


def _other_files_hint(hid: HubId) -> str:
    """Name the safetensors files the repo does hold (one extra request, on the error path only)."""
    try:
        from huggingface_hub import HfApi

        files = [f for f in HfApi().list_repo_files(hid.repo_id, revision=hid.revision)
                 if f.endswith(".safetensors") and not is_sidecar(f)]
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
    if not isinstance(meta, dict):
        raise AnimeGANError(f"{where}: metadata is not a JSON object")
    fmt = meta.get("format")
    if fmt != FORMAT:
        hint = " (made by a newer anime studio? update it)" if str(fmt).startswith(FORMAT.split("/")[0]) else ""
        raise AnimeGANError(f"{where}: metadata format is {fmt!r}, this version reads {FORMAT!r}{hint}")
    meta = check_metadata(dict(meta), Path(where))  # known architecture; fills kind/config defaults
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
    hid = name if isinstance(name, HubId) else parse_hub_id(name)
    meta_path = _download(hid, hid.metadata_filename, hid.revision, optional=True)
    revision = hid.revision
    if meta_path is not None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AnimeGANError(f"{hid}: {hid.metadata_filename} is not valid JSON ({first_line(exc)})") from None
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
