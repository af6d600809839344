"""The discriminator shipped beside a model (``NAME.d.safetensors``), so training can go on from it.

A GAN's state is its generator *and* its discriminator. A run warm-started from the generator alone
faces a new discriminator that knows nothing, and the generator drifts away from where it was (three
continuations of ``faces64`` and one of ``portrait-anime`` ended worse than their start). So an export
(faces and styles) writes the run's discriminator beside the weights (fp16, a few MB), and a warm
start picks it up.

The file names the generator it belongs to by a SHA-256 of the generator's tensors (not of the file:
a metadata update rewrites the file, not the weights), so a discriminator left over from an older
export of the same name is never paired with a newer generator. The app never reads this file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import AnimeGANError, first_line
from .fileio import atomic_path

HEADER_KEY = "animegan_discriminator"


def discriminator_path(weights_path: str | os.PathLike[str]) -> Path:
    """Where a face weights file's discriminator goes: ``NAME.d.safetensors`` beside ``NAME.safetensors``."""
    path = Path(weights_path)
    return path.with_name(f"{path.stem}.d.safetensors")


def generator_sha256(weights_path: str | os.PathLike[str]) -> str:
    """SHA-256 of a weights file's tensors (names, dtypes, shapes, bytes): unchanged by metadata edits."""
    from safetensors.torch import load_file

    return tensors_sha256(load_file(str(weights_path)))


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_discriminator(weights_path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor],
                       info: dict[str, Any]) -> Path:
    """Write the discriminator for the (already written) ``weights_path``, fp16, atomically.

    ``info`` (JSON-able: its config, the step) goes into the header beside the generator's hash.
    """
    from safetensors.torch import save_file

    path = discriminator_path(weights_path)
    tensors = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state_dict.items()}
    header = {**info, "generator_sha256": generator_sha256(weights_path)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def load_discriminator(weights_path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The (state dict, header) shipped beside ``weights_path``; None when there is none.

    A file that is damaged, or that belongs to another generator file, is one clear line.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = discriminator_path(weights_path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = json.loads((fh.metadata() or {})[HEADER_KEY])
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types; a missing key or bad JSON lands here too
        raise AnimeGANError(f"{path}: not a readable discriminator file ({first_line(exc)})") from None
    if header.get("generator_sha256") != generator_sha256(weights_path):
        raise AnimeGANError(f"{path}: made for another version of {Path(weights_path).name} "
                            "(export the run again, or delete it to start a new discriminator)")
    return state, header
