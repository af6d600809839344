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
from conftest import REPO, gradient_image


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


def test_stylize_cli_fp32_flag_sets_full_precision(style: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from animegan.cli import main

    monkeypatch.delenv(policy.PRECISION_ENV, raising=False)
    src = tmp_path / "in.png"
    Image.fromarray(gradient_image(40, 30)).save(src)
    assert main(["stylize", str(src), "-o", str(tmp_path / "out.png"), "--style", style, "--fp32"]) == 0
    assert policy.inference_dtype(torch.device("cpu")) == torch.float32
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (40, 30)


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
