"""The face trainer: a few steps on images made here, kill and resume, SIGTERM, DDP, export, FID."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan.runs import RunFolder
from animegan.models.dcgan import DCGANGenerator
from train.faces import FaceTrainConfig, main

REPO = Path(__file__).resolve().parents[1]
TINY = {"g_width": 8, "d_width": 8, "image_size": 32, "batch_size": 8, "sample_count": 4, "log_every": 2,
        "sample_every": 4, "checkpoint_every": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 random-ish 64x64 faces-like PNGs in nested folders, plus one unreadable file."""
    root = tmp_path_factory.mktemp("faces_data")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    for i in range(32):
        cx, cy, r = rng.uniform(24, 40), rng.uniform(24, 40), rng.uniform(12, 22)
        blob = (((x - cx) ** 2 + (y - cy) ** 2) < r * r)[..., None]
        img = np.where(blob, rng.uniform(150, 255, 3), rng.uniform(0, 120, 3)) + rng.normal(0, 8, (64, 64, 3))
        folder = root / f"part{i % 3}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"face{i:02d}.png")
    (root / "part0" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _args(data: Path, out: Path, config: Path, steps: int, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--steps", str(steps), "--config", str(config), "--quiet", *extra]


def _final_state(run: Path) -> dict:
    ckpt = RunFolder(run).load_latest_checkpoint()
    assert ckpt is not None
    return ckpt


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("G", "D", "G_ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    for key, value in a["opt_G"]["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["opt_G"]["state"][0][key]))


@pytest.fixture(scope="module")
def straight(data: Path, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 6-step run of the improved variant."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert main(_args(data, out, tiny_config, 6)) == 0
    return out


def test_run_folder_contents(straight: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunFolder(straight)
    config = run.read_config()
    assert config["arch"] == "dcgan_improved" and config["loss"] == "hinge" and config["ema"] is True
    records = run.metrics()
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        for key in ("time", "loss_G", "loss_D", "d_real", "d_fake", "images_per_s"):
            assert np.isfinite(r[key])
        assert 0 <= r["d_real"] <= 1 and r["images_per_s"] > 0
    assert [p.name for p in run.samples()] == ["step_00000004.png", "step_00000006.png"]
    assert Image.open(run.samples()[0]).size == (2 * 32 + 3 * 2,) * 2  # 4 fixed latents, 2x2
    assert [p.name for p in run.checkpoints()] == ["step_00000003.pt", "step_00000006.pt"]
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 6 and status["images"] == 32 and status["skipped"] == 1


def test_resume_equals_uninterrupted(straight: Path, data: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "halves"
    assert main(_args(data, out, tiny_config, 3)) == 0
    before = (out / "status.json").read_text()
    assert main(_args(data, out, tiny_config, 3)) == 2  # a fresh run refuses a folder with checkpoints
    assert (out / "status.json").read_text() == before  # and leaves that run's status as it was
    # A resumed run keeps its config: naming other values is refused, naming the same ones is fine
    assert main(["--out", str(out), "--steps", "6", "--resume", "--quiet", "--batch", "4"]) == 2
    assert main(_args(data, out, tiny_config, 6, "--resume")) == 0
    _assert_same_weights(_final_state(straight), _final_state(out))
    assert [r["step"] for r in RunFolder(out).metrics()] == [2, 3, 4, 6]  # 3: the first half's last step
    # The training hours carry across the resume: the second half's count goes on from the first's
    hours = [r["train_hours"] for r in RunFolder(out).metrics()]
    assert hours[0] > 0 and hours == sorted(hours)
    assert RunFolder(out).load_latest_checkpoint()["trained_s"] >= hours[-1] * 3600


def test_a_resume_may_change_how_often_the_run_reports_not_what_it_computes(straight: Path, data: Path,
                                                                            tiny_config: Path, tmp_path: Path) -> None:
    """Log, sample, checkpoint and FID intervals may change on --resume (a long campaign measures less
    often); the weights are still those of the uninterrupted run, and unnamed settings stay the run's."""
    out = tmp_path / "run"
    assert main(_args(data, out, tiny_config, 3)) == 0
    assert main(["--out", str(out), "--steps", "6", "--resume", "--quiet", "--log-every", "1",
                 "--sample-every", "5", "--checkpoint-every", "5"]) == 0
    _assert_same_weights(_final_state(straight), _final_state(out))
    config = RunFolder(out).read_config()
    assert (config["log_every"], config["sample_every"], config["checkpoint_every"]) == (1, 5, 5)
    assert config["batch_size"] == TINY["batch_size"] and config["g_width"] == TINY["g_width"]  # kept, not defaults
    assert [r["step"] for r in RunFolder(out).metrics()] == [2, 3, 4, 5, 6]
    assert [p.name for p in RunFolder(out).checkpoints()][-2:] == ["step_00000005.pt", "step_00000006.pt"]
    assert main(["--out", str(out), "--steps", "7", "--resume", "--quiet", "--lr", "0.001"]) == 2  # arithmetic: no


def test_fresh_start_over_a_run_that_never_checkpointed(data: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert main(_args(data, out, tiny_config, 2)) == 0
    for ckpt in RunFolder(out).checkpoints():  # as if it had been killed before its first checkpoint
        ckpt.unlink()
    (out / "samples" / "step_00000099.png").write_bytes(b"stale")
    assert main(_args(data, out, tiny_config, 4)) == 0
    run = RunFolder(out)
    assert [r["step"] for r in run.metrics()] == [2, 4]  # not [2, 2, 4]: the old curve is not mixed in
    assert [p.name for p in run.samples()] == ["step_00000004.png"]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the trainer")


def _spawn(args: list[str]) -> subprocess.Popen:
    # The same thread count as this process: CPU kernels may round differently with another.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "train.faces", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_matches_uninterrupted(straight: Path, data: Path, tiny_config: Path,
                                                   tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = _spawn(_args(data, killed, tiny_config, 10_000))
    run = RunFolder(killed)
    _wait_for(lambda: bool(run.checkpoints()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    step = int(_final_state(killed)["step"])
    target = max(6, step + 2)
    assert main(["--out", str(killed), "--steps", str(target), "--resume", "--quiet"]) == 0
    reference = straight
    if target != 6:  # the trainer got further than usual before the kill
        reference = tmp_path / "reference"
        assert main(_args(data, reference, tiny_config, target)) == 0
    _assert_same_weights(_final_state(reference), _final_state(killed))
    steps = [r["step"] for r in run.metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == target  # no step logged twice


def test_sigterm_checkpoints_and_exits_zero(data: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "term"
    run = RunFolder(out)

    def send_when_running() -> None:
        end = time.time() + 60
        while not run.metrics() and time.time() < end:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_when_running, daemon=True).start()
    before = signal.getsignal(signal.SIGTERM)
    assert main(_args(data, out, tiny_config, 10_000, "--checkpoint-every", "1000")) == 0
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer put the handler back
    status = run.read_status()
    assert status["state"] == "stopped"
    assert int(_final_state(out)["step"]) == status["step"] >= 2


def test_ddp_two_processes_gloo(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    config = tmp_path / "warmup.json"  # two steps of D alone, then both: DDP must take a G left out of a step
    config.write_text(json.dumps({**TINY, "d_warmup": 2}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun picks a free port itself (a port chosen here first could be taken meanwhile).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.faces", *_args(data, out, config, 4), "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = RunFolder(out)
    assert run.read_status()["state"] == "finished"
    assert [r["step"] for r in run.metrics()] == [2, 4]
    ckpt = _final_state(out)
    assert ckpt["step"] == 4 and not any(k.startswith("module.") for k in ckpt["G"])  # unwrapped from DDP


def test_seed_dcgan_fid_export_and_faces_cli(data: Path, tiny_config: Path, tmp_path: Path, weights_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The seeds' variant with FID during training; export; the app's listing and the CLIs use it."""
    from animegan.cli import main as cli
    from animegan.faces import FaceGenerator
    from animegan.weights import load_weights, project_weights

    out = tmp_path / "seed"
    assert main(_args(data, out, tiny_config, 3, "--arch", "dcgan", "--fid-every", "3", "--fid-samples", "2",
                      "--fid-reference", "3", "--export", "tinyfaces")) == 0
    config = RunFolder(out).read_config()
    assert config["loss"] == "bce" and config["upsample"] == "transposed" and config["ema"] is False
    fid_records = [r for r in RunFolder(out).metrics() if "fid" in r]
    assert fid_records and fid_records[-1]["step"] == 3 and fid_records[-1]["fid"] > 0
    # The data are 64 px and the run 32 px: also measured against the real faces shrunk to 32 px
    assert fid_records[-1]["fid32"] > 0 and fid_records[-1]["fid32"] != fid_records[-1]["fid"]
    assert "kid" in fid_records[-1] and "kid32" in fid_records[-1]

    assert "tinyfaces" in project_weights("faces")
    loaded = load_weights("tinyfaces")
    meta = loaded.metadata
    assert meta["kind"] == "faces" and meta["architecture"] == "dcgan" and meta["steps"] == 3
    assert "non-commercial" in meta["licence"] and meta["metrics"]["fid"] == fid_records[-1]["fid"]
    sliders_file = weights_dir / "tinyfaces.sliders.safetensors"
    assert sliders_file.is_file()
    from animegan.faces import load_sliders
    from animegan.export import export_faces as export

    # Re-exported from another run under the same name: the sliders are those of the new weights
    other = tmp_path / "other"
    assert main(_args(data, other, tiny_config, 2, "--seed", "5")) == 0
    first = load_sliders(sliders_file).directions
    export(other, "tinyfaces", weights_dir=weights_dir)
    assert not torch.allclose(load_sliders(sliders_file).directions, first)

    faces_dir = tmp_path / "faces"
    assert cli(["faces", "--weights", "tinyfaces", "--count", "2", "--out", str(faces_dir)]) == 0
    written = np.asarray(Image.open(faces_dir / "seed_00000001.png"))
    assert written.shape == (32, 32, 3)
    assert np.array_equal(written, np.asarray(FaceGenerator("tinyfaces", device="cpu").face(1)))

    # FID of the run's newest checkpoint against the data, appended to the run's metrics.
    capsys.readouterr()
    assert cli(["fid", str(out), str(data), "--samples", "2", "--limit", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 3 and result["fid"] > 0
    assert RunFolder(out).metrics()[-1]["fid"] == result["fid"]


def test_clear_errors_for_bad_data(tmp_path: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(tmp_path / "missing", tmp_path / "r1", tiny_config, 2)) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(_args(tmp_path / "empty", tmp_path / "r2", tiny_config, 2)) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(_args(tmp_path / "empty", tmp_path / "r3", tiny_config, 2, "--size", "48")) == 2
    assert "power of two" in capsys.readouterr().err


def test_bad_settings_are_refused_before_the_run_folder(data: Path, tiny_config: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A zero interval, too few FID samples or a zero rate is one clear line, not a crash at its step."""
    for bad, message in (({"sample_every": 0}, "at least 1"), ({"checkpoint_every": 0}, "at least 1"),
                         ({"fid_every": 5, "fid_samples": 1}, "at least 2"), ({"lr_d": 0}, "must be positive"),
                         ({"ema_decay": 1.0}, "ema_decay")):
        config = tmp_path / "bad.json"
        config.write_text(json.dumps({**json.loads(tiny_config.read_text()), **bad}))
        assert main(_args(data, tmp_path / "r", config, 2)) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "r").exists()
    # Refused against a run that exists, resumed or started over it: that run's status stays its own.
    done = tmp_path / "done"
    assert main(_args(data, done, tiny_config, 2)) == 0
    status = RunFolder(done).read_status()
    assert main(["--out", str(done), "--resume", "--steps", "4", "--sample-every", "0", "--quiet"]) == 2
    assert main(_args(data, done, config, 2)) == 2
    assert RunFolder(done).read_status() == status and status["state"] == "finished"


def test_fid_while_training_against_the_held_out_faces_and_them_shrunk(data: Path, tmp_path: Path,
                                                                         weights_dir: Path) -> None:
    """``fid_every``: fid/kid against the held-out faces (64 px) and fid32/kid32 against them shrunk to
    the run's 32 px, in metrics.jsonl; the shrunk reference is read once and cached for later runs."""
    config = tmp_path / "fid.json"
    config.write_text(json.dumps({**TINY, "holdout": True, "fid_every": 2, "fid_samples": 6}))
    assert main(_args(data, tmp_path / "a", config, 2)) == 0
    record = [r for r in RunFolder(tmp_path / "a").metrics() if "fid" in r][-1]
    assert record["step"] == 2
    for key in ("fid", "kid", "fid32", "kid32"):
        assert np.isfinite(record[key]), key
    assert record["fid"] > 0 and record["fid32"] > 0 and record["fid32"] != record["fid"]
    entries = sorted((weights_dir.parent / "cache" / "fid_stats").glob("*.npz"))
    assert len(entries) == 2  # the faces as they are, and shrunk
    # An entry is replaced atomically (a new inode) when written; a read only touches its time (LRU).
    inodes = [(e.name, e.stat().st_ino) for e in entries]
    assert main(_args(data, tmp_path / "b", config, 2)) == 0  # same seed and steps: the same figures
    again = [r for r in RunFolder(tmp_path / "b").metrics() if "fid" in r][-1]
    assert again["fid32"] == pytest.approx(record["fid32"], rel=1e-6)
    assert [(e.name, e.stat().st_ino) for e in sorted(entries[0].parent.glob("*.npz"))] == inodes  # read, not rewritten


def test_the_best_evaluated_step_is_kept_resumed_and_exported(data: Path, tiny_config: Path, tmp_path: Path,
                                                              weights_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """checkpoints/best.pt holds the evaluated step of lowest fid (G, its EMA and D, as its checkpoint);
    a resume judges on from the kept lines; ``--export NAME --best`` and the Training tab export it."""
    from animegan.errors import AnimeGANError
    from animegan.export import export_faces
    from animegan.weights import load_weights

    config = tmp_path / "fid.json"
    config.write_text(json.dumps({**TINY, "holdout": True, "fid_every": 2, "fid_samples": 6, "checkpoint_every": 2}))
    out = tmp_path / "straight"
    assert main(_args(data, out, config, 6, "--export", "tinybest", "--best")) == 0
    run = RunFolder(out)
    evals = [r for r in run.metrics() if "fid" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    low = min(evals, key=lambda r: r["fid"])
    best = run.load_best()
    assert best["step"] == low["step"] and best["metrics"]["fid"] == low["fid"]
    at_step = torch.load(run.checkpoints_dir / f"step_{low['step']:08d}.pt", weights_only=True)
    for part in ("G", "G_ema", "D"):
        for key, value in at_step[part].items():
            assert torch.equal(best[part][key], value), f"{part}.{key}"

    meta = load_weights("tinybest").metadata
    assert meta["steps"] == low["step"] and meta["metrics"]["fid"] == low["fid"]
    assert meta["metrics"]["fid32"] == low["fid32"] and meta["metrics"]["fid_step"] == low["step"]
    newest = export_faces(out, "tinynewest", weights_dir=weights_dir)  # the default: the newest step
    assert load_weights(newest).metadata["metrics"]["fid"] == evals[-1]["fid"]
    # The Training tab's export (best=None) takes the best step when there is one
    tab = export_faces(out, "tinytab", weights_dir=weights_dir, best=None)
    assert load_weights(tab).metadata["steps"] == low["step"]

    # Stopped at step 4 and resumed: the same best step, judged on from the kept lines
    resumed = tmp_path / "resumed"
    assert main(_args(data, resumed, config, 4)) == 0
    assert main(["--out", str(resumed), "--resume", "--steps", "6", "--quiet"]) == 0
    again = RunFolder(resumed).load_best()
    assert again["step"] == best["step"] and again["metrics"]["fid"] == pytest.approx(low["fid"], rel=1e-6)

    # Nothing evaluated: --best is refused before the run, export_faces(best=True) says why
    plain = tmp_path / "plain"
    assert main(_args(data, plain, tiny_config, 2, "--export", "x", "--best")) == 2
    assert "not evaluated" in capsys.readouterr().err and not plain.exists()
    assert main(_args(data, plain, tiny_config, 2, "--best")) == 2
    assert "give --export NAME too" in capsys.readouterr().err
    assert main(_args(data, plain, tiny_config, 2)) == 0
    with pytest.raises(AnimeGANError, match="no evaluated step"):
        export_faces(plain, "x", weights_dir=weights_dir, best=True)
    assert load_weights(export_faces(plain, "x", weights_dir=weights_dir, best=None)).metadata["steps"] == 2


def test_best_by_picks_the_best_step_by_the_runs_own_size(data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``best_by fid32`` (a 32 px run on 64 px faces) keeps the step of lowest fid32, also across a resume;
    a figure the run cannot measure is refused before anything is written."""
    config = tmp_path / "by32.json"
    config.write_text(json.dumps({**TINY, "holdout": True, "fid_every": 1, "fid_samples": 6, "checkpoint_every": 2}))
    out = tmp_path / "by32"
    assert main(_args(data, out, config, 3, "--best-by", "fid32")) == 0
    assert main(["--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 0
    run = RunFolder(out)
    evals = [r for r in run.metrics() if "fid32" in r]
    assert [r["step"] for r in evals] == [1, 2, 3, 4, 5, 6] and run.read_config()["best_by"] == "fid32"
    low = min(evals, key=lambda r: r["fid32"])
    best = run.load_best()
    assert best["step"] == low["step"] and best["metrics"]["fid32"] == pytest.approx(low["fid32"], rel=1e-6)

    assert main(_args(data, tmp_path / "no", config, 2, "--best-by", "fid64")) == 2  # not this run's size
    assert "best_by must be 'fid', 'fid32'" in capsys.readouterr().err
    assert main(_args(data, tmp_path / "no", config, 2, "--best-by", "fid64", "--size", "64")) == 2
    assert "no larger" in capsys.readouterr().err and not (tmp_path / "no").exists()

    # A run older than best_by (its config lacks the key) ran by fid: a resume asking for another figure is refused
    old = tmp_path / "old"
    assert main(_args(data, old, config, 1)) == 0
    record = RunFolder(old).read_config()
    del record["best_by"]
    RunFolder(old).write_config(record)
    capsys.readouterr()
    assert main(["--out", str(old), "--resume", "--steps", "2", "--best-by", "fid32", "--quiet"]) == 2
    assert "differ from it: best_by" in capsys.readouterr().err
    assert main(["--out", str(old), "--resume", "--steps", "2", "--best-by", "fid", "--quiet"]) == 0


def test_data_listing_loading_and_seeded_augmentation(data: Path, tmp_path: Path) -> None:
    from animegan.errors import AnimeGANError
    from train.data import ImageFolderDataset, augment, list_images

    files = list_images(data)
    assert len(files) == 33 and files == sorted(files)
    with pytest.raises(AnimeGANError, match="no such folder"):
        list_images(tmp_path / "missing")
    ds = ImageFolderDataset(data, 16, verbose=False)
    assert len(ds) == 32 and len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]
    batch = ds.load_batch([0, 1, 2, 3])
    assert batch.shape == (4, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1
    a = augment(batch, torch.Generator().manual_seed(5), flip=True, rotate=15, shift=0.1)
    b = augment(batch, torch.Generator().manual_seed(5), flip=True, rotate=15, shift=0.1)
    assert torch.equal(a, b) and not torch.equal(a, batch)
    flipped = augment(batch, torch.Generator().manual_seed(5), flip=True)
    for i in range(4):  # each image is either itself or its mirror
        assert torch.equal(flipped[i], batch[i]) or torch.equal(flipped[i], batch[i].flip(2))


def test_diffaugment_is_seeded_and_differentiable() -> None:
    from train.diffaugment import diff_augment

    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    cut = diff_augment(torch.ones(2, 3, 16, 16), "cutout", torch.Generator().manual_seed(0))
    zero_fraction = (cut == 0).float().mean().item()
    assert 0.05 < zero_fraction <= 0.25  # a half-side square, clipped at the border
    assert torch.equal(diff_augment(x, "", torch.Generator()), x)


# A torchrun entry point that runs train.faces.main unchanged and, when its training loop returns,
# saves that rank's own G, D and EMA (the run folder only gets rank 0's, in its checkpoints).
_DDP_PROBE = '''
import inspect, os, sys
import torch
import train.faces as faces

real_loop = faces._loop

def loop_then_save(*args, **kwargs):
    status = real_loop(*args, **kwargs)
    bound = inspect.signature(real_loop).bind(*args, **kwargs).arguments
    unwrap = lambda m: m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m
    state = {part: unwrap(bound[part]).state_dict() for part in ("G", "D", "G_ema")}
    torch.save(state, os.path.join(os.environ["PROBE_OUT"], "rank%d.pt" % bound["dist"].rank))
    return status

faces._loop = loop_then_save
sys.exit(faces.main(sys.argv[1:]))
'''


def _emulated_ddp(cfg_values: dict, world: int) -> list[dict]:
    """What ``world`` DDP ranks compute, in one process and without torch.distributed.

    Each rank r draws its batch, flips, latents and DiffAugment from its own stream
    ``step_generator(seed, step, r)`` and runs G and D on its own b images (so G's batch norm
    sees those b images); DDP then averages the gradients (each rank's divided by the world
    size, then summed) before every optimiser step, and broadcasts rank 0's buffers (batch-norm
    running statistics) before each forward. Returns each rank's final G, D and EMA.
    """
    import copy

    import train.faces as faces
    from train.data import ImageFolderDataset, augment, list_images
    from train.diffaugment import diff_augment
    from train.losses import d_fake_loss, d_real_loss, g_adv_loss
    from train.precision import train_precision

    cfg = faces.FaceTrainConfig(**cfg_values).resolved()
    fmt = train_precision(torch.device("cpu"), cfg.amp, cfg.channels_last).memory_format
    dataset = ImageFolderDataset(list_images(cfg.data), cfg.image_size, verbose=False)
    torch.manual_seed(cfg.seed)  # the caller restores the global RNG
    G = faces.DCGANGenerator(cfg.generator_config()).to(memory_format=fmt)
    D = faces.DCGANDiscriminator(cfg.discriminator_config()).to(memory_format=fmt)
    ranks = []
    for _ in range(world):
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        ranks.append({"G": g, "D": d, "G_ema": copy.deepcopy(G).eval().requires_grad_(False),
                      "opt_G": torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
                      "opt_D": torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))})

    def average_gradients(part: str) -> None:
        for params in zip(*(r[part].parameters() for r in ranks)):
            mean = sum(p.grad / world for p in params)
            for p in params:
                p.grad = mean.clone()

    for step in range(cfg.steps):
        for r in ranks[1:]:  # DDP's buffer broadcast from rank 0, at the start of G's forward
            for b0, b in zip(ranks[0]["G"].buffers(), r["G"].buffers()):
                b.copy_(b0)
        for rank, r in enumerate(ranks):
            gen = faces.step_generator(cfg.seed, step, rank)
            idx = torch.randint(len(dataset), (cfg.batch_size,), generator=gen).tolist()
            real = augment(dataset.load_batch(idx), gen, cfg.flip, cfg.rotate, cfg.shift).contiguous(memory_format=fmt)
            z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen)
            r["gen"], r["fake"] = gen, r["G"](z)
            logits_real = r["D"](diff_augment(real, cfg.diffaugment, gen))
            logits_fake = r["D"](diff_augment(r["fake"].detach(), cfg.diffaugment, gen))
            r["opt_D"].zero_grad(set_to_none=True)
            (d_real_loss(logits_real.float(), cfg.loss) + d_fake_loss(logits_fake.float(), cfg.loss)).backward()
        average_gradients("D")
        for r in ranks:
            r["opt_D"].step()
        for r in ranks:
            loss_g = g_adv_loss(r["D"](diff_augment(r["fake"], cfg.diffaugment, r["gen"])).float(), cfg.loss)
            r["opt_G"].zero_grad(set_to_none=True)
            loss_g.backward()
        average_gradients("G")
        for r in ranks:
            r["opt_G"].step()
            faces.ema_update(r["G_ema"], r["G"], min(cfg.ema_decay, (1 + step) / (10 + step)))
    return [{part: r[part].state_dict() for part in ("G", "D", "G_ema")} for r in ranks]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_ddp_ranks_agree_and_equal_the_emulated_gradient_average(data: Path, tiny_config: Path,
                                                                  tmp_path: Path) -> None:
    """Two gloo ranks end with the same weights, and those are the weights of two b-image
    batches whose gradients are averaged (emulated here in one process).

    Not '1 process with batch 2b', which the design does not promise: each rank draws its
    images, flips, latents and augmentations from its own stream ``step_generator(seed, step,
    rank)``, whereas one process draws all 2b from the rank-0 stream (other images, other
    latents); and G's batch norm normalises over each rank's b images (no SyncBatchNorm), so
    even the same 2b images would not give the same activations. What DDP does promise is
    tested instead: identical parameters on every rank, equal to the gradient average of the
    ranks' own computations.
    """
    out, probe_out = tmp_path / "ddp", tmp_path / "ranks"
    probe_out.mkdir()
    probe = tmp_path / "ddp_probe.py"
    probe.write_text(_DDP_PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PROBE_OUT": str(probe_out)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(probe),
           *_args(data, out, tiny_config, 4), "--device", "cpu", "--fp32"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rank0, rank1 = (torch.load(probe_out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    ckpt = _final_state(out)
    assert ckpt["step"] == 4
    for part in ("G", "D", "G_ema"):
        for key, value in rank0[part].items():
            assert torch.equal(value, ckpt[part][key]), f"checkpoint {part}.{key} is not rank 0's"
    # Every parameter, and the EMA built from them, is bit-identical across ranks (the gradients
    # are all-reduced). Batch-norm running statistics are not: each rank's last forward updates
    # its own copy after the broadcast from rank 0, so only rank 0's (in the checkpoint) is kept.
    for part in ("G", "D", "G_ema"):
        for key, value in rank0[part].items():
            if "running_" in key or "num_batches" in key:
                continue
            assert torch.equal(value, rank1[part][key]), f"{part}.{key} differs between the ranks"
    assert any(not torch.equal(rank0["G"][k], rank1["G"][k]) for k in rank0["G"] if "running_mean" in k)

    config = {**json.loads(tiny_config.read_text()), "data": str(data), "steps": 4, "amp": False}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in the ranks: CPU kernels may block their sums by thread count
        with torch.random.fork_rng(devices=[]):
            emulated = _emulated_ddp(config, world=2)
    finally:
        torch.set_num_threads(threads)
    for rank, real in enumerate((rank0, rank1)):
        for part in ("G", "D", "G_ema"):
            # Both sides add the same float32 numbers; only the order of a reduction (gloo's
            # all-reduce, oneDNN's blocking) may differ, a few ulps of values of order 1. Adam
            # moves a weight by about lr = 2e-4 a step whatever its gradient, so a wrong gradient
            # anywhere would show as a difference of order 1e-4, far above this bound.
            assert _max_difference(real[part], emulated[rank][part]) < 1e-6, (rank, part)


def test_init_from_starts_a_new_run_from_face_weights(straight: Path, data: Path, tiny_config: Path,
                                                      tmp_path: Path, weights_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A warm start: G and its EMA begin as the weights file's generator, D and the optimisers afresh."""
    from animegan.export import export_faces
    from animegan.weights import load_weights

    path = export_faces(straight, "warm", weights_dir=weights_dir, sliders=False, discriminator=False)
    assert not (weights_dir / "warm.d.safetensors").exists()
    shipped = load_weights(str(path)).state_dict  # as stored (fp16), which is what a new machine has
    out = tmp_path / "warm"
    assert main(_args(data, out, tiny_config, 0, "--init-from", str(path))) == 0  # step 0: the start itself
    start = _final_state(out)
    assert start["step"] == 0 and RunFolder(out).read_config()["init_from"] == str(path)
    for part in ("G", "G_ema"):
        for key, value in shipped.items():
            assert torch.equal(start[part][key], value.to(start[part][key].dtype)), f"{part}.{key}"
    cold = tmp_path / "cold"
    assert main(_args(data, cold, tiny_config, 0)) == 0
    fresh = _final_state(cold)
    conv = next(k for k, v in fresh["G"].items() if v.dim() == 4)
    assert not torch.equal(fresh["G"][conv], start["G"][conv])
    for key in fresh["D"]:  # the same new discriminator a cold start gets
        assert torch.equal(fresh["D"][key], start["D"][key])

    # It trains on from there, and a resume continues the run instead of starting it again.
    assert main(_args(data, out, tiny_config, 2, "--resume")) == 0
    assert _final_state(out)["step"] == 2

    # The export counts the file's training first: steps, images and hours go on from its own.
    first = load_weights(str(path)).metadata
    assert (first["steps"], first["images_seen"], first["run_steps"]) == (6, 6 * TINY["batch_size"], 6)
    assert first["train_hours"] > 0 and first["warm_start"] is None
    assert RunFolder(out).read_config()["warm_start"]["weights"] == str(path)  # kept by the resume
    continued = load_weights(str(export_faces(out, "continued", weights_dir=weights_dir, sliders=False))).metadata
    assert (continued["steps"], continued["images_seen"], continued["run_steps"]) == (8, 8 * TINY["batch_size"], 2)
    assert continued["warm_start"] == str(path)
    assert continued["train_hours"] == pytest.approx(first["train_hours"] + _final_state(out)["trained_s"] / 3600,
                                                     abs=1e-6)

    capsys.readouterr()
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({**TINY, "g_width": 16}))
    assert main(_args(data, tmp_path / "misfit", wide, 1, "--init-from", str(path))) == 2
    assert "does not fit this run's config" in capsys.readouterr().err


def _two_stage(plain, upscaler, path: Path, **metadata) -> Path:
    """A 128 px face file (``dcgan_upscaled``): ``plain``'s generator, then ``upscaler`` (``metadata`` on top)."""
    from dataclasses import asdict

    from animegan.models.face_upscaler import UpscaledFacesConfig
    from animegan.weights import save_weights

    config = {"channels": upscaler.config.channels, "blocks": upscaler.config.blocks}
    return save_weights(path, {**{f"generator.{k}": v for k, v in plain.state_dict.items()},
                               **{f"upscaler.{k}": v for k, v in upscaler.state_dict().items()}}, {
        "kind": "faces", "architecture": "dcgan_upscaled",
        "config": asdict(UpscaledFacesConfig(generator=plain.metadata["config"], upscaler=config)),
        "steps": plain.metadata["steps"], "images_seen": plain.metadata["images_seen"], **metadata})


def test_init_from_a_128px_model_takes_its_64px_stage(straight: Path, data: Path, tiny_config: Path,
                                                     tmp_path: Path, weights_dir: Path) -> None:
    """A two-stage model (generator, then upscaler; what ``faces128`` is) warm-starts this trainer's
    generator from its first stage: the network this trainer trains."""
    from animegan.export import export_faces
    from animegan.models.face_upscaler import FaceUpscaler, FaceUpscalerConfig
    from animegan.weights import load_weights

    plain = load_weights(str(export_faces(straight, "stage", weights_dir=weights_dir, sliders=False)))
    upscaler = FaceUpscaler(FaceUpscalerConfig(channels=4, blocks=1))
    # the pair's record counts both stages; the upscaler's part is its own
    two_stage = _two_stage(plain, upscaler, weights_dir / "two-stage.safetensors",
                           images_seen=plain.metadata["images_seen"] + 96,
                           train_hours=plain.metadata["train_hours"] + 0.5,
                           training_data={"upscaler": {"step": 6, "images": 96, "hours": 0.5}})
    out = tmp_path / "from-two-stage"
    assert main(_args(data, out, tiny_config, 0, "--init-from", str(two_stage))) == 0
    start = _final_state(out)
    for part in ("G", "G_ema"):
        for key, value in plain.state_dict.items():
            assert torch.equal(start[part][key], value.to(start[part][key].dtype)), f"{part}.{key}"
    # The run goes on from the generator's own history, not the pair's (the upscaler trained apart)
    history = RunFolder(out).read_config()["warm_start"]
    assert (history["steps"], history["images"]) == (plain.metadata["steps"], plain.metadata["images_seen"])
    assert history["hours"] == pytest.approx(plain.metadata["train_hours"], abs=1e-6)


def test_eval_upscaler_measures_the_pair_from_the_warm_start_on(straight: Path, data: Path, tmp_path: Path,
                                                                weights_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``--eval-upscaler`` logs fid_pair/kid_pair (this step's samples upscaled, against the real faces) at
    every evaluation, from the warm start's own step 0 on; ``--best-by fid_pair`` keeps its best step; a
    resume that would measure with another upscaler, and settings that cannot work, are refused."""
    from animegan.export import export_faces
    from animegan.metrics import compute_stats, fid_from_stats, generator_batches, kid_from_features
    from animegan.models.face_upscaler import FaceUpscaler, FaceUpscalerConfig, UpscaledFaceGenerator, \
        UpscaledFacesConfig
    from animegan.weights import load_weights
    from train import splits
    from train.data import list_images

    plain_path = export_faces(straight, "stage", weights_dir=weights_dir, sliders=False)
    plain = load_weights(str(plain_path))
    torch.manual_seed(3)
    upscaler = FaceUpscaler(FaceUpscalerConfig(channels=4, blocks=1))
    torch.nn.init.normal_(upscaler.tail[0].weight, std=0.05)  # not the untrained bilinear: its own detail
    pair = _two_stage(plain, upscaler, weights_dir / "pair.safetensors")
    config = tmp_path / "pair.json"
    config.write_text(json.dumps({**TINY, "holdout": True, "fid_every": 1, "fid_samples": 6, "checkpoint_every": 3}))
    out = tmp_path / "paired"
    assert main(_args(data, out, config, 3, "--init-from", str(pair), "--eval-upscaler", str(pair),
                      "--best-by", "fid_pair")) == 0
    assert main(["--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 0
    run = RunFolder(out)
    evals = [r for r in run.metrics() if "fid_pair" in r]
    assert [r["step"] for r in evals] == [0, 1, 2, 3, 4] and all("kid_pair" in r and "fid" in r for r in evals)
    best, low = run.load_best(), min(evals, key=lambda r: r["fid_pair"])
    assert best["step"] == low["step"] and best["metrics"]["fid_pair"] == pytest.approx(low["fid_pair"], rel=1e-6)

    # Step 0 is the warm start itself: its pair figures are the file's own, measured here independently
    net = UpscaledFaceGenerator(UpscaledFacesConfig(generator=plain.metadata["config"],
                                                    upscaler={"channels": 4, "blocks": 1}))
    net.generator.load_state_dict({k: v.float() for k, v in plain.state_dict.items()})
    net.upscaler.load_state_dict(upscaler.state_dict())
    net.eval()
    generated = compute_stats(generator_batches(net, 6, seed=FaceTrainConfig().seed + 2, device="cpu"),
                              device="cpu", limit=6)
    real = compute_stats(splits.split(list_images(data), "eval"), device="cpu")
    assert evals[0]["fid_pair"] == pytest.approx(fid_from_stats(generated, real), rel=1e-3)
    assert evals[0]["kid_pair"] == pytest.approx(kid_from_features(generated.features, real.features,
                                                                   subsets=20)[0], rel=1e-3, abs=1e-6)
    assert evals[0]["fid_pair"] != pytest.approx(evals[0]["fid"], rel=1e-3)  # the upscaler's detail counts

    # Another upscaler in the same file: the run's fid_pair would no longer compare with itself
    torch.nn.init.normal_(upscaler.tail[0].weight, std=0.05)
    _two_stage(plain, upscaler, pair)
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--steps", "5", "--quiet"]) == 2
    assert "another upscaler" in capsys.readouterr().err and run.read_status()["step"] == 4

    assert main(_args(data, tmp_path / "no", config, 2, "--best-by", "fid_pair")) == 2
    assert "needs eval_upscaler" in capsys.readouterr().err
    assert main(_args(data, tmp_path / "no", config, 2, "--eval-upscaler", str(plain_path))) == 2
    assert "holds no upscaler" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_init_from_brings_the_discriminator_exported_beside_the_weights(straight: Path, data: Path,
                                                                         tiny_config: Path, tmp_path: Path,
                                                                         weights_dir: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An export writes the run's D beside its weights; a warm start continues with it, not a new D."""
    from animegan.export import export_faces
    from animegan.weights import load_weights, project_weights, save_weights, update_metadata

    path = export_faces(straight, "warm", weights_dir=weights_dir, sliders=False)
    sidecar = weights_dir / "warm.d.safetensors"
    assert sidecar.is_file() and "warm.d" not in project_weights()  # not a model the app lists
    trained_d = _final_state(straight)["D"]
    out = tmp_path / "warm"
    loud = [a for a in _args(data, out, tiny_config, 0, "--init-from", str(path)) if a != "--quiet"]
    assert main(loud) == 0
    assert "its discriminator too" in capsys.readouterr().out
    start = _final_state(out)
    for key, value in trained_d.items():  # the run's D, as fp16 keeps it
        assert torch.equal(start["D"][key], value.half().to(value.dtype)), key

    # Another run's D shape: one line naming the file, no run folder work lost.
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps({**TINY, "d_width": 2 * TINY["d_width"]}))
    assert main(_args(data, tmp_path / "misfit", narrow, 1, "--init-from", str(path))) == 2
    assert "its discriminator does not fit" in capsys.readouterr().err

    # A metadata edit (update_metadata rewrites the file, not the weights) keeps the pair.
    update_metadata(path, {"description": "edited"})
    assert main(_args(data, tmp_path / "edited", tiny_config, 0, "--init-from", str(path))) == 0

    # A D left from an older export of the same name is never paired with newer weights.
    loaded = load_weights(str(path))
    changed = {k: (v + 1 if v.dim() == 4 else v) for k, v in loaded.state_dict.items()}
    save_weights(path, changed, loaded.metadata)
    assert main(_args(data, tmp_path / "stale", tiny_config, 1, "--init-from", str(path))) == 2
    assert "made for another version" in capsys.readouterr().err
    # Exporting again without a D removes the old one.
    export_faces(straight, "warm", weights_dir=weights_dir, sliders=False, discriminator=False)
    assert not sidecar.exists()


def test_d_warmup_trains_only_the_new_discriminator_first(straight: Path, data: Path, tmp_path: Path,
                                                          weights_dir: Path) -> None:
    """A warm start's G stays as shipped while its new D learns; after the warm-up both train."""
    from animegan.export import export_faces
    from animegan.weights import load_weights

    path = export_faces(straight, "warm", weights_dir=weights_dir, sliders=False, discriminator=False)
    shipped = load_weights(str(path)).state_dict
    config = tmp_path / "warmup.json"
    config.write_text(json.dumps({**TINY, "d_warmup": 3}))
    out = tmp_path / "run"
    assert main(_args(data, out, config, 3, "--init-from", str(path))) == 0
    warmed = _final_state(out)
    params = {k for k, _ in DCGANGenerator(FaceTrainConfig(**{**TINY, "d_warmup": 3}).resolved()
                                             .generator_config()).named_parameters()}
    assert set(shipped) > params  # batch norm's running statistics too: G's whole state stays as shipped
    for part in ("G", "G_ema"):
        for key in shipped:
            assert torch.equal(warmed[part][key], shipped[key].to(warmed[part][key].dtype)), f"{part}.{key}"
    assert main(_args(data, tmp_path / "cold", config, 0, "--init-from", str(path))) == 0
    fresh_d = _final_state(tmp_path / "cold")["D"]
    assert any(not torch.equal(fresh_d[k], warmed["D"][k]) for k in fresh_d)  # D trained meanwhile
    assert main(_args(data, out, config, 5, "--resume")) == 0
    trained = _final_state(out)
    assert any(not torch.equal(trained["G"][k], warmed["G"][k]) for k in params)
