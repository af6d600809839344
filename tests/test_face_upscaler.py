"""The 2x face upscaler: the network, its trainer (on shapes drawn here), resume, export, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from animegan.errors import AnimeGANError
from animegan.models import build_model
from animegan.models.dcgan import DCGANConfig, DCGANGenerator
from animegan.models.face_upscaler import FaceUpscaler, FaceUpscalerConfig, UpscaledFaceGenerator, \
    UpscaledFacesConfig
from animegan.runs import RunFolder
from train.face_upscaler import main, psnr

SMALL = {"size": 32, "channels": 16, "blocks": 2, "batch_size": 8, "lr": 1e-3, "log_every": 5, "sample_every": 10,
         "checkpoint_every": 10, "perceptual_weight": 0.0, "adv_weight": 0.0, "amp": False}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 flat-coloured shapes with hard edges at 64 px: what bilinear upsampling blurs and a network can learn."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for i in range(160):
        image = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(0, 90, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = rng.integers(0, 48, 2)
            x1, y1 = x0 + rng.integers(8, 32), y0 + rng.integers(8, 32)
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=colour)
        image.save(root / f"shape{i:03d}.png")
    return root


def _tiny_face_weights(folder: Path, size: int = 16, seed: int = 0) -> Path:
    from animegan.weights import save_weights

    torch.manual_seed(seed)
    g = DCGANGenerator(DCGANConfig(image_size=size, latent_dim=16, width=8, upsample="resize"))
    from dataclasses import asdict

    return save_weights(folder / f"g{size}.safetensors", g.state_dict(),
                        {"architecture": "dcgan", "kind": "faces", "config": asdict(g.config)}, dtype=None)


def _args(data: Path, out: Path, steps: int, *extra: str, **config) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--steps", str(steps), "--config", json.dumps({**SMALL, **config}),
            "--quiet", *extra]


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------
def test_untrained_upscaler_is_bilinear_and_learns_only_a_residual() -> None:
    torch.manual_seed(0)
    net = FaceUpscaler(FaceUpscalerConfig(channels=8, blocks=2)).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(net(x), bilinear.clamp(-1, 1))
    with torch.no_grad():
        net.tail[0].weight.normal_(0, 0.5)
    out = net(x)
    assert out.shape == (2, 3, 32, 32)
    assert (out - bilinear).abs().max() > 0.1
    assert out.min() >= -1 and out.max() <= 1  # eval output stays in the generators' range
    assert net.train()(x).abs().max() > 1  # while training it is not clamped, so losses see the overshoot


def test_upscaled_generator_is_its_generator_then_its_upscaler() -> None:
    torch.manual_seed(1)
    g_cfg = DCGANConfig(image_size=16, latent_dim=12, width=8, upsample="resize")
    net = build_model("dcgan_upscaled", {"generator": vars(g_cfg), "upscaler": {"channels": 8, "blocks": 1}}).eval()
    assert isinstance(net, UpscaledFaceGenerator)
    assert (net.latent_dim, net.image_size) == (12, 32)
    z = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.equal(net(z), net.upscaler(net.generator(z)))
        assert torch.equal(net.early_features(z), net.generator.early_features(z))
    with pytest.raises(TypeError):
        UpscaledFaceGenerator(UpscaledFacesConfig(generator={"image_size": 16, "bogus": 1}))


def test_psnr_measures_8_bit_images() -> None:
    a = torch.full((1, 3, 4, 4), -1.0)
    assert psnr(a, a) > 100
    b = a + 2 / 255  # one 8-bit level everywhere: MSE 1
    assert psnr(a, b) == pytest.approx(20 * np.log10(255), abs=0.01)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "up"
    with pytest.MonkeyPatch.context() as mp:  # the held-out faces' statistics are cached: not in the user's cache
        mp.setenv("ANIMEGAN_CACHE", str(out.parent / "cache"))
        assert main(_args(shapes, out, 150, eval_every=150, eval_limit=16)) == 0
    return out


def test_training_beats_bilinear_on_held_out_shapes(trained: Path) -> None:
    run = RunFolder(trained)
    evaluated = [r for r in run.metrics() if "psnr" in r]
    assert [r["step"] for r in evaluated] == [150]
    last = evaluated[-1]
    # Held-out shapes (a tenth of the folder by name hash), never trained on.
    assert last["psnr"] > last["psnr_bilinear"] + 1.0, last
    assert "fid_real" in last and "fid" not in last  # no generator named: no sample FID
    losses = [r["loss_l1"] for r in run.metrics() if "loss_l1" in r]
    assert losses[-1] < 0.85 * losses[0]
    assert run.best_path.is_file() and run.read_status()["state"] == "finished"
    grid = Image.open(run.samples()[-1])
    assert grid.size[1] == 3 * 32  # rows: bilinear, upscaled, real
    assert run.read_config()["trainer"] == "face_upscaler"


def test_resume_gives_the_uninterrupted_weights(shapes: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(_args(shapes, straight, 20, adv_weight=0.01, perceptual_weight=0.01)) == 0
    assert main(_args(shapes, split, 10, adv_weight=0.01, perceptual_weight=0.01)) == 0
    assert RunFolder(split).read_config()["perceptual"] in ("inception", "vgg19")  # "auto", resolved
    # A resume keeps the run's config: another batch is refused; the same data written otherwise, or
    # "auto" for the perceptual network the run resolved, is not
    assert main(["--out", str(split), "--resume", "--steps", "20", "--batch", "3", "--quiet"]) == 2
    assert RunFolder(split).load_latest_checkpoint()["step"] == 10
    status = RunFolder(split).read_status()  # a bad interval is refused, and the run is not marked failed
    assert main(["--out", str(split), "--resume", "--steps", "20", "--config", '{"eval_every": -1}', "--quiet"]) == 2
    assert RunFolder(split).read_status() == status and status["state"] == "finished"
    # How often it logs and checkpoints may change (a long campaign reports less often), not what it computes.
    assert main(["--out", str(split), "--resume", "--steps", "20", "--data", str(shapes / ".." / shapes.name),
                 "--config", '{"perceptual": "auto", "log_every": 4, "checkpoint_every": 6}', "--quiet"]) == 0
    a, b = RunFolder(straight).load_latest_checkpoint(), RunFolder(split).load_latest_checkpoint()
    assert a["step"] == b["step"] == 20
    for part in ("U", "D"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert [r["step"] for r in RunFolder(straight).metrics()] == [5, 10, 15, 20]
    assert [r["step"] for r in RunFolder(split).metrics()] == [5, 10, 12, 16, 20]
    hours = [r["train_hours"] for r in RunFolder(split).metrics()]  # carried across the resumes
    assert hours[0] > 0 and hours == sorted(hours) and b["trained_s"] >= hours[-1] * 3600
    assert [p.name for p in RunFolder(split).checkpoints()][-2:] == ["step_00000018.pt", "step_00000020.pt"]
    config = RunFolder(split).read_config()
    assert (config["log_every"], config["checkpoint_every"], config["batch_size"]) == (4, 6, SMALL["batch_size"])


def test_export_pairs_the_generator_with_the_upscaler(trained: Path, tmp_path: Path, weights_dir: Path) -> None:
    from animegan.export import export_upscaled_faces
    from animegan.faces import FaceGenerator, face_weights
    from animegan.weights import load_weights

    g_path = _tiny_face_weights(tmp_path)
    path = export_upscaled_faces(trained, "faces32", generator=g_path)
    assert path == weights_dir / "faces32.safetensors"
    assert path.with_name("faces32.sliders.safetensors").is_file()
    assert "faces32" in face_weights()
    fg = FaceGenerator("faces32", device="cpu")
    assert (fg.image_size, fg.latent_dim) == (32, 16)
    face = fg.face(7)
    assert face.size == (32, 32)
    # The same face as the 16 px generator's, upscaled by the run's best upscaler.
    g = FaceGenerator(g_path, device="cpu").net
    up = FaceUpscaler(FaceUpscalerConfig(channels=16, blocks=2))
    up.load_state_dict(RunFolder(trained).load_best()["U"])
    with torch.no_grad():
        expected = up.eval()(g(fg.latent(7)[None]))
    got = torch.from_numpy(np.array(face)).permute(2, 0, 1).float() / 127.5 - 1
    assert (got - expected[0]).abs().max() <= 1.5 / 127.5  # fp16 storage and 8-bit rounding
    meta = load_weights(path).metadata
    assert meta["architecture"] == "dcgan_upscaled" and meta["training_data"]["upscaler"]["step"] == 150
    assert fg.grid(range(4)).size[0] > 64 and fg.interpolate([1, 2], 0.5).size == (32, 32)
    fg.sliders  # computed from the 16 px generator's stem, as for any face model


def test_a_shipped_upscaler_pairs_with_another_generator(trained: Path, tmp_path: Path, weights_dir: Path) -> None:
    """Without its run folder, a 128 px model's upscaler goes with a better generator: the same file as
    exporting that pair from the run, less the old pair's FID."""
    from animegan.export import export_upscaled_faces, pair_upscaled_faces, training_history
    from animegan.faces import FaceGenerator
    from animegan.weights import load_weights, read_metadata, update_metadata

    shipped = export_upscaled_faces(trained, "shipped", generator=_tiny_face_weights(tmp_path / "a"))
    update_metadata(shipped, {"metrics": {**read_metadata(shipped)["metrics"], "fid": 50.0, "kid": 0.04}})
    better = _tiny_face_weights(tmp_path / "b", seed=1)
    update_metadata(better, {"steps": 900, "images_seen": 57600, "train_hours": 2.5})
    paired = pair_upscaled_faces("shipped", better, "paired")
    direct = export_upscaled_faces(trained, "direct", generator=better)
    got, want = load_weights(paired), load_weights(direct)
    assert got.state_dict.keys() == want.state_dict.keys()
    assert all(torch.equal(v, want.state_dict[k]) for k, v in got.state_dict.items())
    assert got.metadata["config"] == want.metadata["config"]
    assert got.metadata["training_data"] == want.metadata["training_data"]
    assert set(got.metadata["metrics"]) == {"fid_real", "psnr"}  # the 50.0 measured the old generator's faces
    # Both stages' training counts: the generator's, then the upscaler's 150 steps of SMALL's batch.
    upscaler_hours = RunFolder(trained).load_best()["trained_s"] / 3600
    assert got.metadata["steps"] == 900 and got.metadata["images_seen"] == 57600 + 150 * SMALL["batch_size"]
    assert got.metadata["train_hours"] == pytest.approx(2.5 + upscaler_hours, abs=1e-5) and upscaler_hours > 0
    assert {k: got.metadata[k] for k in ("steps", "images_seen", "train_hours")} == \
        {k: want.metadata[k] for k in ("steps", "images_seen", "train_hours")}
    # What the pair says of its 64 px stage (a warm start from it, a new pair on it) is that stage's own
    stage = training_history("paired", got.metadata)
    assert (stage["steps"], stage["images"]) == (900, 57600) and stage["hours"] == pytest.approx(2.5, abs=1e-5)
    assert np.array_equal(np.array(FaceGenerator(paired, device="cpu").face(5)),
                          np.array(FaceGenerator(direct, device="cpu").face(5)))
    # The shipped name can be written over with its own upscaler (the recipe's command)
    assert pair_upscaled_faces("paired", better, "paired") == paired
    assert all(torch.equal(v, want.state_dict[k]) for k, v in load_weights(paired).state_dict.items())
    with pytest.raises(AnimeGANError, match="holds no upscaler"):
        pair_upscaled_faces(better, better, "nope")
    with pytest.raises(AnimeGANError, match="makes 32 px faces"):
        pair_upscaled_faces(paired, _tiny_face_weights(tmp_path / "c", 32), "nope")


