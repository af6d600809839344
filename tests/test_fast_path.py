"""The fast paths give the same pictures as the plain path (speed itself is measured in bench/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from animegan import device as policy
from animegan.models import build_model
from animegan.models.flops import conv_flops
from animegan.stylize import Stylizer
from conftest import REPO, gradient_image, needs_cxx


def _photo(size: int = 256) -> np.ndarray:
    from PIL import Image

    with Image.open(REPO / "examples" / "astronaut.jpg") as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))


def _plain(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The community way: float32, NCHW, eager."""
    with torch.inference_mode():
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        y = model.float()(x)[0].clamp(-1, 1)
    return ((y + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_bf16_channels_last_stylizer_is_within_2_of_255_of_plain_fp32(style: str) -> None:
    fast = Stylizer(style, device="cpu", half=True)
    assert fast.dtype == torch.bfloat16
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = Stylizer(style, device="cpu", half=False).model  # the same weights, rebuilt
    image = _photo()
    reference = _plain(plain, image)
    out = fast.run_arrays([image])[0]
    diff = np.abs(out.astype(np.int16) - reference.astype(np.int16))
    assert reference.std() > 5  # a picture, not a flat field: the comparison means something
    assert diff.mean() <= 2.0
    assert 0 < diff.max()  # it really ran in another precision


def test_policy_picks_bf16_only_where_the_cpu_has_it(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    auto = Stylizer(style, device="cpu")
    assert auto.dtype == (torch.bfloat16 if policy.cpu_has_native_bf16() else torch.float32)
    monkeypatch.setenv(policy.PRECISION_ENV, "fp32")
    forced = Stylizer(style, device="cpu")
    assert forced.dtype == torch.float32
    image = gradient_image(64, 48)
    reference = _plain(forced.model, image)
    assert np.abs(forced.run_arrays([image])[0].astype(np.int16) - reference).max() <= 1  # NHWC vs NCHW sums


def test_stylize_cli_fp32_flag_runs_full_precision_and_leaves_the_policy_alone(
        style: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from PIL import Image

    from animegan.cli import main

    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    image = _photo(96)
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    assert main(["stylize", str(src), "-o", str(tmp_path / "out.png"), "--style", style, "--fp32"]) == 0
    with Image.open(tmp_path / "out.png") as im:
        written = np.asarray(im.convert("RGB"))
    full = np.asarray(Stylizer(style, device="cpu", half=False)(image))
    assert np.array_equal(written, full)  # the float32 network made it, bit for bit
    if policy.cpu_has_native_bf16():  # and it is not what the default (bf16) path gives here
        assert not np.array_equal(written, np.asarray(Stylizer(style, device="cpu")(image)))
    # The flag is passed down, not written into the process: the policy is the same after it.
    assert policy.PRECISION_ENV not in os.environ
    expected = torch.bfloat16 if policy.cpu_has_native_bf16() else torch.float32
    assert policy.inference_dtype(torch.device("cpu")) == expected


def test_tiled_bf16_matches_tiled_fp32(style: str) -> None:
    """Tiles lock the norm statistics of the whole image; that holds in bf16 as in fp32."""
    image = _photo(200)
    reference = Stylizer(style, device="cpu", half=False).run_arrays([image], tile=64)[0]
    tiled = Stylizer(style, device="cpu", half=True).run_arrays([image], tile=64)[0]
    assert np.abs(tiled.astype(np.int16) - reference).mean() <= 2.0


def test_face_generator_stays_fp32_on_cpu_and_matches_the_plain_net() -> None:
    from animegan.faces import FaceGenerator, latent_for_seed
    from animegan.models.dcgan import DCGANGenerator, variant_configs

    torch.manual_seed(0)
    net = DCGANGenerator(variant_configs("dcgan_improved", 64, g_width=16)[0]).eval()
    with torch.inference_mode():
        plain = net(latent_for_seed(3, net.latent_dim)[None])
    fg = FaceGenerator(net, device="cpu")
    assert fg.dtype == torch.float32
    face = np.asarray(fg.face(3), dtype=np.int16)
    expected = ((plain[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(face - expected).max() <= 1


# -- torch.compile, opt-in for fixed-size work such as video ---------------------------------

@needs_cxx
@pytest.mark.parametrize("half", [False, None], ids=["fp32", "policy"])
def test_compiled_stylizer_gives_the_eager_frames_and_pads_a_short_batch_instead_of_recompiling(
        style: str, half: bool | None) -> None:
    from torch._dynamo.utils import counters

    frames = [gradient_image(64, 48, seed=i) for i in range(5)]  # test_video's clip size
    eager = Stylizer(style, device="cpu", half=half)
    compiled = Stylizer(style, device="cpu", half=half, compile_mode="default")
    assert compiled.dtype == eager.dtype
    torch._dynamo.reset()  # an earlier test's graph of the same shape and dtype would be reused uncounted
    counters.clear()
    outs = compiled.run_arrays(frames[:3]) + compiled.run_arrays(frames[3:])  # a full batch, then a short one
    assert compiled.compile_error is None and compiled._compiled is not None
    assert counters["stats"]["unique_graphs"] == 1  # it really ran compiled, and the short batch reused the graph
    expected = eager.run_arrays(frames[:3]) + eager.run_arrays(frames[3:])
    assert len(outs) == 5
    if eager.dtype == torch.float32:
        for out, ref in zip(outs, expected):
            assert out.shape == ref.shape
            assert np.abs(out.astype(np.int16) - ref).max() <= 1  # fused kernels sum in another order
        return
    # bf16: fused kernels round at other points than the eager ops (0.4/255 apart on average).
    # Both approximate the float32 network; the compiled one may be no further from it.
    full = Stylizer(style, device="cpu", half=False)
    truth = np.stack(full.run_arrays(frames[:3]) + full.run_arrays(frames[3:])).astype(np.int16)
    compiled_error, eager_error = np.abs(np.stack(outs) - truth), np.abs(np.stack(expected) - truth)
    assert eager_error.mean() > 0  # bf16 really ran: the bound below is not 0 <= 0
    assert compiled_error.mean() <= 1.25 * eager_error.mean() + 0.1
    assert compiled_error.max() <= 2 * eager_error.max()


def test_a_compile_failure_falls_back_to_eager_and_says_so(style: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.config as inductor_config

    # A real failure: inductor has no C++ compiler to build its kernels with (and no cache to skip it).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(tmp_path / "no-such-c++"),))
    torch._dynamo.reset()
    frame = gradient_image(36, 28)
    stylizer = Stylizer(style, device="cpu", half=False, compile_mode="default")
    out = stylizer.run_arrays([frame])[0]
    torch._dynamo.reset()
    assert stylizer.compile_error is not None and "torch.compile failed" in stylizer.compile_error
    reference = Stylizer(style, device="cpu", half=False).run_arrays([frame])[0]
    assert np.array_equal(out, reference)  # the eager network did the work
    assert np.array_equal(stylizer.run_arrays([frame])[0], reference)  # and keeps doing it


def test_video_cli_refuses_an_unknown_compile_mode(style: str, tmp_path: Path, capsys) -> None:
    from animegan.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["video", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), "--compile", "fastest"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
    from animegan.errors import AnimeGANError

    with pytest.raises(AnimeGANError, match="unknown compile mode 'fastest'"):
        policy.compile_network(torch.nn.Identity(), "fastest")


@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_slim_generator_keeps_the_keys_and_sizes_with_over_4x_fewer_flops(size: tuple[int, int]) -> None:
    full = build_model("animeganv2")
    slim = build_model("animeganv2", {"width": 0.45})
    assert list(full.state_dict()) == list(slim.state_dict())
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in full.parameters()) / 4
    assert conv_flops(full, size) / conv_flops(slim, size) >= 4.0
    with torch.inference_mode():
        assert slim(torch.zeros(1, 3, *size)).shape == (1, 3, *size)
    with pytest.raises(ValueError):
        build_model("animeganv2", {"width": 0})


# -- the trainers' fast path (train/precision.py) ---------------------------------------------

def test_train_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from train import precision as tp

    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(tp, "cpu_has_native_bf16", lambda native=native: native)
        fast = tp.train_precision(cpu)
        assert fast.dtype == (torch.bfloat16 if native else None)
        assert fast.memory_format == torch.channels_last
    assert tp.train_precision(cpu).describe() == "fp32, channels_last"
    monkeypatch.setattr(tp, "cpu_has_native_bf16", lambda: True)
    assert tp.train_precision(cpu).describe() == "bf16 autocast, channels_last"
    assert tp.train_precision(cpu, amp=False, channels_last=False).describe() == "fp32, NCHW"
    assert tp.train_precision(torch.device("mps")).describe() == "fp32, NCHW"  # untried there: the plain way
    monkeypatch.setenv(policy.PRECISION_ENV, "fp32")
    assert tp.train_precision(cpu).dtype is None
    monkeypatch.delenv(policy.PRECISION_ENV)
    conv = torch.nn.Conv2d(3, 4, 3)
    with tp.train_precision(cpu).autocast():
        assert conv(torch.zeros(1, 3, 8, 8)).dtype == torch.bfloat16
    assert not tp.train_precision(cpu).needs_grad_scaler


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


@pytest.mark.parametrize("recipe", ["v2", "v3"])
def test_style_trainer_fast_step_computes_the_plain_step(recipe: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights, same batch: bf16 channels_last gives the fp32 NCHW losses and gradients, up to rounding."""
    from PIL import Image

    from train import precision as tp
    from train.animegan import StyleTrainConfig, StyleTrainer

    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    monkeypatch.setattr(tp, "cpu_has_native_bf16", lambda: True)  # bf16 on any CPU (emulated where not native)
    data = tmp_path / "ds"
    for kind in ("real_images", "anime_images"):
        (data / kind).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(gradient_image(40, 40, seed=i + (9 if kind == "anime_images" else 0))).save(
                data / kind / f"{i}.png")
    steps = {}
    for way, fast in (("plain", False), ("layout", None), ("fast", True)):
        cfg = StyleTrainConfig.from_dict(dict(
            data=str(data), recipe=recipe, size=32, batch=2, init_steps=0, d_every=1, val_photos=1,
            perceptual_min_side=64, superpixels=16, amp=bool(fast), channels_last=fast is not False))
        trainer = StyleTrainer(cfg, tmp_path / way, quiet=True)
        assert trainer.precision.describe() == {"plain": "fp32, NCHW", "layout": "fp32, channels_last",
                                                "fast": "bf16 autocast, channels_last"}[way]
        conv = next(m for m in trainer.generator.modules()
                    if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (fast is not False)
        losses = trainer.train_step(0)  # a D update, then G's losses and gradients
        grads = torch.cat([p.grad.flatten() for p in trainer.generator.parameters()])
        steps[way] = losses, grads
    plain_losses, plain_grads = steps["plain"]
    for way, tolerance, min_cosine in (("layout", 1e-4, 0.999), ("fast", 5e-2, 0.75)):
        losses, grads = steps[way]
        for name, value in plain_losses.items():
            assert value == pytest.approx(losses[name], rel=tolerance, abs=1e-3), (way, name)
        assert _cosine(plain_grads, grads) > min_cosine, way
    assert _cosine(plain_grads, steps["fast"][1]) < 0.99999  # it really ran in bf16


def test_face_trainer_fast_path_trains_like_the_plain_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from train import precision as tp
    from animegan.runs import RunFolder
    from train.faces import FaceTrainConfig, train

    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    monkeypatch.setattr(tp, "cpu_has_native_bf16", lambda: True)
    data = tmp_path / "faces"
    data.mkdir()
    for i in range(8):
        Image.fromarray(gradient_image(32, 32, seed=i)).save(data / f"{i}.png")
    runs = {}
    for fast in (False, True):
        cfg = FaceTrainConfig(data=str(data), arch="dcgan_improved", image_size=32, g_width=8, d_width=8, batch_size=8,
                              steps=2, log_every=1, sample_count=4, amp=fast, channels_last=fast)
        train(cfg, tmp_path / f"run{fast}", device="cpu", verbose=False)
        runs[fast] = RunFolder(tmp_path / f"run{fast}")
    assert runs[True].read_status()["precision"] == "bf16 autocast, channels_last"
    assert runs[False].read_status()["precision"] == "fp32, NCHW"
    for plain, fast in zip(runs[False].metrics(), runs[True].metrics(), strict=True):
        assert fast["loss_D"] == pytest.approx(plain["loss_D"], rel=1e-2)
        assert fast["loss_G"] == pytest.approx(plain["loss_G"], rel=1e-2, abs=2e-3)
    grids = [np.asarray(Image.open(r.samples()[-1]), dtype=np.int16) for r in (runs[False], runs[True])]
    assert grids[0].std() > 1  # generated pictures, not a flat field
    assert np.abs(grids[0] - grids[1]).mean() <= 2.0


def test_trainer_cli_fp32_flag_trains_the_plain_precision(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from animegan.runs import RunFolder
    from train.faces import main

    data = tmp_path / "faces"
    data.mkdir()
    for i in range(4):
        Image.fromarray(gradient_image(16, 16, seed=i)).save(data / f"{i}.png")
    config = json.dumps({"image_size": 16, "g_width": 4, "d_width": 4, "batch_size": 4, "sample_count": 4})
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), "--steps", "1", "--config", config, "--fp32",
                 "--device", "cpu", "--quiet"]) == 0
    run = RunFolder(out)
    assert run.read_config()["amp"] is False
    assert run.read_status()["precision"] == "fp32, channels_last"
