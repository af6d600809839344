"""Local training from the app: dataset checks, one trainer process at a time, run folders read live.

::

    from animegan.training import get_manager, inspect_dataset, TrainSettings
    print(inspect_dataset("faces", "data/faces").summary())
    manager = get_manager()                      # one per process; thread-safe
    manager.start("faces", "data/faces", "my-faces", TrainSettings(steps=2000, size=64))
    manager.status()                             # TrainingStatus: state, step/total, images/s, ETA, FID
    manager.metrics_long("my-faces")             # [{"step", "value", "series"}, ...] for a plot
    manager.quality_long("my-faces")             # the same for fid, kid, content ... (evaluations)
    manager.stop()                               # SIGTERM: the trainer checkpoints, then exits 0
    manager.resume("my-faces", steps=4000)
    manager.export("my-faces", "my-faces")       # weights/my-faces.safetensors, seen by the Faces tab

The trainer runs as its own process, with exactly the command a user would type
(``python -m train.faces ...`` or ``python -m train.animegan ...``) in a new session, its
output going to ``RUN/log.txt``; the app only reads the run folder (``animegan.runs``), so a
crashing trainer cannot take the app down. Runs live under ``./runs`` (``$ANIMEGAN_RUNS_DIR``).
"""
from __future__ import annotations

import atexit
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .curve import Curve, finite_number, read_curve
from .errors import AnimeGANError
from .export import export_faces, export_style, export_upscaled_faces, is_style_run, is_upscaler_run
from .images import image_files, open_image
from .models.animeganv3 import AnimeGANv3Config
from .names import check_name
from .runs import RunFolder, list_runs, read_metrics
from .weights import weights_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = {"faces": "train.faces", "style": "train.animegan"}  # what the tab starts
# Runs the tab watches, resumes and exports but does not start (the CLI does).
RUN_MODULES = {**KINDS, "upscaler": "train.face_upscaler"}
KIND_LABELS = {"faces": "anime faces", "style": "photo-to-anime style"}
STYLE_SUBFOLDERS = ("real_images", "anime_images")
LOG_NAME = "log.txt"
STOP_TIMEOUT_S = 120.0
MAX_PLOT_POINTS = 400  # per series: a long run's curve stays cheap to send every few seconds
LIVE_STATES = ("starting", "running", "stopping")
# What the trainers' evaluations log (train.animegan: fid, kid, content and the untouched photos'
# baseline_fid, baseline_kid, content_unrelated; train.faces: fid, kid, fid64, kid64 for a 64 px run and
# fid_pair, kid_pair with an evaluation upscaler; train.face_upscaler: fid, kid of the upscaled generator
# and fid_real of the upscaled held-out faces).
QUALITY_FIGURE = re.compile(r"(baseline_)?(fid|kid)(\d*|_real|_pair)|content(_unrelated)?")
KID_SCALE = 1000  # KID (0.001 to 1) is plotted x1000, beside FID (10 to 400): the usual way to quote it