def test_training_with_a_generator_measures_its_upscaled_samples(shapes: Path, tmp_path: Path, weights_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    g_path = _tiny_face_weights(tmp_path)
    out = tmp_path / "run"
    assert main(_args(shapes, out, 4, "--generator", str(g_path), "--export", "mine", eval_every=4,
                      eval_samples=12, eval_limit=8, perceptual_weight=0.01, adv_weight=0.01)) == 0
    record = [r for r in RunFolder(out).metrics() if "fid" in r][-1]
    assert record["fid"] > 0 and np.isfinite(record["kid"]) and record["loss_perceptual"] > 0
    assert (out / "checkpoints" / "best.pt").is_file()
    grid = Image.open(RunFolder(out).samples()[-1])
    assert grid.size[1] == 5 * 32  # and the generator's faces, bilinear and upscaled
    from animegan.faces import FaceGenerator

    assert FaceGenerator(weights_dir / "mine.safetensors", device="cpu").face(3).size == (32, 32)
    from animegan.export import export_upscaled_faces
    from animegan.weights import read_metadata

    # The run's FID measured this generator's samples, so its export carries them; paired with another
    # generator, the export keeps only what measured the upscaler alone.
    assert RunFolder(out).read_config()["generator"] == str(g_path.resolve())
    assert read_metadata(weights_dir / "mine.safetensors")["metrics"]["fid"] == pytest.approx(record["fid"])
    other = export_upscaled_faces(out, "other", generator=_tiny_face_weights(tmp_path / "o", seed=1))
    assert set(read_metadata(other)["metrics"]) == {"fid_real", "psnr"}
    # The same file exported again with other weights is another generator too, and a resume refuses
    # it (its FIDs would mix two generators); an edit of its metadata alone changes neither.
    from animegan.weights import update_metadata

    update_metadata(g_path, {"description": "edited"})
    assert "fid" in read_metadata(export_upscaled_faces(out, "edited"))["metrics"]
    _tiny_face_weights(tmp_path, seed=2)  # over g_path
    assert set(read_metadata(export_upscaled_faces(out, "again"))["metrics"]) == {"fid_real", "psnr"}
    assert main(["--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 2
    assert "changed since this run started" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------
def test_bad_input_gets_one_line(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g16 = _tiny_face_weights(tmp_path, 16)
    g32 = _tiny_face_weights(tmp_path, 32)
    assert main(_args(shapes, tmp_path / "a", 2, "--export", "x")) == 2
    assert "pass --generator" in capsys.readouterr().err
    assert main(_args(shapes, tmp_path / "b", 2, "--generator", str(g32))) == 2
    assert "makes 32 px faces" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before the run folder is made
    assert main(_args(shapes, tmp_path / "c", 2, "--init-from", str(g16))) == 2
    assert "holds no upscaler" in capsys.readouterr().err
    assert main(_args(tmp_path / "missing", tmp_path / "d", 2)) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["--data", str(shapes), "--out", str(tmp_path / "e"), "--config", '{"blocks": -1}', "--quiet"]) == 2
    assert "at least" in capsys.readouterr().err
    assert main(_args(shapes, tmp_path / "f", 2, size=24)) == 2
    assert "power of two" in capsys.readouterr().err
    for bad, message in (({"size": 1024}, "power of two"), ({"log_every": 0}, "at least 1"),
                         ({"eval_samples": 1}, "at least 2"), ({"lr": 0}, "lr must be positive")):
        assert main(_args(shapes, tmp_path / "g", 2, **bad)) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "g").exists()


def test_unreadable_held_out_faces_are_skipped(tmp_path: Path) -> None:
    """A broken file among the held-out faces (sample grid, evaluation) is skipped, not a crash."""
    import shutil

    from train.splits import is_eval

    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(1)
    names = [f"face_{i:03d}.png" for i in range(60)]
    broken = [n for n in names if is_eval(n)][0]
    for name in names:
        if name == broken:
            (data / name).write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / name)
    out = tmp_path / "run"
    assert main(_args(data, out, 4, eval_every=4, eval_limit=8)) == 0
    record = [r for r in RunFolder(out).metrics() if "psnr" in r][-1]
    assert np.isfinite(record["psnr"]) and np.isfinite(record["fid_real"])
    shutil.rmtree(out)


def test_a_nested_implausible_config_is_refused_before_building(tmp_path: Path) -> None:
    from animegan.weights import LoadedWeights, build_from_weights

    meta = {"architecture": "dcgan_upscaled", "kind": "faces",
            "config": {"generator": {"image_size": 64}, "upscaler": {"blocks": 10**7}}}
    with pytest.raises(AnimeGANError, match=r"upscaler\.blocks"):
        build_from_weights(LoadedWeights("x.safetensors", {}, meta))
