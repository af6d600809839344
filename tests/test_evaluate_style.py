"""The style evaluation: style FID/KID against an anime set, content kept, the photo baseline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan.metrics import compare
from animegan.weights import read_metadata, update_metadata
from conftest import gradient_image, make_v2_generator
from train.evaluate_style import evaluate_style, main


def _folder(root: Path, count: int, seed: int, anime: bool = False) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        img = gradient_image(112, 96, seed=seed + i)
        if anime:  # flat posterised colours: a different distribution from the photos
            img = (img // 64 * 64 + 32).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:02d}.png")
    return root


def test_figures_for_style_and_baseline(style: str, tmp_path: Path) -> None:
    photos = _folder(tmp_path / "photos", 6, seed=0)
    anime = _folder(tmp_path / "anime", 6, seed=100, anime=True)
    result = evaluate_style(style, photos, anime, device="cpu", samples=tmp_path / "pairs.png")
    assert result["photos"] == 6 and result["anime"] == 6
    # The baseline is the untouched photos: the same figure compare() gives for the folder itself.
    assert result["baseline"]["fid"] == pytest.approx(compare(photos, anime, device="cpu")["fid"], rel=1e-4)
    assert result["baseline"]["content"] == 0.0
    # Random weights change the pictures arbitrarily, so only that both distances are real is checked.
    assert result["stylized"]["content"] > 0 and result["content_unrelated"] > 0
    assert result["stylized"]["fid"] != pytest.approx(result["baseline"]["fid"])
    assert result["fid_reduction"] == pytest.approx(1 - result["stylized"]["fid"] / result["baseline"]["fid"])
    # The stylized figures are those of the style's pictures: each photo stylized through the public
    # API, written as PNG (lossless) and measured as a plain folder against the anime set.
    from animegan import stylize

    styled_dir = tmp_path / "styled"
    styled_dir.mkdir()
    for path in sorted(photos.glob("*.png")):
        stylize(path, style=style, device="cpu").save(styled_dir / path.name)
    direct = compare(styled_dir, anime, device="cpu")
    assert result["stylized"]["fid"] == pytest.approx(direct["fid"], rel=1e-4)
    assert result["stylized"]["kid"] == pytest.approx(direct["kid"], rel=1e-4, abs=1e-7)
    assert result["baseline"]["kid"] == pytest.approx(compare(photos, anime, device="cpu")["kid"], rel=1e-4, abs=1e-7)
    # content: the mean, over photos, of the mean |feature difference| between each photo and its own
    # stylization (content_unrelated: and the next photo), on the perceptual network's features.
    from train.perceptual import Perceptual

    net = Perceptual("inception", device="cpu")

    def features(path: Path) -> torch.Tensor:
        rgb = np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1.0
        return net(torch.from_numpy(rgb).permute(2, 0, 1)[None])

    names = sorted(p.name for p in photos.glob("*.png"))
    own = [features(photos / n) for n in names]
    styled = [features(styled_dir / n) for n in names]
    content = np.mean([float((a - b).abs().mean()) for a, b in zip(own, styled)])
    unrelated = np.mean([float((a - b).abs().mean()) for a, b in zip(own, own[1:] + own[:1])])
    assert result["stylized"]["content"] == pytest.approx(content, rel=1e-4)
    assert result["content_unrelated"] == pytest.approx(unrelated, rel=1e-4)
    grid = Image.open(tmp_path / "pairs.png")
    assert grid.height > 2 * 96 and grid.width > 6 * 112


def test_working_size_and_enlarged_photos(style: str, tmp_path: Path) -> None:
    """photo_side enlarges the photos first (the baseline is theirs); max_side is the size the style works at."""
    from animegan import stylize

    photos = _folder(tmp_path / "photos", 4, seed=0)
    anime = _folder(tmp_path / "anime", 4, seed=100, anime=True)
    small = evaluate_style(style, photos, anime, device="cpu", photo_side=160, max_side=56)
    full = evaluate_style(style, photos, anime, device="cpu", photo_side=160, max_side=0)
    assert (small["max_side"], small["photo_side"], full["max_side"]) == (56, 160, 0)
    enlarged, styled = tmp_path / "enlarged", tmp_path / "styled"
    enlarged.mkdir()
    styled.mkdir()
    for path in sorted(photos.glob("*.png")):
        big = Image.open(path).convert("RGB").resize((160, 137), Image.Resampling.BICUBIC)  # 112x96 -> long side 160
        big.save(enlarged / path.name)
        stylize(big, style=style, device="cpu", max_side=56).save(styled / path.name)
    for result in (small, full):
        assert result["baseline"]["fid"] == pytest.approx(compare(enlarged, anime, device="cpu")["fid"], rel=1e-4)
    assert small["stylized"]["fid"] == pytest.approx(compare(styled, anime, device="cpu")["fid"], rel=1e-4)
    assert small["stylized"]["fid"] != pytest.approx(full["stylized"]["fid"], rel=1e-3)


def test_shared_figures_reuse_a_baseline_given_them(tmp_path: Path) -> None:
    """style_figures (evaluate_style's and the trainer's): an earlier table's baseline stands in for recomputing it."""
    from animegan.errors import AnimeGANError
    from animegan.metrics import compute_stats
    from train.evaluate_style import style_figures
    from train.perceptual import Perceptual

    anime = _folder(tmp_path / "anime", 4, seed=100, anime=True)
    before = [torch.from_numpy(gradient_image(40, 32, seed=i)).permute(2, 0, 1)[None].float() / 127.5 - 1
              for i in range(3)]
    after = [x.flip(-1) * 0.5 for x in before]
    reference, net = compute_stats(anime, "cpu"), Perceptual("inception", device="cpu")
    table = style_figures(before, after, reference, net, device="cpu")
    assert table["baseline"]["fid"] != pytest.approx(table["stylized"]["fid"])
    later = [x * 0.25 for x in before]
    fresh = style_figures(before, later, reference, net, device="cpu")
    reused = style_figures(before, later, reference, net, device="cpu", baseline=table)
    assert reused == fresh and reused["stylized"] != table["stylized"]
    with pytest.raises(AnimeGANError, match="3 photos but 2"):
        style_figures(before, after[:2], reference, net)