# ----------------------------------------------------------------------------------------
# Names and folders
# ----------------------------------------------------------------------------------------
def runs_dir() -> Path:
    """Where runs live: ``$ANIMEGAN_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("ANIMEGAN_RUNS_DIR") or "runs").absolute()


TRAINING_ENV = "ANIMEGAN_TRAINING"
TRAINING_OFF_MESSAGE = (
    "Training is switched off in this shared app: it would let every visitor start processes on the "
    "server, read its folders and write its weights. Run the project on your own machine "
    "(`pip install -r requirements.txt`, then `python app.py`), or duplicate this Space and set "
    f"`{TRAINING_ENV}=1` (and `ANIMEGAN_DATA_ROOT` to the folder your datasets are in).")


def training_enabled() -> bool:
    """Whether this app may launch trainers and write weights.

    Yes on a local app; no on a Hugging Face Space (``SPACE_ID`` set), where every visitor would
    share the owner's disk, processes and token, unless the owner sets ``ANIMEGAN_TRAINING=1``.
    ``ANIMEGAN_TRAINING=0`` switches it off anywhere.
    """
    value = os.environ.get(TRAINING_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return not os.environ.get("SPACE_ID")


def require_training_enabled() -> None:
    """AnimeGANError with the reason when this app may not train (see ``training_enabled``)."""
    if not training_enabled():
        raise AnimeGANError(TRAINING_OFF_MESSAGE)


def data_root() -> Path | None:
    """``$ANIMEGAN_DATA_ROOT`` when set: the folder that every dataset named in the app must lie in.

    Unset (the default, a local app) any folder may be used. A shared deployment sets it, so a
    visitor cannot point the dataset check or a trainer at the rest of the server's disk.
    """
    text = os.environ.get("ANIMEGAN_DATA_ROOT", "").strip()
    return Path(text).expanduser().absolute() if text else None


def _inside(path: Path, root: Path) -> bool:
    resolved, base = path.resolve(), root.resolve()
    return resolved == base or base in resolved.parents


def run_path(name: Any, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of run ``name`` under the runs folder; never a path outside it."""
    base = Path(root).absolute() if root else runs_dir()
    path = (base / check_name(name)).resolve()
    if path.parent != base.resolve():  # a symlink pointing elsewhere is refused too
        raise AnimeGANError(f"run {name!r} is outside the runs folder {base}")
    return path


