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

from train.faces import main
from train.runs import RunFolder

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


def test_ddp_two_processes_gloo(data: Path, tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun picks a free port itself (a port chosen here first could be taken meanwhile).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.faces", *_args(data, out, tiny_config, 4), "--device", "cpu"]
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

    assert "tinyfaces" in project_weights("faces")
    loaded = load_weights("tinyfaces")
    meta = loaded.metadata
    assert meta["kind"] == "faces" and meta["architecture"] == "dcgan" and meta["steps"] == 3
    assert "non-commercial" in meta["licence"] and meta["metrics"]["fid"] == fid_records[-1]["fid"]
    sliders_file = weights_dir / "tinyfaces.sliders.safetensors"
    assert sliders_file.is_file()
    from animegan.faces import load_sliders
    from train.faces import export

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
