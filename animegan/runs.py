"""The run folder: the contract between the trainers, which write it, and the app and CLI, which read it.

Layout::

    RUN/config.json          the full config the run was started with
    RUN/metrics.jsonl        one JSON object per logged step, always with "step" and "time"
    RUN/samples/step_XXXXXXXX.png   fixed-input sample grids
    RUN/checkpoints/step_XXXXXXXX.pt  complete checkpoints (atomic), newest few kept
    RUN/checkpoints/best.pt  the generator of the best evaluated step (a trainer that evaluates)
    RUN/status.json          state (running / stopped / finished / failed), pid, step, total

Checkpoints are plain dicts of tensors and numbers, saved with ``torch.save`` and read back
with ``torch.load(weights_only=True)``: resuming never unpickles arbitrary objects. Any
process may read a folder while its trainer writes it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import AnimeGANError
from .fileio import atomic_path, atomic_write_json

CHECKPOINT_GLOB = "step_*.pt"
BEST_NAME = "best.pt"


class RunFolderInUse(AnimeGANError):
    """A fresh run was pointed at a folder that already holds a run (its files are left alone)."""


class RunFolder:
    """One training run on disk. Safe to read from another process at any time."""

    def __init__(self, path: str | os.PathLike[str], keep_checkpoints: int = 3) -> None:
        self.path = Path(path)
        self.keep_checkpoints = keep_checkpoints
        self.created = False  # set by ``create``: this process runs in the folder, and its status is ours to write

    # -- layout -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    def create(self, config: dict[str, Any], resume: bool = False) -> None:
        """Make the folder. A fresh run refuses a folder that already holds checkpoints.

        A fresh start in a folder whose earlier run never reached a checkpoint drops that run's
        metrics and samples, so its curves and grids do not mix with the new run's.
        """
        if not resume and self.checkpoints():
            raise RunFolderInUse(f"run folder {self.path} already holds a run; pass --resume to continue it")
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        self.discard_partial_files()
        if not resume:
            self.metrics_path.unlink(missing_ok=True)
            self.best_path.unlink(missing_ok=True)  # an abandoned run's best must not be exported as this one's
            for stale in self.samples_dir.glob("step_*.png"):
                stale.unlink(missing_ok=True)
        atomic_write_json(self.config_path, config)
        self.created = True

    def discard_partial_files(self) -> list[Path]:
        """Remove half-written temporaries a killed trainer left behind (``atomic_path``'s ``.NAME.*.part*``).

        Only the trainer that owns the folder calls this, at start, when no other writer can be
        mid-write; without it every ``kill -9`` during a save would leave a checkpoint-sized file.
        """
        removed = []
        for folder in (self.path, self.samples_dir, self.checkpoints_dir):
            if folder.is_dir():
                for leftover in folder.glob(".*.part*"):
                    if leftover.is_file():
                        leftover.unlink(missing_ok=True)
                        removed.append(leftover)
        return removed

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace config.json atomically: a trainer adds what it learns after ``create`` (a warm start's record)."""
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise AnimeGANError(f"{self.path} is not a run folder (no config.json)") from None
        except (OSError, ValueError) as exc:
            raise AnimeGANError(f"{self.config_path}: unreadable config ({exc})") from None

    # -- metrics ------------------------------------------------------------------------
    def log(self, step: int, **values: Any) -> dict[str, Any]:
        """Append one metrics line. Each line is written whole in one call, then flushed."""
        record = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in values.items()}}
        line = json.dumps(record) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
        return record

    def metrics(self) -> list[dict[str, Any]]:
        """Every complete metrics line (a line cut short by a crash is skipped)."""
        return read_metrics(self.metrics_path)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines logged after ``after_step``: a resumed run redoes those steps."""
        kept = [r for r in self.metrics() if r["step"] <= after_step]
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    # -- samples ------------------------------------------------------------------------
    def sample_path(self, step: int) -> Path:
        return self.samples_dir / f"step_{step:08d}.png"

    def save_sample(self, step: int, image: Any) -> Path:
        """Save a PIL image as this step's sample grid, atomically."""
        final = self.sample_path(step)
        with atomic_path(final) as tmp:
            image.save(tmp, format="PNG")
        return final

    def samples(self) -> list[Path]:
        return sorted(self.samples_dir.glob("step_*.png")) if self.samples_dir.is_dir() else []

    # -- checkpoints --------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        return sorted(self.checkpoints_dir.glob(CHECKPOINT_GLOB)) if self.checkpoints_dir.is_dir() else []

    def save_checkpoint(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically as this step's checkpoint, then prune old ones."""
        final = self.checkpoints_dir / f"step_{step:08d}.pt"
        with atomic_path(final) as tmp:
            torch.save({**state, "step": int(step)}, tmp)
        for old in self.checkpoints()[: -self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return final

    def load_latest_checkpoint(self, map_location: str | torch.device = "cpu",
                               set_aside_damaged: bool = False) -> dict[str, Any] | None:
        """The newest checkpoint that loads; a damaged one is reported and skipped.

        With ``set_aside_damaged`` (a resuming trainer) a damaged file is renamed to
        ``step_XXXXXXXX.pt.damaged``: kept for inspection, but never again taken for the newest
        checkpoint, counted against ``keep_checkpoints`` or handed to an export.
        """
        for path in reversed(self.checkpoints()):
            state = _read_state(path, map_location, "checkpoint")
            if state is not None:
                return state
            if set_aside_damaged:
                try:
                    path.replace(path.with_name(path.name + ".damaged"))
                except OSError:
                    pass
        return None

    @property
    def best_path(self) -> Path:
        return self.checkpoints_dir / BEST_NAME

    def save_best(self, step: int, state: dict[str, Any]) -> Path:
        """Keep ``state`` (the generator and its figures) as the best evaluated step, atomically.

        Apart from the step checkpoints, so pruning never removes it: a campaign exports this step.
        """
        with atomic_path(self.best_path) as tmp:
            torch.save({**state, "step": int(step)}, tmp)
        return self.best_path

    def load_best(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The best evaluated step's state, or None when there is none (or it cannot be read: reported)."""
        return _read_state(self.best_path, map_location, "best-step file") if self.best_path.is_file() else None

    # -- status -------------------------------------------------------------------------
    def write_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(self.status_path, {"state": state, "pid": os.getpid(), "time": time.time(), **extra})

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}


def _read_state(path: Path, map_location: str | torch.device, what: str) -> dict[str, Any] | None:
    """A trainer's saved state (tensors and numbers only), or None with a warning when it cannot be read."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"not a {what} of this trainer (no step)")
        return state
    except Exception as exc:  # a damaged file must not stop a resume or an export
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"warning: skipping unreadable {what} {path.name}: {reason}", flush=True)
        return None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a metrics.jsonl, skipping a partial or damaged line."""
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # still being written
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "step" in record:
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def list_runs(root: str | os.PathLike[str]) -> Iterator[RunFolder]:
    """Run folders (those with a config.json) directly under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return iter(())
    runs = [RunFolder(p) for p in root.iterdir() if (p / "config.json").is_file()]
    return iter(sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True))


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
