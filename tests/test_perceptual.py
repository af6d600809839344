"""The perceptual network: VGG19 conv4_4 when its weights are on the machine, else the offline Inception."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from animegan.errors import AnimeGANError
from train.perceptual import FEATURE_SCALES, Perceptual, vgg19_weights_path


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_without_vgg_weights_auto_is_inception_and_vgg_is_refused(torch_home: Path) -> None:
    assert not vgg19_weights_path().exists()
    assert Perceptual("auto").kind == "inception"
    with pytest.raises(AnimeGANError, match="VGG19 weights are not on this machine"):
        Perceptual("vgg19")


def test_vgg_weights_on_disk_are_used_for_auto(torch_home: Path) -> None:
    """Weights in torchvision's cache file (random here, nothing downloads) make 'auto' pick VGG19 conv4_4."""
    from torchvision.models import vgg19

    torch.manual_seed(0)
    reference = vgg19(weights=None).eval()
    path = vgg19_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    net = Perceptual("auto")
    assert net.kind == "vgg19" and net.name == "vgg19_conv4_4"
    x = torch.rand(2, 3, 128, 96) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.features[:26](((x + 1) / 2 - mean) / std) * FEATURE_SCALES["vgg19"]
        got = net(x)
    assert got.shape == (2, 512, 16, 12)  # conv4_4: 512 channels at 1/8 of the input
    assert torch.allclose(got, expected, atol=1e-4)

    path.write_bytes(path.read_bytes()[:1000])  # a damaged download: said plainly, no silent fallback
    with pytest.raises(AnimeGANError, match="unreadable VGG19 weights"):
        Perceptual("auto")


def test_inception_loads_without_the_torchscript_deprecation_warning() -> None:
    import warnings

    from animegan.inception import _load, inception_path

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from the load fails the test
        model = _load.__wrapped__(str(inception_path()), "cpu")
    assert not any(p.requires_grad for p in model.parameters())
