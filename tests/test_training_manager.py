"""TrainingManager with real trainer processes on tiny data made here: start, watch, stop, resume, export, crash."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.training import TrainingManager, TrainSettings, check_name, inspect_dataset, run_path

TIMEOUT_S = 90


def _pngs(folder: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")
    return folder


def _corrupt(path: Path) -> Path:
    good = path.with_suffix(".tmp.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    path.write_bytes(good.read_bytes()[:40])  # a truncated PNG: the header reads, the pixels do not
    good.unlink()
    return path


def _wait(what: str, condition: Callable[[], object], timeout: float = TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _settings(steps: int) -> TrainSettings:
    return TrainSettings(steps=steps, size=16, batch=4, sample_every=5, checkpoint_every=1000, log_every=2)


@pytest.fixture
def manager(tmp_path: Path) -> TrainingManager:
    m = TrainingManager(tmp_path / "runs")
    yield m
    if m.active():
        m.stop(timeout=20)


def test_run_names_stay_inside_the_runs_folder(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert run_path("faces-64_v1.2", root) == (root / "faces-64_v1.2").resolve()
    for bad in ["../x", "/abs", "", "   ", "a/b", ".hidden", "..", "x" * 65, "a\\b", "name with space"]:
        with pytest.raises(AnimeGANError):
            run_path(bad, root)
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)  # a link inside the folder pointing out of it
    with pytest.raises(AnimeGANError, match="outside the runs folder"):
        run_path("escape", root)
    with pytest.raises(AnimeGANError, match="weights name"):
        check_name("../w", "weights name")
    for reserved in ("faces.d", "my-style.sliders"):  # the files shipped beside a model NAME
        with pytest.raises(AnimeGANError, match="kept for the files shipped beside a model"):
            check_name(reserved, "weights name")
    assert check_name("v1.d2", "weights name") == "v1.d2"


def test_dataset_check_counts_sizes_and_finds_bad_files(tmp_path: Path) -> None:
    faces = _pngs(tmp_path / "faces", 5, size=24)
    _corrupt(faces / "broken.png")
    (faces / "notes.jpg").write_text("not a picture")
    report = inspect_dataset("faces", faces)
    assert report.ok
    (folder,) = report.folders
    assert folder.count == 7 and folder.readable == 5
    assert sorted(p.name for p, _ in report.bad) == ["broken.png", "notes.jpg"]
    assert folder.size_range() == ((24, 24), (25, 24), (26, 24))
    assert "2 unreadable" in report.summary() and "broken.png" in report.summary()

    style = tmp_path / "style"
    _pngs(style / "real_images", 3)
    with pytest.raises(AnimeGANError, match="anime_images"):
        inspect_dataset("style", style)
    _corrupt(_pngs(style / "anime_images", 1) / "bad.png")
    report = inspect_dataset("style", style)
    assert [f.readable for f in report.folders] == [3, 1]
    assert not report.ok and "need at least 2" in report.problems[0]
    with pytest.raises(AnimeGANError, match="no such folder"):
        inspect_dataset("faces", tmp_path / "missing")


def test_start_watch_stop_resume_export(manager: TrainingManager, tmp_path: Path, weights_dir: Path) -> None:
    from animegan.weights import project_weights
    from animegan.runs import RunFolder

    data = _pngs(tmp_path / "faces", 24)
    # Two browser tabs pressing Start at once: exactly one run starts.
    outcomes: list[object] = []

    def press(name: str) -> None:
        try:
            outcomes.append(manager.start("faces", data, name, _settings(100_000)))
        except AnimeGANError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=press, args=(n,)) for n in ("tab-a", "tab-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes if isinstance(o, AnimeGANError)]
    assert len(errors) == 1 and "already training" in str(errors[0])
    name = manager.active()
    assert name in ("tab-a", "tab-b")

    rows = _wait("loss points", lambda: len(manager.metrics_long(name)) >= 4 and manager.metrics_long(name))
    assert {r["series"] for r in rows} >= {"G", "D"} and all(np.isfinite(r["value"]) for r in rows)
    status = _wait("a sample grid", lambda: (s := manager.status(name)).sample is not None and s)
    assert status.state == "running" and status.active and status.total == 100_000
    assert status.images_per_s and status.images_per_s > 0 and status.eta_s and status.eta_s > 0
    assert status.precision.endswith("channels_last") and f"images/s ({status.precision})" in status.summary()
    assert Image.open(status.sample).size[0] > 16
    with pytest.raises(AnimeGANError, match="already training"):
        manager.start("faces", data, "third", _settings(10))
    with pytest.raises(AnimeGANError, match="already training"):
        TrainingManager(manager.root).start("faces", data, "other-app", _settings(10))  # a second app sees it too

    stopped = manager.stop(timeout=60)
    assert stopped.state == "stopped" and stopped.returncode == 0 and not stopped.active
    assert manager.active() is None
    assert stopped.checkpoint_step == stopped.step > 0
    assert "(exit status" not in stopped.summary()

    with pytest.raises(AnimeGANError, match="already exists"):
        manager.start("faces", data, name, _settings(10))
    with pytest.raises(AnimeGANError, match="set steps above"):
        manager.resume(name, steps=stopped.step)
    manager.resume(name)  # up to the run's own total
    _wait("steps after the resume", lambda: manager.status(name).step > stopped.step + 2)
    steps = [r["step"] for r in RunFolder(manager.path(name)).metrics()]
    assert steps == sorted(set(steps)) and steps[-1] > stopped.step  # resumed lines continue, none repeated
    assert f"resuming from step {stopped.step}" in (manager.path(name) / "log.txt").read_text()

    # A trainer killed outright is reported as failed, here and by a fresh app (no process handle).
    os.kill(manager.status(name).pid, signal.SIGKILL)
    failed = _wait("the kill to be noticed", lambda: (s := manager.status(name)).state == "failed" and s)
    assert failed.returncode == -signal.SIGKILL and "exit status" in failed.summary() and not failed.active
    assert TrainingManager(manager.root).status(name).state == "failed"
    assert manager.active() is None and TrainingManager(manager.root).active() is None

    path = manager.export(name, "my-faces")
    assert path == weights_dir / "my-faces.safetensors"
    meta = project_weights("faces")["my-faces"]
    assert meta["steps"] == stopped.step  # the newest checkpoint: the one the graceful stop wrote
    with pytest.raises(AnimeGANError, match="already exist"):
        manager.export(name, "my-faces")
    from animegan.faces import FaceGenerator

    assert FaceGenerator("my-faces", device="cpu").face(3).size == (16, 16)


def test_style_run_and_export(manager: TrainingManager, tmp_path: Path, weights_dir: Path) -> None:
    from animegan.runs import RunFolder
    from animegan.weights import project_weights

    data = tmp_path / "style"
    _pngs(data / "real_images", 6, size=40, seed=1)
    _pngs(data / "anime_images", 6, size=40, seed=2)
    held_out = _pngs(tmp_path / "held_out", 3, size=40, seed=3)
    settings = TrainSettings(steps=4, size=32, batch=2, preset="portrait", recipe="v2", width=0.5, sample_every=2,
                             checkpoint_every=2, log_every=2, eval_every=1, eval_photos=str(held_out))
    manager.start("style", data, "style-1", settings)
    done = _wait("the style run to finish", lambda: (s := manager.status("style-1")).state == "finished" and s)
    assert done.kind == "style" and done.step == 4 and done.sample is not None
    assert manager.metrics_long("style-1") and manager.runs() == ["style-1"]
    kids = {r["step"]: r["kid"] for r in RunFolder(manager.path("style-1")).metrics() if "kid" in r}
    assert sorted(kids) == [1, 2, 3, 4]
    manager.export("style-1", "my-style")  # an evaluated run gives its best step, not its newest
    meta = project_weights("style")["my-style"]
    assert meta["preset"] == "portrait" and meta["steps"] == min(kids, key=kids.get)
    assert meta["config"]["width"] == 0.5  # the tab's half-width generator is what trained and shipped
    assert meta["metrics"]["kid"] == min(kids.values())


def test_a_run_stopped_before_its_first_checkpoint_can_be_resumed(manager: TrainingManager, tmp_path: Path) -> None:
    from animegan.runs import RunFolder

    data = _pngs(tmp_path / "faces", 8)
    manager.start("faces", data, "early", _settings(4))
    _wait("the run to finish", lambda: manager.status("early").state == "finished")
    run = RunFolder(manager.path("early"))
    for ckpt in run.checkpoints():  # as if it had been killed before writing one
        ckpt.unlink()
    with pytest.raises(AnimeGANError, match="already exists"):
        manager.start("faces", data, "early", _settings(4))
    manager.resume("early", steps=6)
    done = _wait("the resumed run to finish", lambda: (s := manager.status("early")).state == "finished" and s)
    assert done.step == 6 and [r["step"] for r in run.metrics()] == [2, 4, 6]
    assert [p.name for p in run.checkpoints()] == ["step_00000006.pt"]


def test_trainer_crashes_are_reported_not_raised(manager: TrainingManager, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        _corrupt(bad / f"b{i}.png")
    manager.start("faces", bad, "bad-data", _settings(50))
    failed = _wait("the trainer to fail", lambda: (s := manager.status("bad-data")).state == "failed" and s)
    assert failed.returncode == 2 and not failed.active
    assert "could be read" in failed.message and "could be read" in failed.log_tail
    assert manager.active() is None



def test_a_past_run_reopens_with_its_curves_and_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Picking a finished run in the tab's list shows its status, loss curves and newest sample grid."""
    import animegan.training as training
    from animegan.ui import training as tab
    from train.faces import FaceTrainConfig, train

    monkeypatch.setattr(training, "_MANAGER", TrainingManager(tmp_path / "runs"))
    data = _pngs(tmp_path / "faces", 6)
    cfg = FaceTrainConfig(data=str(data), arch="dcgan", image_size=16, latent_dim=8, g_width=8, d_width=8,
                          batch_size=2, steps=6, log_every=2, sample_every=3, checkpoint_every=3, sample_count=4)
    assert train(cfg, tmp_path / "runs" / "old-run", device="cpu", verbose=False) == 0
    assert "old-run" in [value for _, value in tab._run_choices()]
    status, plot, quality, sample, log, _, seen = tab.refresh("old-run", {})
    assert "old-run" in status and "finished" in status
    assert sorted(set(plot["series"])) == ["D", "G"] and sorted(set(plot["step"])) == [2, 4, 6]
    assert Image.open(sample).size[0] >= tab.SAMPLE_MIN_SIDE  # the step-6 grid, enlarged for the page
    assert quality["visible"] is False  # no evaluation in this run: no Quality plot
    # The next tick with nothing new skips the plot and the image instead of resending them.
    _, plot_again, quality_again, sample_again, *_ = tab.refresh("old-run", seen)
    assert plot_again is not plot and sample_again is not sample
    assert not hasattr(plot_again, "columns") and set(sample_again) == {"__type__"}
    assert set(quality_again) == {"__type__"}  # gr.skip(): nothing resent


