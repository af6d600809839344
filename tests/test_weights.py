"""Loading weights: community .pt layouts, safetensors with metadata, presets, and refusals."""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from animegan import AnimeGANError, load_generator
from animegan.weights import (available_styles, default_style, fetch_preset, load_weights, offline_styles,
                              read_metadata, save_weights, style_for_mode)
from conftest import make_v2_generator

X = torch.rand(1, 3, 40, 56) * 2 - 1


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a(X), b(X), atol=1e-6)


def test_community_pt_loads_unchanged_and_gives_the_same_output(tmp_path: Path) -> None:
    model = make_v2_generator(seed=1)
    path = tmp_path / "face_paint.pt"
    torch.save(model.state_dict(), path)
    loaded = load_generator(path)
    assert not loaded.training
    assert _same_output(model, loaded)


@pytest.mark.parametrize("layout", ["module_prefix", "model_state_dict", "renamed_keys"])
def test_other_port_layouts_load(tmp_path: Path, layout: str) -> None:
    model = make_v2_generator(seed=2)
    sd = model.state_dict()
    if layout == "module_prefix":
        obj = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    elif layout == "model_state_dict":
        obj = {"model_state_dict": sd, "epoch": 7}
    else:  # another port's names, same tensor order
        obj = OrderedDict((f"net.layer{i}.param", v) for i, v in enumerate(sd.values()))
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    assert _same_output(model, load_generator(path))


class _Evil:
    def __reduce__(self):  # noqa: D105 - the payload a malicious checkpoint would carry
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"block_a.0.1.weight": torch.zeros(1), "payload": evil}, path)
    with pytest.raises(AnimeGANError, match="refused"):
        load_generator(path)
    assert not marker.exists()


