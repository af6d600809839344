"""Shared fixtures: small deterministic weights and images made on the spot (nothing downloads)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("ANIMEGAN_OFFLINE", "1")  # a test must never reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def make_v2_generator(seed: int = 0) -> torch.nn.Module:
    """An AnimeGANv2 generator with deterministic random weights and non-trivial norm affines.

    Random weights are test data only: they exercise the real computation (every layer, the
    norms, the resizes) without shipping or downloading a trained style.
    """
    from animegan.models import build_model

    torch.manual_seed(seed)
    model = build_model("animeganv2")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project weights folder, in place of the shipped one."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("ANIMEGAN_CACHE", str(tmp_path / "cache"))
    return folder


@pytest.fixture
def style(weights_dir: Path) -> str:
    """A style named 'test-style' in the project weights folder (fp32, so outputs are exact)."""
    from animegan.weights import save_weights

    save_weights(weights_dir / "test-style.safetensors", make_v2_generator().state_dict(),
                 {"architecture": "animeganv2", "kind": "style", "description": "test weights"}, dtype=None)
    return "test-style"


def gradient_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful RGB uint8 picture with some texture: enough structure for the nets."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 127 + 120 * np.sin(x / max(width, 1) * 6.3)
    g = 127 + 120 * np.cos(y / max(height, 1) * 4.1)
    b = 127 + 100 * np.sin((x + y) / max(width + height, 1) * 9.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def free_port() -> int:
    """A TCP port free on localhost right now (for test servers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