def test_quality_figures_are_shaped_for_their_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluations' figures of both trainers become the Quality plot's rows; losses stay in the other."""
    import animegan.training as training
    from animegan.runs import RunFolder
    from animegan.ui import training as tab

    manager = TrainingManager(tmp_path / "runs")
    monkeypatch.setattr(training, "_MANAGER", manager)
    run = RunFolder(manager.path("evaluated"))
    run.create({"trainer": "animegan", "recipe": "v2", "steps": 4})
    style = dict(fid=300.0, kid=0.5, content=40.0, baseline_fid=380.0, baseline_kid=0.75, content_unrelated=26.0)
    run.log(1, loss_g=2.0, images_per_s=3.0)
    run.log(2, loss_g=1.5, images_per_s=3.0, **style)
    run.log(3, loss_g=1.2, images_per_s=3.0)
    run.log(4, loss_g=1.0, **{**style, "fid": 250.0, "content": 38.0})
    run.log(4, fid64=20.0, kid64=0.01, fid_pair=30.0, kid_pair=0.02, kid_std=0.002,
            fid_samples=1000)  # the face trainer's names, and others
    rows = manager.quality_long("evaluated")
    got = {(r["series"], r["step"]): r["value"] for r in rows}
    assert got == {("fid", 2): 300.0, ("fid", 4): 250.0, ("kid x1000", 2): 500.0, ("kid x1000", 4): 500.0,
                   ("content", 2): 40.0, ("content", 4): 38.0, ("baseline_fid", 2): 380.0, ("baseline_fid", 4): 380.0,
                   ("baseline_kid x1000", 2): 750.0, ("baseline_kid x1000", 4): 750.0,
                   ("content_unrelated", 2): 26.0, ("content_unrelated", 4): 26.0,
                   ("fid64", 4): 20.0, ("kid64 x1000", 4): 10.0, ("fid_pair", 4): 30.0, ("kid_pair x1000", 4): 20.0}
    assert {r["series"] for r in manager.metrics_long("evaluated")} == {"g"}  # the loss plot is unchanged
    frame = manager.quality_frame("evaluated")
    assert list(frame.columns) == ["step", "value", "series"] and len(frame) == len(rows)
    assert manager.status("evaluated").last_fid == 250.0
    # The style KID curve's best step, in the status line (the records hold no train_hours: their times count)
    status = manager.status("evaluated")
    assert status.curve.startswith("best kid 0.5 at step 2 (0.00 h)") and status.curve in status.summary()

    _, plot, quality, *_, seen = tab.refresh("evaluated", {})
    assert quality["visible"] is True and quality["value"].equals(frame)
    assert sorted(set(plot["series"])) == ["g"]
    run.log(5, loss_g=0.9)  # a loss line: the loss plot is redrawn, the Quality plot is not
    _, plot, quality, *_, seen = tab.refresh("evaluated", seen)
    assert hasattr(plot, "columns") and set(quality) == {"__type__"}
    run.log(6, loss_g=0.8, **style)  # a new evaluation: redrawn
    _, _, quality, *_ = tab.refresh("evaluated", seen)
    assert quality["visible"] is True and quality["value"]["step"].max() == 6


def test_style_settings_pass_the_generator_width_in_each_recipe_s_terms() -> None:
    from animegan.models import make_config

    for recipe, arch in (("v2", "animeganv2"), ("v3", "animeganv3")):
        flags = TrainSettings(steps=10, recipe=recipe, width=0.5).flags("style")
        generator = json.loads(flags[flags.index("--config") + 1])["generator"]
        full = make_config(arch, {}).width
        assert make_config(arch, generator).width == (0.5 if recipe == "v2" else full // 2)
    assert "--config" not in TrainSettings(steps=10, width=0.5).flags("faces")
    assert "--config" not in TrainSettings(steps=10).flags("style")  # none given: the trainer's default
    for bad in (0, 5, "wide"):
        with pytest.raises(AnimeGANError, match="generator width"):
            TrainSettings(steps=10, width=bad).flags("style")


def test_style_settings_pass_the_evaluation_flags(tmp_path: Path) -> None:
    settings = TrainSettings(steps=100, eval_every=20, eval_photos=str(tmp_path))
    flags = settings.flags("style")
    assert flags[flags.index("--eval-every") + 1] == "20" and flags[flags.index("--eval-photos") + 1] == str(tmp_path)
    assert "--eval-every" not in settings.flags("faces")
    with pytest.raises(AnimeGANError, match="held-out photos folder"):
        TrainSettings(steps=100, eval_every=20).flags("style")
    # The app checks the folder before launching (and keeps it inside ANIMEGAN_DATA_ROOT like the data).
    data = tmp_path / "style"
    _pngs(data / "real_images", 3)
    _pngs(data / "anime_images", 3)
    manager = TrainingManager(tmp_path / "runs")
    with pytest.raises(AnimeGANError, match="no such folder"):
        manager.start("style", data, "x", TrainSettings(steps=4, eval_every=2, eval_photos=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnimeGANError, match="no images found for the evaluation"):
        manager.start("style", data, "x", TrainSettings(steps=4, eval_every=2, eval_photos=str(tmp_path / "empty")))
    assert manager.active() is None and not manager.runs()