def test_truncated_empty_and_foreign_files_get_one_line_messages(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(make_v2_generator().state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    for path, words in [(truncated, "truncated or damaged"), (empty, "empty file"),
                        (text, "not a readable safetensors"), (other, "not an AnimeGANv2 generator"),
                        (tmp_path / "missing.pt", "unknown style or missing file"), (tmp_path, "is a folder")]:
        with pytest.raises(AnimeGANError) as info:
            load_generator(path)
        message = str(info.value)
        assert words in message and "\n" not in message
        assert path.name in message


def test_safetensors_with_wrong_shapes_names_the_tensor(weights_dir: Path) -> None:
    sd = make_v2_generator().state_dict()
    sd["block_b.0.1.weight"] = torch.zeros(64, 64, 3, 3)
    save_weights(weights_dir / "bad.safetensors", sd, {"architecture": "animeganv2"})
    with pytest.raises(AnimeGANError, match=r"block_b\.0\.1\.weight.*\(64, 64, 3, 3\)"):
        load_generator("bad")


def test_project_weights_round_trip_with_metadata(weights_dir: Path) -> None:
    model = make_v2_generator(seed=4)
    save_weights(weights_dir / "mine.safetensors", model.state_dict(),
                 {"architecture": "animeganv2", "description": "mine", "metrics": {"style_fid": 12.5}}, dtype=None)
    meta = json.loads((weights_dir / "mine.json").read_text())
    assert meta["kind"] == "style" and meta["metrics"]["style_fid"] == 12.5
    assert "mine" in available_styles() and available_styles()[0] == "mine"
    assert offline_styles() == ["mine"]
    assert _same_output(model, load_generator("mine"))
    # A lone file (no sidecar) still knows its architecture from its header.
    (weights_dir / "mine.json").unlink()
    assert read_metadata(weights_dir / "mine.safetensors")["architecture"] == "animeganv2"
    assert _same_output(model, load_generator(str(weights_dir / "mine.safetensors")))


def test_fp16_weights_stay_close(weights_dir: Path) -> None:
    model = make_v2_generator(seed=5)
    path = save_weights(weights_dir / "half.safetensors", model.state_dict(), {"architecture": "animeganv2"})
    assert path.stat().st_size < 5_000_000  # 2.14 M parameters in fp16
    with torch.no_grad():
        assert (model(X) - load_generator("half")(X)).abs().max() < 0.02


def test_no_styles_offline_says_so(weights_dir: Path) -> None:
    with pytest.raises(AnimeGANError, match="no anime style is available offline"):
        load_generator(None)


def test_portrait_mode_has_its_own_default_style(weights_dir: Path) -> None:
    def ship(name: str, preset: str | None, seed: int) -> None:
        meta = {"architecture": "animeganv2", "kind": "style", **({"preset": preset} if preset else {})}
        save_weights(weights_dir / f"{name}.safetensors", make_v2_generator(seed).state_dict(), meta)

    ship("b-scenery", "scenery", 1)
    # No portrait style: portrait mode falls back to the default, and a menu has nothing to switch.
    assert default_style() == default_style(portrait=True) == "b-scenery"
    assert style_for_mode("b-scenery", True) == "b-scenery"
    ship("a-portrait", "portrait", 2)
    assert offline_styles() == ["b-scenery", "a-portrait"]  # general styles listed first, then portrait ones
    assert default_style() == "b-scenery" and default_style(portrait=True) == "a-portrait"
    # A menu on one mode's default follows the mode; a style the user picked stays.
    assert style_for_mode("b-scenery", True) == "a-portrait" and style_for_mode("a-portrait", False) == "b-scenery"
    assert style_for_mode(None, True) == "a-portrait"
    ship("c-other", None, 3)
    assert offline_styles() == ["b-scenery", "c-other", "a-portrait"]
    assert style_for_mode("c-other", True) == "c-other" and style_for_mode("c-other", False) == "c-other"
    # Only portrait styles: they are the default for everything.
    for name in ("b-scenery", "c-other"):
        (weights_dir / f"{name}.safetensors").unlink()
    assert default_style() == default_style(portrait=True) == "a-portrait"


def test_preset_download_is_validated_cached_and_refetched_when_damaged(weights_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANIMEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = make_v2_generator(seed=6)
    served = tmp_path / "served.pt"  # what the 'server' has, reached through a file:// URL
    torch.save(model.state_dict(), served)
    url = served.as_uri()
    cached = fetch_preset("paprika", url=url)
    assert cached.is_file() and cached.with_suffix(".sha256").is_file()
    assert _same_output(model, load_generator("paprika"))  # now offline-usable from the cache
    assert "paprika" in offline_styles()
    # Damage the cached copy: it is detected, dropped and fetched again, never loaded.
    cached.write_bytes(cached.read_bytes()[:1000])
    again = fetch_preset("paprika", url=url)
    assert again.read_bytes() == served.read_bytes()
    # A broken download is never cached.
    cached.unlink()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(served.read_bytes()[:5000])
    with pytest.raises(AnimeGANError):
        fetch_preset("paprika", url=broken.as_uri())
    assert not cached.exists()
    assert not [p for p in cached.parent.iterdir() if p.suffix == ".pt"]


def test_offline_mode_refuses_to_download(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANIMEGAN_OFFLINE", "1")
    with pytest.raises(AnimeGANError, match="not cached and downloads are off"):
        load_weights("face_paint_512_v2")


def test_community_safetensors_without_our_metadata_is_recognised_by_its_keys(tmp_path: Path,
                                                                               weights_dir: Path) -> None:
    from safetensors.torch import save_file

    model = make_v2_generator(seed=5)
    converted = weights_dir / "paprika-converted.safetensors"  # as a Hub conversion of the community .pt
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(converted))
    assert _same_output(model, load_generator(converted))
    assert "paprika-converted" in available_styles()  # dropped in weights/, it is listed like a style
    meta = read_metadata(converted)
    assert meta["architecture"] == "animeganv2" and meta["config"]["align_corners"] is True

    for name, tensors in [("one-missing", dict(list(model.state_dict().items())[1:])),
                          ("wrong-shape", {**model.state_dict(), "block_a.0.1.weight": torch.zeros(1)}),
                          ("foreign", {"conv.weight": torch.zeros(3, 3)})]:
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        with pytest.raises(AnimeGANError, match="not the community AnimeGANv2 layout") as info:
            load_generator(path)
        assert "\n" not in str(info.value)
