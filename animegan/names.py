"""The one rule for names that become files or folders: run names, style and face-weights names."""
from __future__ import annotations

import re
from typing import Any

from .errors import AnimeGANError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Files shipped beside NAME.safetensors: its slider directions and its run's discriminator.
SIDECAR_SUFFIXES = (".sliders", ".d")


def is_sidecar(filename: str) -> bool:
    """Whether a ``.safetensors`` file name is a file shipped beside a model, not a model."""
    return filename.endswith(tuple(f"{suffix}.safetensors" for suffix in SIDECAR_SUFFIXES))


def check_name(name: Any, what: str = "run name") -> str:
    """A safe slug (letters, digits, '.', '-', '_'; at most 64), or an AnimeGANError."""
    text = str(name or "").strip()
    if not text:
        raise AnimeGANError(f"give a {what}, e.g. 'faces-64'")
    if not SAFE_NAME.match(text) or ".." in text:
        raise AnimeGANError(f"bad {what} {text!r}: use letters, digits, '-', '_' or '.', "
                            "start with a letter or digit, at most 64 characters")
    if text.endswith(SIDECAR_SUFFIXES):
        raise AnimeGANError(f"bad {what} {text!r}: names ending in {' or '.join(SIDECAR_SUFFIXES)} are kept for "
                            "the files shipped beside a model")
    return text