def test_photos_against_themselves_give_a_zero_baseline(style: str, tmp_path: Path) -> None:
    """With the photos as the 'anime' set, the untouched photos are at FID 0 and any change is worse."""
    photos = _folder(tmp_path / "photos", 4, seed=3)
    result = evaluate_style(style, photos, photos, device="cpu")
    assert result["baseline"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["stylized"]["fid"] > 1.0 and result["fid_reduction"] < 0


def test_cli_writes_the_table_into_the_metadata(style: str, weights_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    photos = _folder(tmp_path / "photos", 4, seed=0)
    anime = _folder(tmp_path / "anime", 4, seed=100, anime=True)
    assert main(["--weights", style, "--photos", str(photos), "--anime", str(anime), "--device", "cpu",
                 "--write-metadata"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = read_metadata(weights_dir / f"{style}.safetensors")
    assert meta["metrics"]["style_eval"]["stylized"]["fid"] == pytest.approx(printed["stylized"]["fid"])
    # The header copy agrees with the JSON sidecar (a lone file keeps its figures).
    (weights_dir / f"{style}.json").unlink()
    assert read_metadata(weights_dir / f"{style}.safetensors")["metrics"]["style_eval"]["photos"] == 4


def test_update_metadata_merges_and_keeps_tensors(style: str, weights_dir: Path) -> None:
    from safetensors.torch import load_file

    path = weights_dir / f"{style}.safetensors"
    tensors = load_file(str(path))
    update_metadata(path, {"metrics": {"fid": 12.0}, "description": "new"})
    update_metadata(path, {"metrics": {"kid": 0.01}})
    meta = read_metadata(path)
    assert meta["metrics"] == {"fid": 12.0, "kid": 0.01} and meta["description"] == "new"
    after = load_file(str(path))
    assert all(torch.equal(tensors[k], after[k]) for k in tensors)


def test_too_few_photos_is_one_line(style: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = _folder(tmp_path / "photos", 1, seed=0)
    assert main(["--weights", style, "--photos", str(photos), "--anime", str(photos)]) == 2
    assert "at least 2 held-out photos" in capsys.readouterr().err
