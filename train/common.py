"""What the trainers share besides the run folder itself (``animegan.runs``).

Per-step randomness and RNG state (so a resumed run repeats exactly what the uninterrupted
run would have drawn), the graceful stop on SIGTERM/SIGINT, ``--config`` values and the
sample grids the trainers save.
"""
from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from animegan.errors import AnimeGANError

if TYPE_CHECKING:
    from animegan.runs import RunFolder


def image_rows_grid(rows: list[torch.Tensor]) -> Any:
    """Rows of NCHW images in [-1, 1] -> one PIL picture, a row per tensor (the trainers' sample grids)."""
    from PIL import Image

    lines = []
    for row in rows:
        a = ((row.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        lines.append(np.concatenate(list(a), axis=1))
    return Image.fromarray(np.concatenate(lines, axis=0))


def read_config_arg(text: str) -> dict[str, Any]:
    """A ``--config`` value: a JSON file's path or an inline JSON object."""
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise AnimeGANError(f"{text}: config file not found")
        source = path.read_text(encoding="utf-8")
    try:
        values = json.loads(source)
    except ValueError as exc:
        raise AnimeGANError(f"{text}: config is not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise AnimeGANError(f"{text}: config must be a JSON object")
    return values


PATH_KEYS = ("data", "generator", "init_from", "eval_upscaler")  # config values that name a file or folder


def check_resume_keeps_config(saved: dict[str, Any], asked: dict[str, Any],
                              may_change: tuple[str, ...] = ("steps",), defaults: dict[str, Any] | None = None) -> None:
    """Refuse a ``--resume`` that asks for other values than the run's saved config (``may_change`` may).

    A setting the saved config lacks (a run older than the setting) ran with its default, given in ``defaults``.
    """
    saved = {**(defaults or {}), **saved}

    def same(key: str, value: Any) -> bool:
        if key in PATH_KEYS and value and saved[key]:  # the same file or folder, however it is written
            return Path(str(value)).resolve() == Path(str(saved[key])).resolve()
        return saved[key] == value

    changed = sorted(k for k, v in asked.items() if k not in (*may_change, "trainer") and k in saved and not same(k, v))
    if changed:
        raise AnimeGANError(f"--resume keeps the run's config; these differ from it: {', '.join(changed)}")


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one step's randomness (batch choice, augmentation, noise).

    Seeding from (seed, step, rank) rather than carrying one stream makes a resumed run draw
    exactly what the uninterrupted run would have drawn, without saving data-loader state.
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + rank)


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain numbers, so checkpoints load with weights_only."""
    _, np_keys, np_pos, _, _ = np.random.get_state()
    py_version, py_keys, _ = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "python_keys": torch.tensor(py_keys, dtype=torch.int64),
        "python_version": int(py_version),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(int(k) for k in state["python_keys"]), None))


class TrainClock:
    """Wall-clock seconds a run has trained, carried across resumes in its checkpoints (``trained_s``).

    The trainers log it as ``train_hours`` in metrics.jsonl, so a campaign's hours (``animegan.curve``)
    count training, not the time a run sat stopped between sessions.
    """

    def __init__(self, carried_s: float = 0.0) -> None:
        self.carried_s = float(carried_s)
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.carried_s + time.monotonic() - self.started

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


class GracefulStop:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and exits 0 at the next step."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def load_generator_weights(generator: torch.nn.Module, weights: str, kind: str, what: str,
                           architecture: tuple[str, str] | None = None,
                           stages: dict[str, str] | None = None) -> Any:
    """Load a weights file of ``kind`` ("style" or "faces") into ``generator`` for a warm start.

    ``architecture`` is (the architecture the run trains, what makes it so), checked first.
    ``stages`` maps the architecture of a file that holds the trained network as one stage of a
    larger one to the prefix of that stage's tensors (e.g. a 128 px face model's 64 px generator).
    Returns the ``LoadedWeights`` (its metadata says how it was trained); any mismatch is one
    line naming the file: another kind of model, another architecture, or a generator this run's
    config does not build.
    """
    from animegan.weights import load_weights

    loaded = load_weights(weights, kind=kind)
    if loaded.kind != kind:
        raise AnimeGANError(f"{weights}: holds a {loaded.kind} model, not {what}")
    prefix = (stages or {}).get(loaded.architecture)
    if architecture is not None and loaded.architecture != architecture[0] and prefix is None:
        raise AnimeGANError(f"{weights}: a {loaded.architecture} generator, but {architecture[1]} trains "
                            f"{architecture[0]}")
    state = loaded.state_dict if prefix is None else \
        {k[len(prefix):]: v for k, v in loaded.state_dict.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(state)  # copied into the run's fp32 tensors, whatever the file's dtype
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]  # [0] only names the class
        raise AnimeGANError(f"{weights}: its generator does not fit this run's config ({detail}); "
                            f"its config is {loaded.metadata.get('config')}") from None
    return loaded


def load_shipped_discriminator(discriminator: torch.nn.Module, weights_source: str) -> bool:
    """Load the discriminator exported beside a weights file (``NAME.d.safetensors``) into ``discriminator``.

    Returns False when there is none (weights from before this, or from elsewhere): the run then
    starts a new D. One line naming the file when it belongs to other weights or does not fit.
    """
    from animegan.discriminator_file import discriminator_path, load_discriminator

    shipped = load_discriminator(weights_source) if Path(weights_source).is_file() else None
    if shipped is None:
        return False
    try:
        discriminator.load_state_dict(shipped[0])  # into the run's fp32 tensors
    except RuntimeError:
        raise AnimeGANError(f"{discriminator_path(weights_source)}: its discriminator does not fit this run's "
                            f"(it was {shipped[1].get('config')}); delete it to start a new one") from None
    return True


def ema_decay_at(decay: float, step: int, warm_started: bool) -> float:
    """The EMA's decay at ``step``: a ramp lets a new EMA forget its random start; a warm-started one
    has nothing to forget and takes ``decay`` from the first step."""
    return decay if warm_started else min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move ``ema``'s weights ``1 - decay`` of the way to ``model``'s; buffers are copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach().to(pe.dtype), 1 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def check_export_best(best: bool, export: str | None, evaluated: bool, run: RunFolder, how: str) -> None:
    """Refuse ``--best`` before a run starts: it needs ``--export NAME``, and an evaluated run (``how``
    says which flags evaluate it) or a best step already kept."""
    if best and not export:
        raise AnimeGANError("--best chooses which step --export NAME writes: give --export NAME too")
    if best and not evaluated and not run.best_path.is_file():
        raise AnimeGANError(f"--best exports the best evaluated step, and this run is not evaluated: {how}")
