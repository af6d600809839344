"""The photo-to-anime trainer on small data the tests draw themselves: data, steps, resume,
export into the stylizer, graceful stop, errors and a 2-process DDP (gloo) smoke run."""
from __future__ import annotations

import copy
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
from train.animegan import StyleTrainConfig, StyleTrainer, build_parser, config_from_args, main
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


@pytest.fixture
def held_out(tmp_path: Path) -> Path:
    """Photos the runs never train on: landscape and portrait ones (the short side is scaled to the run's size)."""
    folder = tmp_path / "held_out"
    folder.mkdir()
    for i, (w, h) in enumerate([(60, 40), (40, 60), (60, 40), (50, 50)]):
        Image.fromarray(gradient_image(w, h, seed=20 + i)).save(folder / f"h{i}.png")
    return folder


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


@pytest.mark.parametrize("recipe,ema,augment", [("v2", 0.0, ""), ("v3", 0.0, ""), ("v2", 0.5, ""),
                                                ("v2", 0.0, "translation,cutout")])
def test_resume_gives_the_uninterrupted_run_exactly(dataset: Path, held_out: Path, tmp_path: Path,
                                                    recipe: str, ema: float, augment: str) -> None:
    # With the quality evaluation on: it must change nothing a later step computes.
    evaluation = dict(eval_every=2, eval_photos=str(held_out), eval_limit=3, ema_decay=ema, diffaugment=augment)
    cfg = _config(dataset, recipe=recipe, steps=4, **evaluation)
    whole = StyleTrainer(cfg, tmp_path / "whole", quiet=True)
    assert whole.run() == "finished"

    # Split after step 2: inside the GAN phase, between two D updates (d_every=2)
    first = StyleTrainer(_config(dataset, recipe=recipe, steps=2, **evaluation), tmp_path / "split", quiet=True)
    first.run()
    resumed = StyleTrainer(cfg, tmp_path / "split", resume=True, quiet=True)
    assert resumed.run() == "finished" and resumed.step == 4
    for a, b in ((whole.generator, resumed.generator), (whole.discriminator, resumed.discriminator),
                 (whole.sampler, resumed.sampler)):
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
    hours = [r["train_hours"] for r in resumed.run_folder.metrics()]  # carried across the resume
    assert hours[0] > 0 and hours == sorted(hours)
    assert resumed.run_folder.load_latest_checkpoint()["trained_s"] >= hours[-1] * 3600
    figures = ("fid", "kid", "content", "baseline_fid", "baseline_kid", "content_unrelated")
    evaluated = [[{k: r[k] for k in figures} for r in t.run_folder.metrics() if "fid" in r] for t in (whole, resumed)]
    assert len(evaluated[0]) == 2 and evaluated[0] == evaluated[1]  # steps 2 and 4, the same figures
    bests = [t.run_folder.load_best() for t in (whole, resumed)]
    assert bests[0]["step"] == bests[1]["step"] and bests[0]["figures"] == bests[1]["figures"]


