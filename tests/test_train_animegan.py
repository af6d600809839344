"""The photo-to-anime trainer on small data the tests draw themselves: data, steps, resume,
export into the stylizer, graceful stop, errors and a 2-process DDP (gloo) smoke run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from animegan.errors import AnimeGANError
from animegan.export import export_style
from animegan.runs import RunFolder
from conftest import REPO, gradient_image
from train.animegan import StyleTrainConfig, StyleTrainer, main
from train.common import step_generator
from train.style_data import StyleData, edge_smooth

SMALL = dict(size=32, batch=2, init_steps=1, d_every=2, val_photos=2, perceptual_min_side=64, superpixels=16,
             log_every=1, sample_every=2, checkpoint_every=2)


def _anime(seed: int, size: tuple[int, int] = (48, 52)) -> Image.Image:
    """A flat-colour picture with dark drawn lines: what the edge smoothing acts on."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(60, 230, 3)))
    d = ImageDraw.Draw(im)
    d.rectangle((5, 20, 30, 44), fill=tuple(int(c) for c in rng.integers(60, 230, 3)))
    d.line((0, seed * 5, size[0] - 1, 40 - seed * 3), fill=(10, 10, 10), width=2)
    d.ellipse((10, 8, 30, 28), outline=(20, 20, 20), width=2)
    return im


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "real_images" / "more").mkdir(parents=True)
    (root / "anime_images").mkdir(parents=True)
    for i in range(8):
        sub = "more" if i % 3 == 0 else ""
        Image.fromarray(gradient_image(48, 48, seed=i)).save(root / "real_images" / sub / f"p{i}.png")
        _anime(i).save(root / "anime_images" / f"a{i}.png")
    return root