# ----------------------------------------------------------------------------------------
# Dataset check
# ----------------------------------------------------------------------------------------
@dataclass
class FolderReport:
    """What one image folder holds: readable count, sizes, unreadable files."""

    label: str
    path: Path
    count: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)  # readable images, (width, height)
    bad: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)

    @property
    def readable(self) -> int:
        return len(self.sizes)

    def size_range(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """(smallest, median, largest) image by pixel count, as (width, height)."""
        if not self.sizes:
            return None
        by_area = sorted(self.sizes, key=lambda s: (s[0] * s[1], s))
        return by_area[0], by_area[(len(by_area) - 1) // 2], by_area[-1]

    def summary(self) -> str:
        text = f"{self.label} ({self.path}): {self.readable} readable of {self.count} image files"
        sizes = self.size_range()
        if sizes:
            text += "; sizes min {} · median {} · max {}".format(*(f"{w}x{h}" for w, h in sizes))
            sides = [min(s) for s in self.sizes]
            text += f" (median short side {int(statistics.median(sides))} px)"
        if self.bad:
            shown = ", ".join(f"{p.name} ({reason})" for p, reason in self.bad[:5])
            text += f"; {len(self.bad)} unreadable: {shown}" + (" ..." if len(self.bad) > 5 else "")
        return text


@dataclass
class DatasetReport:
    """The result of ``inspect_dataset``: one FolderReport per folder, and what blocks training."""

    kind: str
    root: Path
    folders: list[FolderReport]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad(self) -> list[tuple[Path, str]]:
        return [b for f in self.folders for b in f.bad]

    def summary(self) -> str:
        lines = [f.summary() for f in self.folders]
        lines += [f"problem: {p}" for p in self.problems]
        if self.ok:
            lines.append("ready to train" + (" (unreadable files will be skipped)" if self.bad else ""))
        return "\n".join(lines)


def _probe(path: Path) -> tuple[tuple[int, int] | None, str]:
    try:
        image = open_image(path)  # decodes fully: a truncated file fails here, not at step 5000
        return image.size, ""
    except AnimeGANError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        return None, reason[len(prefix):] if reason.startswith(prefix) else reason
    except Exception as exc:  # a decoder bug is a bad file to the user, not an app crash
        return None, f"{type(exc).__name__}: {exc}"[:160]


def dataset_folders(kind: str, root: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(label, folder) pairs a trainer of ``kind`` reads from the dataset folder ``root``."""
    kind = check_kind(kind)
    text = str(root or "").strip()
    if not text:
        raise AnimeGANError("give the dataset folder" + (" (it must hold real_images/ and anime_images/)"
                                                          if kind == "style" else ""))
    base = user_folder(text)
    root = data_root()
    if kind == "faces":
        return [("faces", base)]
    missing = [name for name in STYLE_SUBFOLDERS if not (base / name).is_dir()]
    if missing:
        raise AnimeGANError(f"{base}: missing {' and '.join(m + '/' for m in missing)}; a style dataset folder holds "
                            "real_images/ (photos) and anime_images/ (pictures of one anime style)")
    folders = [("photos", base / "real_images"), ("anime", base / "anime_images")]
    for _, folder in folders:  # a subfolder may be a symlink to elsewhere
        if root is not None and not _inside(folder, root):
            raise AnimeGANError(f"{folder}: outside the data folder {root}")
    return folders


def user_folder(text: str) -> Path:
    """A folder named in the app, absolute: inside ``data_root()`` when one is set, existing, a folder."""
    root = data_root()
    given = Path(text).expanduser()
    base = (root / given if root is not None and not given.is_absolute() else given).absolute()
    # Checked before anything else, so the messages below say nothing about paths outside the root.
    if root is not None and not _inside(base, root):
        raise AnimeGANError(f"{text}: outside the data folder {root}")
    if not base.exists():
        raise AnimeGANError(f"{base}: no such folder")
    if not base.is_dir():
        raise AnimeGANError(f"{base}: is a file, not a folder of images")
    return base


def inspect_dataset(kind: str, root: str | os.PathLike[str], workers: int = 4,
                    progress: Callable[[int, int], None] | None = None) -> DatasetReport:
    """Open every image the trainer would read: counts, sizes (min/median/max), unreadable files.

    Raises AnimeGANError when a folder is missing; a folder with too few readable images is
    reported in ``problems`` (``ok`` is then False).
    """
    folders = dataset_folders(kind, root)
    reports, problems = [], []
    listed = [(label, path, image_files([path])) for label, path in folders]
    total = sum(len(files) for _, _, files in listed) or 1
    done = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for label, path, files in listed:
            report = FolderReport(label, path, count=len(files))
            for f, (size, reason) in zip(files, pool.map(_probe, files)):
                if size is None:
                    report.bad.append((f, reason))
                else:
                    report.sizes.append(size)
                done += 1
                if progress is not None and (done % 64 == 0 or done == total):
                    progress(done, total)
            reports.append(report)
            need = 2 if kind == "style" else 1
            if report.readable < need:
                problems.append(f"{path}: {report.readable} readable images, need at least {need}")
    base = folders[0][1] if kind == "faces" else folders[0][1].parent
    return DatasetReport(kind, base, reports, problems)


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise AnimeGANError(f"unknown training kind {kind!r}: choose 'faces' or 'style'")
    return str(kind)


# ----------------------------------------------------------------------------------------
# Settings and status
# ----------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    """The few settings the app exposes; None leaves the trainer's default."""

    steps: int = 2000
    size: int | None = None
    batch: int | None = None
    preset: str | None = None  # style: scenery | portrait
    recipe: str | None = None  # style: v2 | v3
    width: float | None = None  # style: the generator's channel width (the shipped styles' CPU recipe: 0.5)
    sample_every: int | None = None  # None: about 20 grids over the run
    checkpoint_every: int | None = None  # None: about 10 checkpoints over the run
    log_every: int | None = None  # None: about 200 points over the run
    fid_every: int | None = None  # faces only; needs the FID Inception weights
    eval_every: int | None = None  # style only: quality on held-out photos every N steps
    eval_photos: str | None = None  # style only: the held-out photos folder (never trained on)
    device: str | None = None

    def flags(self, kind: str) -> list[str]:
        """The trainer's command-line flags for these settings."""
        steps = _positive(self.steps, "steps")
        auto = {"sample_every": _clamp(steps // 20, 10, 500), "checkpoint_every": _clamp(steps // 10, 50, 1000),
                "log_every": _clamp(steps // 200, 1, 10)}
        out = ["--steps", str(steps)]
        for name in ("size", "batch"):
            value = getattr(self, name)
            if value is not None:
                out += [f"--{name}", str(_positive(value, name))]
        for name, default in auto.items():
            value = getattr(self, name)
            out += [f"--{name.replace('_', '-')}", str(default if value is None else _positive(value, name))]
        if kind == "style":
            if self.preset:
                out += ["--preset", _choice(self.preset, ("scenery", "portrait"), "preset")]
            if self.recipe:
                out += ["--recipe", _choice(self.recipe, ("v2", "v3"), "recipe")]
            if self.width is not None:
                out += ["--config", json.dumps({"generator": generator_width(self.recipe or "v2", self.width)})]
            if self.eval_every:
                if not str(self.eval_photos or "").strip():
                    raise AnimeGANError("give the held-out photos folder to evaluate on (photos the run never "
                                        "trains on; python -m train.split_folder makes one)")
                out += ["--eval-every", str(_positive(self.eval_every, "evaluate every")),
                        "--eval-photos", str(self.eval_photos).strip()]
        elif self.fid_every:
            out += ["--fid-every", str(_positive(self.fid_every, "FID every"))]
        if self.device:
            out += ["--device", str(self.device)]
        return out


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise AnimeGANError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1 or number != float(value):
        raise AnimeGANError(f"{name} must be a whole number of at least 1, not {value!r}")
    return number


def generator_width(recipe: str, fraction: Any) -> dict[str, Any]:
    """The generator config of a style run whose channels are ``fraction`` of the published network's.

    v2 takes the fraction itself; v3's width is a channel count (its published network's is 32).
    """
    try:
        number = float(fraction)
    except (TypeError, ValueError):
        raise AnimeGANError(f"generator width must be a number, not {fraction!r}") from None
    if not 0.1 <= number <= 2.0:
        raise AnimeGANError(f"generator width must be from 0.1 to 2 (1 is the published network), not {fraction!r}")
    if recipe == "v3":
        return {"width": max(4, round(AnimeGANv3Config().width * number))}
    return {"width": number}


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise AnimeGANError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass
class TrainingStatus:
    """What the app shows about one run."""

    name: str | None
    kind: str | None = None
    state: str = "idle"  # idle | starting | running | stopping | stopped | finished | failed
    step: int = 0
    total: int = 0
    images_per_s: float | None = None
    precision: str = ""  # what the trainer runs in, e.g. "bf16 autocast, channels_last"
    eta_s: float | None = None
    last_fid: float | None = None
    curve: str = ""  # the best evaluation and the hours since (animegan.curve), once the run was evaluated
    sample: Path | None = None
    checkpoint_step: int | None = None
    records: int = 0
    returncode: int | None = None
    pid: int | None = None
    active: bool = False  # launched by this app and not yet exited
    message: str = ""
    log_tail: str = ""

    def summary(self) -> str:
        """One line for a status box."""
        if not self.name:
            return "no run yet: choose a dataset, a name and press Start"
        parts = [f"**{self.name}** ({KIND_LABELS.get(self.kind or '', 'run')}): {self.state}"]
        if self.total:
            parts.append(f"step {self.step}/{self.total}")
        if self.images_per_s:
            parts.append(f"{self.images_per_s:.1f} images/s" + (f" ({self.precision})" if self.precision else ""))
        if self.eta_s is not None and self.state in LIVE_STATES:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        if self.last_fid is not None:
            parts.append(f"last FID {self.last_fid:.2f}")
        if self.checkpoint_step is not None:
            parts.append(f"checkpoint at step {self.checkpoint_step}")
        if self.curve:
            parts.append(self.curve)
        text = " · ".join(parts)
        return f"{text}\n\n{self.message}" if self.message else text


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def run_kind(config: dict[str, Any]) -> str:
    """Which trainer wrote a config.json: "style", "upscaler" (the face upscaler) or "faces"."""
    return "style" if is_style_run(config) else "upscaler" if is_upscaler_run(config) else "faces"


# The figure a run's campaign is judged by: style runs by their style KID, face runs by FID.
CURVE_METRIC = {"style": "kid", "faces": "fid", "upscaler": "fid"}


def run_curve(run: str | os.PathLike[str], metric: str | None = None) -> Curve:
    """A run folder's quality curve against its training hours (``metric`` default: ``CURVE_METRIC``)."""
    folder = RunFolder(run)
    metric = metric or CURVE_METRIC[run_kind(folder.read_config())]
    return read_curve(folder.metrics(), metric)


def log_tail(path: str | os.PathLike[str], lines: int = 15, max_bytes: int = 16384) -> str:
    """The last lines of a log (progress-bar carriage returns count as line ends)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [r for r in re.split(r"[\r\n]+", data) if r.strip()]
    return "\n".join(rows[-lines:])


def _pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _trainer_pid(run: Path) -> int | None:
    """The pid of a live trainer writing ``run`` (started by another app or a terminal), or None."""
    status = RunFolder(run).read_status()
    pid = status.get("pid")
    if status.get("state") != "running" or not _pid_alive(pid):
        return None
    try:  # a reused pid belongs to some other program: its command line does not name the run
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        if "train." not in cmdline and str(run) not in cmdline:
            return None
    except OSError:
        pass
    return int(pid)


def _checkpoint_step(path: Path) -> int | None:
    match = re.match(r"step_(\d+)\.pt$", path.name)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------
# The manager
# ----------------------------------------------------------------------------------------
class TrainingManager:
    """Launches and watches at most one trainer process; every method is safe from several threads."""

    def __init__(self, root: str | os.PathLike[str] | None = None, python: str | None = None) -> None:
        self._root = Path(root).absolute() if root else None
        self.python = python or sys.executable
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._name: str | None = None  # the run launched last (live or not)
        self._kind: str | None = None
        self._stopping = False
        self._log = None
        ref = weakref.ref(self)
        atexit.register(lambda: ref() is not None and ref()._shutdown())  # type: ignore[union-attr]

    @property
    def root(self) -> Path:
        return self._root or runs_dir()

    def path(self, name: Any) -> Path:
        return run_path(name, self.root)

    # -- launching ------------------------------------------------------------------------
    def active(self) -> str | None:
        """The run whose trainer is alive (launched here, or found running in the runs folder)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self._name
        for run in self._run_folders():
            if _trainer_pid(run) is not None:
                return run.name
        return None

    def start(self, kind: str, data: str | os.PathLike[str], name: str,
              settings: TrainSettings | None = None) -> TrainingStatus:
        """Launch a new run; AnimeGANError when one is already training, the name is taken or the data is missing."""
        require_training_enabled()
        kind = check_kind(kind)
        settings = settings or TrainSettings()
        run = self.path(name)
        folders = dataset_folders(kind, data)
        for label, folder in folders:  # a quick listing; the Check button opens every file
            if not image_files([folder]):
                raise AnimeGANError(f"{folder}: no images found (looked for .png, .jpg, .webp ... recursively)")
        root = folders[0][1] if kind == "faces" else folders[0][1].parent
        if kind == "style" and settings.eval_every and str(settings.eval_photos or "").strip():
            held_out = user_folder(str(settings.eval_photos).strip())
            if not image_files([held_out]):
                raise AnimeGANError(f"{held_out}: no images found for the evaluation")
            settings = replace(settings, eval_photos=str(held_out))
        args = ["--data", str(root), *settings.flags(kind)]
        with self._lock:
            self._refuse_if_busy()
            if (run / "config.json").is_file() or any((run / "checkpoints").glob("step_*.pt")):
                raise AnimeGANError(f"run {run.name!r} already exists: resume it, or pick another name")
            self._launch(kind, run, args)
        return self.status(run.name)

    def resume(self, name: str, steps: int | None = None) -> TrainingStatus:
        """Continue a run from its newest checkpoint, optionally up to a new total of steps.

        A run stopped before its first checkpoint starts again from step 0 with its saved config
        (the name stays taken, so this is the only way to train it further).
        """
        require_training_enabled()
        run = self.path(name)
        folder = RunFolder(run)
        kind = run_kind(folder.read_config())
        checkpoints = folder.checkpoints()
        done = (_checkpoint_step(checkpoints[-1]) or 0) if checkpoints else 0
        total = _positive(steps, "steps") if steps is not None else int(folder.read_config().get("steps") or 0)
        if total <= done:
            raise AnimeGANError(f"run {run.name!r} is at step {done}; set steps above {done} to train further")
        args = ["--resume", "--steps", str(total)]
        with self._lock:
            self._refuse_if_busy()
            self._launch(kind, run, args)
        return self.status(run.name)

    def _refuse_if_busy(self) -> None:
        busy = self.active()
        if busy:
            raise AnimeGANError(f"run {busy!r} is already training (one at a time: the GPU is shared); "
                                "stop it first or wait for it to finish")

    def _launch(self, kind: str, run: Path, args: list[str]) -> None:
        run.mkdir(parents=True, exist_ok=True)
        self._close_log()
        log = open(run / LOG_NAME, "ab", buffering=0)
        command = " ".join([RUN_MODULES[kind], "--out", str(run), *args])
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
        env = dict(os.environ)
        # The trainers are modules of this checkout: make them importable whatever the app's cwd.
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TQDM_MININTERVAL", "10")  # a progress bar in a log file: an update now and then
        try:
            proc = subprocess.Popen([self.python, "-m", RUN_MODULES[kind], "--out", str(run), *args],
                                    cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            log.close()
            raise AnimeGANError(f"could not start the trainer: {exc}") from None
        self._proc, self._name, self._kind, self._stopping, self._log = proc, run.name, kind, False, log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- stopping -------------------------------------------------------------------------
    def stop(self, timeout: float = STOP_TIMEOUT_S, wait: bool = True) -> TrainingStatus:
        """Ask the trainer to checkpoint and exit (SIGTERM); SIGKILL if it has not exited after ``timeout``."""
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else None
            name = self._name
            pid = proc.pid if proc is not None else None
            if proc is None:
                name = self.active()
                if name is None:
                    raise AnimeGANError("no training is running")
                pid = _trainer_pid(self.path(name))
                if pid is None:
                    return self.status(name)
            self._stopping = True
        _signal(pid, signal.SIGTERM)
        watchdog = threading.Thread(target=self._reap, args=(proc, pid, timeout), daemon=True)
        watchdog.start()
        if wait:
            watchdog.join()
        return self.status(name)

    def _reap(self, proc: subprocess.Popen | None, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not _pid_alive(pid):
                return
            time.sleep(0.1)
        _signal(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def _shutdown(self) -> None:
        """At app exit: ask a live trainer to checkpoint and stop (it finishes on its own)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)

    # -- reading runs ---------------------------------------------------------------------
    def _run_folders(self) -> list[Path]:
        return [r.path for r in list_runs(self.root)]

    def runs(self) -> list[str]:
        """Past and present run names, newest first (the launched one first even before it has a config)."""
        names = [p.name for p in self._run_folders()]
        with self._lock:
            if self._name and self._name not in names and (self.root / self._name).is_dir():
                names.insert(0, self._name)
        return names

    def current(self) -> str | None:
        """The run to show by default: the live one, else the one launched last, else the newest."""
        with self._lock:
            name = self._name
        active = self.active()
        if active:
            return active
        if name:
            return name
        runs = self.runs()
        return runs[0] if runs else None

    def status(self, name: str | None = None) -> TrainingStatus:
        """Everything the app shows about a run (default: ``current()``). Never raises for a broken run."""
        name = name or self.current()
        if not name:
            return TrainingStatus(None)
        run = self.path(name)
        folder = RunFolder(run)
        status = TrainingStatus(run.name)
        saved = folder.read_status()
        try:
            status.kind = run_kind(folder.read_config())
        except AnimeGANError:
            status.kind = None
        records = read_metrics(folder.metrics_path)
        status.records = len(records)
        status.step = int(saved.get("step") or (records[-1]["step"] if records else 0))
        status.total = int(saved.get("total") or 0)
        status.state = str(saved.get("state") or ("starting" if run.is_dir() else "idle"))
        status.precision = str(saved.get("precision") or "")
        if not run.is_dir():
            status.message = f"no run named {run.name!r} in {self.root}"
        with self._lock:
            mine = run.name == self._name
            proc = self._proc if mine else None
            stopping = self._stopping if mine else False
            if mine and status.kind is None:
                status.kind = self._kind
        if proc is not None:
            rc = proc.poll()
            status.pid, status.returncode = proc.pid, rc
            if rc is None:
                status.active = True
                status.state = "stopping" if stopping else ("running" if saved.get("state") == "running" else "starting")
            elif stopping and rc in (-signal.SIGTERM, -signal.SIGKILL) and status.state in LIVE_STATES:
                status.state = "stopped"  # signalled before it could install its handler, or killed at the timeout
                status.message = "stopped before the trainer could write a checkpoint"
            elif rc != 0 or status.state in LIVE_STATES:
                status.state = "failed"  # a killed trainer leaves "running" behind
            if rc is not None:
                with self._lock:
                    if self._proc is proc:
                        self._close_log()
        elif status.state == "running" and _trainer_pid(run) is None:
            status.state = "failed"  # its process is gone without saying so
            status.message = "the trainer is no longer running (killed, or the machine restarted)"
        elif status.state == "running":
            status.pid = int(saved["pid"])
            status.message = "launched outside this app (or by an earlier start of it)"
        if status.state == "failed":
            status.log_tail = log_tail(run / LOG_NAME)
            error = saved.get("error") or _error_line(status.log_tail)
            rc = f" (exit status {status.returncode})" if status.returncode not in (None, 0) else ""
            status.message = f"the trainer failed{rc}: {error}" if error else f"the trainer failed{rc}"
        else:
            status.log_tail = log_tail(run / LOG_NAME, lines=6)
        if status.step and status.total:
            status.step = min(status.step, status.total)
        _speed(status, records)
        curve = read_curve(records, CURVE_METRIC[status.kind or "faces"])
        status.curve = curve.summary() if curve.best else ""
        samples = folder.samples()
        status.sample = samples[-1] if samples else None
        checkpoints = folder.checkpoints()
        status.checkpoint_step = _checkpoint_step(checkpoints[-1]) if checkpoints else None
        return status

    def metrics_long(self, name: str, prefix: str = "loss_", max_points: int = MAX_PLOT_POINTS) -> list[dict[str, Any]]:
        """Logged figures in long format ``{"step", "value", "series"}`` (series named without ``prefix``)."""
        records = read_metrics(self.path(name) / "metrics.jsonl")
        return metrics_long(records, prefix, max_points)

    def metrics_frame(self, name: str, prefix: str = "loss_", max_points: int = MAX_PLOT_POINTS):
        """``metrics_long`` as a pandas DataFrame with columns step, value, series."""
        import pandas as pd

        return _frame(self.metrics_long(name, prefix, max_points))

    def quality_long(self, name: str, max_points: int = MAX_PLOT_POINTS) -> list[dict[str, Any]]:
        """The evaluations' figures (``quality_long``) in long format ``{"step", "value", "series"}``."""
        return quality_long(read_metrics(self.path(name) / "metrics.jsonl"), max_points)

    def quality_frame(self, name: str, max_points: int = MAX_PLOT_POINTS):
        """``quality_long`` as a pandas DataFrame with columns step, value, series."""
        return _frame(self.quality_long(name, max_points))

    # -- export ---------------------------------------------------------------------------
    def export(self, name: str, weights_name: str, overwrite: bool = False) -> Path:
        """Write the run's generator as ``weights/WEIGHTS_NAME.safetensors`` for the app's tabs: a style or
        face run's best evaluated step when it was evaluated (``checkpoints/best.pt``), else the newest checkpoint."""
        require_training_enabled()
        run = self.path(name)
        weights_name = check_name(weights_name, "weights name")
        kind = run_kind(RunFolder(run).read_config())
        target = weights_dir() / f"{weights_name}.safetensors"
        if target.exists() and not overwrite:
            raise AnimeGANError(f"weights {weights_name!r} already exist in {target.parent}: pick another name")
        if kind == "faces":
            return export_faces(run, weights_name, best=None)
        if kind == "upscaler":  # with the generator the run was evaluated with: one 128 px face model
            return export_upscaled_faces(run, weights_name)
        return export_style(run, weights_name, best=None)  # the best evaluated step when there is one


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    # Typed even when empty: a plot that first sees object columns keeps a categorical axis.
    return frame.astype({"step": "int64", "value": "float64", "series": "str"})


def metrics_long(records: list[dict[str, Any]], prefix: str = "loss_",
                 max_points: int = MAX_PLOT_POINTS) -> list[dict[str, Any]]:
    """Records -> long-format rows for the numeric keys starting with ``prefix``, thinned to ``max_points``."""
    return _long_rows(records, lambda key: (key[len(prefix):] or key, 1.0) if key.startswith(prefix) else None,
                      max_points)


def quality_long(records: list[dict[str, Any]], max_points: int = MAX_PLOT_POINTS) -> list[dict[str, Any]]:
    """Records -> long-format rows of the evaluations' figures (``QUALITY_FIGURE``: fid, kid, content,
    their baselines, fid64 ...), each series named by its key; KID-like ones as "kid x1000", scaled."""
    def pick(key: str) -> tuple[str, float] | None:
        if not QUALITY_FIGURE.fullmatch(key):
            return None
        return (f"{key} x{KID_SCALE}", float(KID_SCALE)) if "kid" in key else (key, 1.0)

    return _long_rows(records, pick, max_points)


def _long_rows(records: list[dict[str, Any]], pick: Callable[[str], tuple[str, float] | None],
               max_points: int) -> list[dict[str, Any]]:
    """Long-format rows of the numeric figures ``pick`` names (key -> (series, scale) or None), thinned."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for key, value in r.items():
            chosen, number = pick(key), finite_number(value)
            if chosen is not None and number is not None:  # NaN/inf would break the plot's scale
                series.setdefault(chosen[0], []).append((int(r["step"]), number * chosen[1]))
    rows = []
    for label, points in series.items():
        stride = max(1, -(-len(points) // max_points))
        kept = points[::stride]
        if kept[-1] is not points[-1]:
            kept.append(points[-1])  # the newest point is always shown
        rows += [{"step": s, "value": v, "series": label} for s, v in kept]
    return rows


def _speed(status: TrainingStatus, records: list[dict[str, Any]]) -> None:
    """images/s, last FID and the ETA from the metrics' steps and times."""
    for r in reversed(records):
        if status.images_per_s is None and isinstance(r.get("images_per_s"), (int, float)):
            status.images_per_s = float(r["images_per_s"])
        if status.last_fid is None and isinstance(r.get("fid"), (int, float)):
            status.last_fid = float(r["fid"])
    timed = [r for r in records if isinstance(r.get("time"), (int, float))][-20:]
    if len(timed) >= 2 and status.total:
        steps = timed[-1]["step"] - timed[0]["step"]
        seconds = timed[-1]["time"] - timed[0]["time"]
        if steps > 0 and seconds > 0:
            status.eta_s = max(0.0, (status.total - status.step) * seconds / steps)


def _error_line(tail: str) -> str:
    """The most telling line of a failed trainer's log: its 'error: ...' or the exception line."""
    lines = tail.splitlines()
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b", line):
            return line.strip()[:300]
    return ""


def _signal(pid: int, sig: int) -> None:
    """Signal the trainer's whole process group (it leads its own session), falling back to the pid."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass


_MANAGER: TrainingManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_manager() -> TrainingManager:
    """The process's one TrainingManager (every browser tab sees the same run)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = TrainingManager()
        return _MANAGER