def test_quality_is_measured_while_training(dataset: Path, held_out: Path, tmp_path: Path) -> None:
    """Every eval_every steps and at the last, the figures train.evaluate_style gives for the generator then."""
    import cv2

    from animegan.metrics import compare
    from animegan.models import build_model
    from train.evaluate_style import style_figures
    from train.perceptual import Perceptual

    cfg = _config(dataset, steps=4, log_every=2, eval_every=3, eval_photos=str(held_out), eval_limit=3, amp=False)
    trainer = StyleTrainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.run() == "finished"
    assert trainer.generator.training  # the evaluation gives the generator its training mode back
    records = trainer.run_folder.metrics()
    assert [r["step"] for r in records] == [2, 3, 4]
    evaluated = [r for r in records if "fid" in r]
    assert [r["step"] for r in evaluated] == [3, 4]  # every 3 steps, and the last
    assert "loss_g" not in evaluated[0] and "loss_g" in evaluated[1]  # alone at step 3, with the losses at 4
    names = ("fid", "kid", "content", "baseline_fid", "baseline_kid", "content_unrelated")
    assert all(np.isfinite(r[k]) for r in evaluated for k in names)
    for key in ("baseline_fid", "baseline_kid", "content_unrelated"):  # the untouched photos: one figure a run
        assert evaluated[0][key] == evaluated[1][key]
    assert evaluated[0]["fid"] != evaluated[1]["fid"]  # the generator changed in between

    # The photos as the trainer sees them: the first 3 (sorted), short side scaled to the run's 32 px.
    photos = []
    for path in sorted(held_out.glob("*.png"))[:3]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        size = (round(w * 32 / min(h, w)), round(h * 32 / min(h, w)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        photos.append(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert [tuple(p.shape[-2:]) for p in photos] == [(32, 48), (48, 32), (32, 48)]
    anime = dataset / "anime_images"
    baseline = compare(photos, anime, device="cpu")
    assert evaluated[-1]["baseline_fid"] == pytest.approx(baseline["fid"], rel=1e-4)
    assert evaluated[-1]["baseline_kid"] == pytest.approx(baseline["kid"], rel=1e-4, abs=1e-7)

    # The last evaluation is that of the final checkpoint's generator through the shared function.
    generator = build_model("animeganv2", cfg.generator)
    generator.load_state_dict(trainer.run_folder.load_latest_checkpoint()["generator"])
    generator.eval()
    with torch.no_grad():
        styled = [generator(p).clamp(-1, 1) for p in photos]
    from animegan.metrics import compute_stats

    table = style_figures(photos, styled, compute_stats(anime, "cpu"), Perceptual("inception", "cpu"), device="cpu")
    expected = {"fid": table["stylized"]["fid"], "kid": table["stylized"]["kid"],
                "content": table["stylized"]["content"], "baseline_fid": table["baseline"]["fid"],
                "baseline_kid": table["baseline"]["kid"], "content_unrelated": table["content_unrelated"]}
    for key, value in expected.items():
        assert evaluated[-1][key] == pytest.approx(value, rel=1e-3, abs=1e-6), key


def test_the_best_evaluated_step_is_kept_and_exported(dataset: Path, held_out: Path, tmp_path: Path) -> None:
    """best.pt holds the generator of the lowest-KID step (pruned step checkpoints or not); --best exports it."""
    from animegan.weights import load_weights

    cfg = _config(dataset, steps=5, eval_every=1, eval_photos=str(held_out), eval_limit=3, checkpoint_every=1,
                  keep_checkpoints=10)
    trainer = StyleTrainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.run() == "finished"
    rf = trainer.run_folder
    kids = {r["step"]: r["kid"] for r in rf.metrics() if "kid" in r}
    assert sorted(kids) == [1, 2, 3, 4, 5] and len(set(kids.values())) > 1
    best_step = min(kids, key=kids.get)
    best = rf.load_best()
    assert best["step"] == best_step and best["figures"]["kid"] == kids[best_step]
    step_state = torch.load(rf.checkpoints_dir / f"step_{best_step:08d}.pt", weights_only=True)
    assert all(torch.equal(best["generator"][k], v) for k, v in step_state["generator"].items())

    path = export_style(rf.path, "best-one", weights_folder=tmp_path / "w", best=True)
    loaded = load_weights(path)
    assert loaded.metadata["steps"] == best_step and loaded.metadata["metrics"]["kid"] == kids[best_step]
    assert loaded.metadata["metrics"]["evaluated_step"] == best_step
    assert loaded.metadata["images_seen"] == best_step * cfg.batch
    for k, v in step_state["generator"].items():
        assert torch.equal(loaded.state_dict[k], v.half()), k
    newest = load_weights(export_style(rf.path, "newest", weights_folder=tmp_path / "w"))
    assert newest.metadata["steps"] == 5 and newest.metadata["metrics"]["evaluated_step"] == 5
    # A fresh run in a folder whose earlier run evaluated but never checkpointed drops that run's best.
    for ckpt in rf.checkpoints():
        ckpt.unlink()
    bare = StyleTrainer(_config(dataset, steps=1), tmp_path / "run", quiet=True)
    bare.run()
    assert not rf.best_path.exists()
    with pytest.raises(AnimeGANError, match="no evaluated step"):
        export_style(tmp_path / "run", "x", weights_folder=tmp_path / "w", best=True)
    assert load_weights(export_style(tmp_path / "run", "x", weights_folder=tmp_path / "w", best=None)).metadata[
        "steps"] == 1  # best=None: the best step when there is one, else the newest


def test_the_ema_is_what_is_evaluated_kept_and_exported(dataset: Path, held_out: Path, tmp_path: Path) -> None:
    """With ema_decay, an average of G's weights is kept beside G; the figures, best.pt and exports are its."""
    from animegan.weights import load_weights

    cfg = _config(dataset, steps=4, eval_every=2, eval_photos=str(held_out), eval_limit=3, ema_decay=0.5)
    trainer = StyleTrainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.run() == "finished"
    rf = trainer.run_folder
    newest = torch.load(rf.checkpoints()[-1], weights_only=True)
    g, ema = newest["generator"], newest["generator_ema"]
    assert any(not torch.equal(g[k], ema[k]) for k in g if g[k].is_floating_point())
    assert all(torch.equal(v, trainer.generator_ema.state_dict()[k]) for k, v in ema.items())

    # One more step by hand: the EMA moves 1 - decay of the way to G's new weights, where a new run's
    # decay ramps up as (1 + step) / (10 + step) to ema_decay (5/14 at step 4)
    before = {k: v.clone() for k, v in trainer.generator_ema.state_dict().items()}
    trainer.train_step(4)
    after_g, decay = trainer.generator.state_dict(), 5 / 14
    for k, v in trainer.generator_ema.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, decay * before[k] + (1 - decay) * after_g[k], atol=1e-6), k

    # The figures logged are the EMA's: re-measured here on its weights, they match
    best = rf.load_best()
    step_state = torch.load(rf.checkpoints_dir / f"step_{best['step']:08d}.pt", weights_only=True)
    assert all(torch.equal(best["generator"][k], v) for k, v in step_state["generator_ema"].items())
    trainer.generator_ema.load_state_dict(best["generator"])
    again = trainer.evaluate()
    assert again["kid"] == pytest.approx(best["figures"]["kid"], rel=1e-4, abs=1e-6)
    exported = load_weights(export_style(rf.path, "ema", weights_folder=tmp_path / "w")).state_dict
    assert all(torch.equal(exported[k], v.half()) for k, v in ema.items() if v.is_floating_point())
    assert load_weights(tmp_path / "w" / "ema.safetensors").metadata["train_config"]["ema_decay"] == 0.5
    with pytest.raises(AnimeGANError, match="ema_decay"):
        _config(dataset, ema_decay=1.0)


def test_init_from_continues_a_style_in_a_new_run(dataset: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A warm start begins at the exported generator, skips the content-only phase and adds up the history."""
    from animegan.weights import load_weights

    first = StyleTrainer(_config(dataset, steps=3), tmp_path / "first", quiet=True)
    assert first.run() == "finished"
    shipped = export_style(tmp_path / "first", "shipped", weights_folder=tmp_path / "w")
    prior = load_weights(shipped).metadata
    assert prior["steps"] == 3 and prior["images_seen"] == 3 * SMALL["batch"] and prior["train_hours"] > 0

    assert (tmp_path / "w" / "shipped.d.safetensors").is_file()  # the run's D, beside its generator

    cfg = _config(dataset, steps=2, init_steps=5, init_from=str(shipped))
    second = StyleTrainer(cfg, tmp_path / "second", quiet=True)
    weights = load_weights(shipped).state_dict
    assert all(torch.equal(v, weights[k].float()) for k, v in second.generator.state_dict().items())
    # ... and D goes on from the first run's, not from a new one (a GAN continued with a new D drifts)
    trained_d = first.discriminator.state_dict()
    new_d = StyleTrainer(_config(dataset, steps=1), tmp_path / "unrun", quiet=True).discriminator.state_dict()
    assert any(not torch.equal(v, new_d[k]) for k, v in trained_d.items())  # D did train in the first run
    assert second.prior["discriminator"] is True
    assert all(torch.equal(v, trained_d[k].half().float()) for k, v in second.discriminator.state_dict().items())
    assert second.run() == "finished"
    records = second.run_folder.metrics()
    assert [r["step"] for r in records] == [1, 2]
    assert all("loss_init_content" not in r and "loss_adv_g" in r for r in records)  # straight to the GAN phase
    meta = load_weights(export_style(tmp_path / "second", "continued", weights_folder=tmp_path / "w")).metadata
    assert meta["steps"] == 5 and meta["run_steps"] == 2 and meta["images_seen"] == 5 * SMALL["batch"]
    assert meta["train_hours"] > prior["train_hours"] and meta["warm_start"] == str(shipped)

    # A resumed warm-started run keeps its own checkpoint, not the file it started from
    again = StyleTrainer(_config(dataset, steps=3, init_steps=5, init_from=str(shipped)), tmp_path / "second",
                         resume=True, quiet=True)
    assert again.run() == "finished" and again.step == 3
    # ... and still counts the history it started from (config.json is rewritten at each start)
    meta = load_weights(export_style(tmp_path / "second", "resumed", weights_folder=tmp_path / "w")).metadata
    assert meta["steps"] == 6 and meta["images_seen"] == 6 * SMALL["batch"] and meta["warm_start"] == str(shipped)
    assert meta["train_config"]["pretrain_steps"] == 0

    # Every checkpoint damaged: the resumed run starts again from the warm start, not from random weights,
    # and ends where a fresh warm-started run of as many steps ends (every draw is seeded by the step)
    assert again.run_folder.checkpoints()
    for ckpt in again.run_folder.checkpoints():
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    redo = StyleTrainer(_config(dataset, steps=3, init_steps=5, init_from=str(shipped)), tmp_path / "second",
                        resume=True, quiet=True)
    assert redo.run() == "finished" and redo.step == 3
    fresh = StyleTrainer(_config(dataset, steps=3, init_steps=5, init_from=str(shipped)), tmp_path / "fresh",
                         quiet=True)
    assert fresh.run() == "finished"
    assert all(torch.equal(v, fresh.generator.state_dict()[k]) for k, v in redo.generator.state_dict().items())

    base = ["--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "2", "--quiet",
            "--config", json.dumps(SMALL)]
    assert main([*base, "--init-from", str(REPO / "weights" / "faces64.safetensors")]) == 2
    assert "not a photo-to-anime style" in capsys.readouterr().err
    assert main([*base, "--init-from", str(shipped), "--config", json.dumps({**SMALL, "generator": {"width": 0.5}})]) == 2
    assert "does not fit this run's config" in capsys.readouterr().err
    assert main([*base, "--init-from", str(tmp_path / "missing.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "r").exists()


def test_evaluation_settings_are_checked_at_start(dataset: Path, held_out: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or bad held-out folder is one line and exit 2 before training, not a traceback hours later."""
    base = ["--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "2", "--quiet"]
    assert main([*base, "--eval-every", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval_every needs eval_photos") and len(err.strip().splitlines()) == 1
    assert main([*base, "--eval-every", "5", "--eval-photos", str(tmp_path / "nope")]) == 2
    assert "held-out photos folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*base, "--eval-every", "5", "--eval-photos", str(tmp_path / "empty")]) == 2
    assert "need at least 2 held-out photos, found 0" in capsys.readouterr().err
    assert main([*base, "--eval-every", "5", "--eval-photos", str(dataset / "real_images")]) == 2
    assert "must not be (or hold) the training photos" in capsys.readouterr().err
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for name in ("a.png", "b.png"):
        (unreadable / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main([*base, "--eval-every", "5", "--eval-photos", str(unreadable)]) == 2
    assert "need at least 2 readable held-out photos" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing started
    assert main([*base, "--eval-every", "-1", "--eval-photos", str(held_out)]) == 2
    assert "eval_every must be 0" in capsys.readouterr().err
    assert main([*base, "--export", "x", "--best"]) == 2  # nothing would be evaluated: refused now, not after
    assert "this run is not evaluated" in capsys.readouterr().err
    assert main([*base, "--best", "--eval-every", "1", "--eval-photos", str(held_out)]) == 2
    assert "give --export NAME too" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_diffaugment_changes_what_d_sees_in_both_steps(dataset: Path, tmp_path: Path) -> None:
    """D's update and G's adversarial term see augmented images; the content and style terms do not."""
    trainers = {policy: StyleTrainer(_config(dataset, steps=2, init_steps=0, d_every=1, diffaugment=policy),
                                     tmp_path / (policy or "plain"), quiet=True) for policy in ("", "translation,cutout")}
    plain, augmented = trainers[""], trainers["translation,cutout"]
    start = [copy.deepcopy(net.state_dict()) for net in (plain.generator, plain.discriminator)]

    def first_step(trainer: StyleTrainer) -> dict[str, float]:
        trainer.generator.load_state_dict(start[0])
        trainer.discriminator.load_state_dict(start[1])
        return trainer.train_step(0)

    a, b = first_step(plain), first_step(augmented)
    assert a["loss_content"] == b["loss_content"] and a["loss_style"] == b["loss_style"]
    assert a["loss_d"] != b["loss_d"] and a["loss_adv_g"] != b["loss_adv_g"]
    # The same step draws the same augmentation: a step is a function of (seed, step, rank), as before
    again = StyleTrainer(_config(dataset, steps=2, init_steps=0, d_every=1, diffaugment="translation,cutout"),
                         tmp_path / "again", quiet=True)
    assert first_step(again) == b
    with pytest.raises(AnimeGANError, match="unknown DiffAugment policy 'zoom'"):
        _config(dataset, diffaugment="translation,zoom")


def test_d_warmup_trains_only_d_then_g(dataset: Path, tmp_path: Path) -> None:
    """In ``d_warmup`` G (and its EMA) stay as they are while D learns; after it, G trains and D on its turns."""
    from animegan.weights import load_weights

    trainer = StyleTrainer(_config(dataset, steps=4, init_steps=1, d_warmup=2, d_every=2, ema_decay=0.9),
                           tmp_path / "run", quiet=True)
    trainer.train_step(0)  # content-only
    g0, ema0, d0 = (copy.deepcopy(net.state_dict()) for net in
                    (trainer.generator, trainer.generator_ema, trainer.discriminator))

    def changed(net: torch.nn.Module, before: dict) -> bool:
        return any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())

    for step in (1, 2):
        out = trainer.train_step(step)
        assert set(out) == {"loss_d"} and np.isfinite(out["loss_d"])
    assert not changed(trainer.generator, g0) and not changed(trainer.generator_ema, ema0)
    assert changed(trainer.discriminator, d0)
    d1 = copy.deepcopy(trainer.discriminator.state_dict())
    out = trainer.train_step(3)  # the GAN phase proper: its first step is D's turn (d_every counts from here)
    assert changed(trainer.generator, g0) and changed(trainer.discriminator, d1) and "loss_adv_g" in out
    # The exported weights write the warm-up down with the rest of the recipe
    assert StyleTrainer(_config(dataset, steps=2, init_steps=1, d_warmup=1), tmp_path / "short",
                        quiet=True).run() == "finished"
    meta = load_weights(export_style(tmp_path / "short", "warmed", weights_folder=tmp_path / "w")).metadata
    assert meta["train_config"]["d_warmup"] == 1
    with pytest.raises(AnimeGANError, match="d_warmup must be 0 or more"):
        _config(dataset, d_warmup=-1)


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


def test_resume_keeps_the_config_but_may_change_processes_and_ema(dataset: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run keeps its recipe; it may go on under torchrun at the same images a step, turn its
    EMA on, and name its networks' defaults (a recipe file that spells them out)."""
    run = tmp_path / "run"
    assert StyleTrainer(_config(dataset, steps=1), run, quiet=True).run() == "finished"  # batch 2, 1 process

    def resume(*extra: str, world: int = 1) -> StyleTrainConfig:
        monkeypatch.setenv("WORLD_SIZE", str(world))
        return config_from_args(build_parser().parse_args(["--data", str(dataset), "--out", str(run), "--resume",
                                                           *extra]))

    assert resume("--batch", "1", world=2).batch == 1  # 2 processes of 1: 2 images a step, as before
    with pytest.raises(AnimeGANError, match=r"2 images a step; 2 process\(es\) of batch 2 make 4 \(pass --batch 1\)"):
        resume(world=2)
    with pytest.raises(AnimeGANError, match=r"2 images a step; 1 process\(es\) of batch 1 make 1 \(pass --batch 2\)"):
        resume("--batch", "1")
    with pytest.raises(AnimeGANError, match="3 processes cannot share"):
        resume("--batch", "1", world=3)
    assert resume("--config", json.dumps({"ema_decay": 0.999})).ema_decay == 0.999
    spelled = resume("--config", json.dumps({"discriminator": {"norm": "instance"}, "generator": {"width": 1.0}}))
    assert spelled.discriminator == {"norm": "instance"}
    with pytest.raises(AnimeGANError, match="differ from it: discriminator, generator"):
        resume("--config", json.dumps({"discriminator": {"norm": "layer"}, "generator": {"width": 0.5}}))
    monkeypatch.delenv("WORLD_SIZE")


def test_ddp_two_processes_gloo(dataset: Path, held_out: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.animegan", "--data", str(dataset), "--out", str(run), "--steps", "2", "--size", "32",
           "--batch", "1", "--init-steps", "1", "--quiet",
           "--config", json.dumps({**SMALL, "batch": 1, "ema_decay": 0.5}),
           "--eval-every", "2", "--eval-photos", str(held_out), "--eval-limit", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rf = RunFolder(run)
    assert rf.read_config()["world_size"] == 2
    assert [r["step"] for r in rf.metrics()] == [1, 2]
    assert "fid" in rf.metrics()[-1] and "fid" not in rf.metrics()[0]  # the main process evaluated, once
    assert rf.checkpoints()[-1].name == "step_00000002.pt"
    assert rf.read_status()["state"] == "finished"
    state = torch.load(rf.checkpoints()[-1], weights_only=True)  # the EMA kept beside G under DDP
    g, ema = state["generator"], state["generator_ema"]
    assert ema.keys() == g.keys() and any(not torch.equal(g[k], v) for k, v in ema.items() if v.is_floating_point())