def _config(dataset: Path, **kw: object) -> StyleTrainConfig:
    return StyleTrainConfig.from_dict({"data": str(dataset), **SMALL, **kw})


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two busy cores: one thread per process is faster than two fighting threads.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- data -----------------------------------------------------------------------------------
def test_edge_smooth_matches_the_original_per_pixel_loop() -> None:
    import cv2

    rgb = np.asarray(_anime(3, (24, 20)))
    got = edge_smooth(rgb)
    # AnimeGAN's edge_smooth.py, pixel by pixel (RGB here instead of BGR: the same per channel).
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mask = cv2.dilate(cv2.Canny(gray, 100, 200), np.ones((5, 5), np.uint8))
    gauss = cv2.getGaussianKernel(5, 0)
    gauss = gauss * gauss.T
    pad = np.pad(rgb, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    hand = rgb.copy()
    ys, xs = np.nonzero(mask)
    assert len(ys) > 20  # the drawn lines do give edges
    for y, x in zip(ys, xs):
        for c in range(3):
            hand[y, x, c] = np.sum(pad[y:y + 5, x:x + 5, c] * gauss)
    assert np.abs(got.astype(int) - hand.astype(int)).max() <= 1  # cv2 rounds, the loop truncates
    assert np.array_equal(got[mask == 0], rgb[mask == 0])


def test_batches_are_deterministic_unpaired_and_well_formed(dataset: Path) -> None:
    data = StyleData(dataset, size=32, val_photos=2)
    assert len(data.photos) == 6 and len(data.val) == 2 and len(data.anime) == 8
    assert not set(data.val_names) & set(data.photo_names)
    a, b = data.batch(3, step_generator(7, 5)), data.batch(3, step_generator(7, 5))
    c = data.batch(3, step_generator(7, 6))
    for name in ("photo", "anime", "anime_gray", "smooth", "smooth_gray"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert ta.shape == (3, 3, 32, 32) and torch.equal(ta, tb)
        assert ta.min() >= -1 and ta.max() <= 1
    assert not torch.equal(a.photo, c.photo)
    luma = 0.299 * a.anime[:, 0] + 0.587 * a.anime[:, 1] + 0.114 * a.anime[:, 2]
    for ch in range(3):
        assert torch.allclose(a.anime_gray[:, ch], luma, atol=1e-6)
    # The smoothed crop is the same crop as the anime one, blurred only near lines.
    diff = (a.smooth - a.anime).abs()
    assert 0 < diff.mean() < 0.1 and (diff < 1e-6).float().mean() > 0.3
    assert data.validation_batch().shape == (2, 3, 32, 32)


def test_smoothed_copies_are_cached_and_refreshed_on_change(dataset: Path) -> None:
    StyleData(dataset, size=32)
    cache = sorted((dataset / ".animegan_cache" / "smooth").glob("*.png"))
    assert len(cache) == 8
    before = {p: p.stat().st_mtime_ns for p in cache}
    StyleData(dataset, size=32)  # unchanged sources: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in cache} == before
    changed = dataset / "anime_images" / "a0.png"
    _anime(11).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    StyleData(dataset, size=32)
    assert len(list((dataset / ".animegan_cache" / "smooth").glob("*.png"))) == 9
    assert not list((dataset / ".animegan_cache" / "smooth").glob("*.part*"))


def test_data_errors_are_clear(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AnimeGANError, match="dataset folder not found"):
        StyleData(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "real_images").mkdir(parents=True)
    (empty / "anime_images").mkdir()
    with pytest.raises(AnimeGANError, match="real_images: no images"):
        StyleData(empty)
    (empty / "real_images" / "x.png").write_bytes(b"")
    Image.fromarray(gradient_image(40, 40)).save(empty / "real_images" / "y.png")
    _anime(1).save(empty / "anime_images" / "a.png")
    _anime(2).save(empty / "anime_images" / "b.png")
    with pytest.raises(AnimeGANError, match=r"only 1 readable photos.*x\.png"):
        StyleData(empty)
    (tmp_path / "noanime" / "real_images").mkdir(parents=True)
    with pytest.raises(AnimeGANError, match="anime_images: missing folder"):
        StyleData(tmp_path / "noanime")

    (dataset / "anime_images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = StyleData(dataset, size=32)
    assert [p.name for p in data.skipped.files] == ["broken.png"] and len(data.anime) == 8
    assert "skipped 1 unreadable file(s): broken.png" in capsys.readouterr().out


# -- training -------------------------------------------------------------------------------
def test_cli_trains_logs_every_term_and_exports_a_working_style(dataset: Path, tmp_path: Path,
                                                                 weights_dir: Path) -> None:
    from animegan.stylize import Stylizer
    from animegan.weights import available_styles

    run = tmp_path / "run"
    config = json.dumps({k: v for k, v in SMALL.items() if k not in ("size", "batch", "init_steps")})
    rc = main(["--data", str(dataset), "--out", str(run), "--steps", "3", "--size", "32", "--batch", "2",
               "--init-steps", "1", "--config", config, "--export", "my-style", "--quiet"])
    assert rc == 0
    rf = RunFolder(run)
    records = rf.metrics()
    assert [r["step"] for r in records] == [1, 2, 3]
    assert set(records[0]) >= {"loss_init_content", "images_per_s"}
    assert set(records[-1]) >= {"loss_content", "loss_style", "loss_color", "loss_tv", "loss_adv_g", "loss_d", "loss_g"}
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss_"))
    assert rf.read_status()["state"] == "finished"
    assert [p.name for p in rf.samples()] == ["step_00000002.png", "step_00000003.png"]
    with Image.open(rf.samples()[-1]) as grid:
        assert grid.size == (2 * 32, 2 * 32)  # two held-out photos, photo row + output row
    config_saved = rf.read_config()
    assert config_saved["perceptual_network"].startswith(("inception_", "vgg19"))
    assert config_saved["loss_weights"]["adv_g"] == 300.0

    assert "my-style" in available_styles()
    meta = json.loads((weights_dir / "my-style.json").read_text())
    assert (meta["kind"], meta["architecture"], meta["steps"], meta["recipe"]) == ("style", "animeganv2", 3, "v2")
    assert "licence" in meta and "photos" in meta["training_data"] and "loss_g" in meta["metrics"]
    ckpt = rf.load_latest_checkpoint()
    stylizer = Stylizer("my-style", device="cpu", half=False)  # fp32: the exported tensors exactly
    for k, v in stylizer.model.state_dict().items():
        assert torch.allclose(v, ckpt["generator"][k].half().float())
    out = stylizer.run_arrays([gradient_image(40, 36, seed=3)])[0]
    assert out.shape == (36, 40, 3) and out.dtype == np.uint8
    # The exported network is the trained one: it is no longer the initial random generator.
    torch.manual_seed(0)
    from animegan.models import build_model

    init = build_model("animeganv2").state_dict()
    assert any(not torch.equal(init[k], ckpt["generator"][k]) for k in init if init[k].is_floating_point())


@pytest.mark.parametrize("recipe", ["v2", "v3"])
def test_resume_gives_the_uninterrupted_run_exactly(dataset: Path, tmp_path: Path, recipe: str) -> None:
    cfg = _config(dataset, recipe=recipe, steps=4)
    whole = StyleTrainer(cfg, tmp_path / "whole", quiet=True)
    assert whole.run() == "finished"

    # Split after step 2: inside the GAN phase, between two D updates (d_every=2)
    first = StyleTrainer(_config(dataset, recipe=recipe, steps=2), tmp_path / "split", quiet=True)
    first.run()
    resumed = StyleTrainer(cfg, tmp_path / "split", resume=True, quiet=True)
    assert resumed.run() == "finished" and resumed.step == 4
    for a, b in ((whole.generator, resumed.generator), (whole.discriminator, resumed.discriminator)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = whole.opt_d.state_dict()["state"], resumed.opt_d.state_dict()["state"]
    assert oa and all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    last_whole = whole.run_folder.metrics()[-1]
    last_split = resumed.run_folder.metrics()[-1]
    assert {"loss_gray_style", "loss_region", "loss_domain"} <= set(last_whole) if recipe == "v3" else \
        {"loss_style", "loss_color", "loss_tv", "loss_adv_g"} <= set(last_whole)
    assert {k: v for k, v in last_whole.items() if k.startswith("loss_")} == \
        {k: v for k, v in last_split.items() if k.startswith("loss_")}
    assert [r["step"] for r in resumed.run_folder.metrics()] == [1, 2, 3, 4]


def test_sigterm_checkpoints_and_stops(dataset: Path, tmp_path: Path) -> None:
    trainer = StyleTrainer(_config(dataset, steps=500, checkpoint_every=1000, sample_every=1000), tmp_path / "run",
                           quiet=True)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert trainer.run() == "stopped"
    finally:
        timer.cancel()
    rf = RunFolder(tmp_path / "run")
    assert 0 < trainer.step < 500
    assert rf.checkpoints()[-1].name == f"step_{trainer.step:08d}.pt"
    assert rf.read_status()["state"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) == before  # the trainer gives the process its handler back


def test_cli_errors_exit_2(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--data", str(dataset), "--out", str(tmp_path / "r"), "--config", '{"lr": 1}']) == 2
    assert "unknown config key(s): lr" in capsys.readouterr().err
    assert main(["--data", str(dataset), "--out", str(tmp_path / "r"), "--config", '{"weights": {"colour": 1}}']) == 2
    assert "colour" in capsys.readouterr().err
    with pytest.raises(AnimeGANError, match="no checkpoint"):
        (tmp_path / "r2").mkdir()
        (tmp_path / "r2" / "config.json").write_text("{}")
        export_style(tmp_path / "r2", "x")


def test_ddp_two_processes_gloo(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.animegan", "--data", str(dataset), "--out", str(run), "--steps", "2", "--size", "32",
           "--batch", "1", "--init-steps", "1", "--quiet", "--config", json.dumps({**SMALL, "batch": 1})]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rf = RunFolder(run)
    assert rf.read_config()["world_size"] == 2
    assert [r["step"] for r in rf.metrics()] == [1, 2]
    assert rf.checkpoints()[-1].name == "step_00000002.pt"
    assert rf.read_status()["state"] == "finished"
