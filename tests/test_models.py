"""The networks: the community AnimeGANv2 format and computation, v3 tails, discriminators."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from animegan.models import build_model
from conftest import make_v2_generator

KEYS = json.loads((Path(__file__).parent / "data" / "animegan_v2_community_keys.json").read_text())


def test_v2_state_dict_is_the_community_format() -> None:
    sd = build_model("animeganv2").state_dict()
    assert list(sd) == list(KEYS)
    assert {k: list(v.shape) for k, v in sd.items()} == KEYS
    params = sum(v.numel() for v in sd.values())
    assert 2_100_000 < params < 2_200_000


def _reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The community AnimeGANv2 computation written out from the state dict alone."""

    def cnl(prefix: str, h: torch.Tensor, k: int, stride: int = 1, groups: int = 1, pad: tuple | None = None) -> torch.Tensor:
        p = pad if pad is not None else (k // 2,) * 4
        h = F.pad(h, p, mode="reflect")
        h = F.conv2d(h, sd[f"{prefix}.1.weight"], sd.get(f"{prefix}.1.bias"), stride=stride, groups=groups)
        h = F.group_norm(h, 1, sd[f"{prefix}.2.weight"], sd[f"{prefix}.2.bias"], eps=1e-5)
        return F.leaky_relu(h, 0.2)

    def irb(prefix: str, h: torch.Tensor) -> torch.Tensor:
        hidden = sd[f"{prefix}.layers.0.1.weight"].shape[0]
        out = cnl(f"{prefix}.layers.0", h, 1)
        out = cnl(f"{prefix}.layers.1", out, 3, groups=hidden)
        out = F.conv2d(out, sd[f"{prefix}.layers.2.weight"])
        out = F.group_norm(out, 1, sd[f"{prefix}.layers.3.weight"], sd[f"{prefix}.layers.3.bias"], eps=1e-5)
        return h + out if h.shape == out.shape else out

    same = (0, 1, 0, 1)
    h = cnl("block_a.0", x, 7)
    h = cnl("block_a.1", h, 3, stride=2, pad=same)
    h = cnl("block_a.2", h, 3)
    half = h.shape[-2:]
    h = cnl("block_b.0", h, 3, stride=2, pad=same)
    h = cnl("block_b.1", h, 3)
    h = cnl("block_c.0", h, 3)
    for i in range(1, 5):
        h = irb(f"block_c.{i}", h)
    h = cnl("block_c.5", h, 3)
    h = F.interpolate(h, size=half, mode="bilinear", align_corners=True)
    h = cnl("block_d.0", h, 3)
    h = cnl("block_d.1", h, 3)
    h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=True)
    h = cnl("block_e.0", h, 3)
    h = cnl("block_e.1", h, 3)
    h = cnl("block_e.2", h, 7)
    return torch.tanh(F.conv2d(h, sd["out_layer.0.weight"]))


@pytest.mark.parametrize("size", [(64, 64), (67, 45), (33, 90)])
def test_v2_matches_the_reference_computation(size: tuple[int, int]) -> None:
    model = make_v2_generator(seed=3)
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        ours = model(x)
        ref = _reference_forward(model.state_dict(), x)
    assert ours.shape == x.shape
    assert torch.allclose(ours, ref, atol=1e-5)
    assert ours.std() > 0.01  # a real picture, not a constant


def test_v3_inference_runs_the_main_tail_only() -> None:
    torch.manual_seed(0)
    model = build_model("animeganv3").eval()
    x = torch.rand(1, 3, 50, 37) * 2 - 1
    with torch.no_grad():
        support, main = model.forward_both(x)
        out = model(x)
    assert out.shape == support.shape == x.shape
    assert torch.equal(out, main)
    assert not torch.allclose(support, main)  # two different tails
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("spectral", [True, False])
def test_patch_discriminator(spectral: bool) -> None:
    d = build_model("patch_discriminator", {"spectral_norm": spectral})
    out = d(torch.rand(2, 3, 64, 48) * 2 - 1)
    assert out.shape == (2, 1, 16, 12)
    has_sn = any("parametrizations" in name for name, _ in d.named_parameters())
    assert has_sn == spectral


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown animeganv2 config keys"):
        build_model("animeganv2", {"widht": 3})
