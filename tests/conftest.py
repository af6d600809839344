"""Shared fixtures: small deterministic weights and images made on the spot (nothing downloads)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2  # noqa: F401 - imported first here: it sets LD_LIBRARY_PATH and QT_QPA_* on first import, not a leak
import numpy as np
import pytest
import torch

os.environ.setdefault("ANIMEGAN_OFFLINE", "1")  # a test must never reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "True")  # what gradio's Blocks sets anyway when analytics are off
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _global_state() -> dict[str, object]:
    """What one test could change for every test after it: the environment and torch's globals."""
    return {
        # Not pytest's own phase marker, nor a library's private variable (inductor sets one once).
        "environment": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST" and not k.startswith("_")},
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "matmul precision": torch.get_float32_matmul_precision(),
    }


@pytest.fixture(autouse=True)
def leaves_no_global_state() -> Iterator[None]:
    """Fail a test that leaves the environment or torch's precision settings changed.

    A leak hides bugs: an in-process ``--fp32`` once set ANIMEGAN_PRECISION for the rest of the
    run, so every later test ran the float32 path on CPUs whose default is bfloat16.
    """
    before = _global_state()
    yield
    after = _global_state()
    changed = [key for key in before if before[key] != after[key]]
    if not changed:
        return
    details = []
    for key in changed:
        if key == "environment":
            old, new = before[key], after[key]
            assert isinstance(old, dict) and isinstance(new, dict)
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            details.append(f"environment variables {names}")
            for name in names:
                if name in old:
                    os.environ[name] = old[name]
                else:
                    os.environ.pop(name, None)
        else:
            details.append(f"{key} {before[key]!r} -> {after[key]!r}")
    torch.set_default_dtype(before["default dtype"])  # type: ignore[arg-type]
    torch.set_grad_enabled(bool(before["grad mode"]))
    torch.set_num_threads(int(before["threads"]))  # type: ignore[call-overload]
    torch.use_deterministic_algorithms(bool(before["deterministic algorithms"]))
    torch.set_float32_matmul_precision(str(before["matmul precision"]))
    pytest.fail("the test left global state changed for the tests after it: " + "; ".join(details))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caches go to a folder of the session's own, removed at its end, never the user's ``~/.cache/animegan``:
    every folder a test measures adds Inception statistics of 35 MB or more there."""
    import shutil

    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANIMEGAN_CACHE", str(folder))
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _has_cxx() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler, or an inductor without this helper
        return False
    return True


# torch.compile on the CPU builds C++ kernels: a machine with no C++ compiler skips these.
needs_cxx = pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler")


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


@pytest.fixture
def portrait_style(style: str, weights_dir: Path) -> str:
    """Beside ``style``, 'faces-style', trained (here: drawn) with the portrait preset: portrait mode's default."""
    from animegan.weights import save_weights

    save_weights(weights_dir / "faces-style.safetensors", make_v2_generator(seed=7).state_dict(),
                 {"architecture": "animeganv2", "kind": "style", "preset": "portrait"}, dtype=None)
    return "faces-style"


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
