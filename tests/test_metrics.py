"""FID and KID: the formulas on known Gaussians, and the Inception pipeline on small folders."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.metrics import FeatureStats, compare, compute_stats, fid_from_stats, kid_from_features, stats_cache_path
from animegan.images import image_files


def _gaussian_stats(mu: np.ndarray, var: np.ndarray) -> FeatureStats:
    # Only two stored feature rows of a large set: the covariance route is used.
    return FeatureStats(mu=mu, sigma=np.diag(var), features=np.zeros((2, len(mu)), np.float32), count=10**6)


def test_small_set_shortcut_equals_the_eigen_route() -> None:
    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=(12, 40)), rng.normal(0.3, 1.5, size=(9, 40))
    from animegan.metrics import stats_from_features

    sa, sb = stats_from_features(fa.astype(np.float32)), stats_from_features(fb.astype(np.float32))
    shortcut = fid_from_stats(sa, sb)  # n < 2048: the features route
    sa.features, sb.features = sa.features[:1], sb.features[:1]  # forces the eigen route
    assert shortcut == pytest.approx(fid_from_stats(sa, sb), rel=1e-5)


def test_fid_formula_on_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.5, 2, 16), rng.uniform(0.5, 2, 16)
    # For commuting (diagonal) covariances FID = |mu1-mu2|^2 + sum (sqrt v1 - sqrt v2)^2.
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert fid_from_stats(_gaussian_stats(mu1, v1), _gaussian_stats(mu2, v2)) == pytest.approx(expected, rel=1e-6)
    assert fid_from_stats(_gaussian_stats(mu1, v1), _gaussian_stats(mu1, v1)) == pytest.approx(0, abs=1e-9)


def test_kid_separates_distributions() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 32)), rng.normal(size=(200, 32))
    c = rng.normal(loc=0.5, size=(200, 32))
    same, _ = kid_from_features(a, b, subsets=10, subset_size=100)
    shifted, _ = kid_from_features(a, c, subsets=10, subset_size=100)
    assert shifted > 5 * abs(same)


def _write_folder(folder: Path, count: int, shift: bool, seed: int = 0) -> Path:
    """Smooth coloured blobs; the 'shifted' set is the same kind of picture, darker and bluer."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    for i in range(count):
        cx, cy, r = rng.uniform(16, 48), rng.uniform(16, 48), rng.uniform(8, 20)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        colour, background = rng.uniform(80, 255, 3), rng.uniform(0, 120, 3)
        img = background * (1 - blob) + colour * blob
        if shift:
            img = img * np.array([0.3, 0.4, 1.0]) + np.array([0, 0, 60])
        sub = folder / ("nested" if i % 2 else ".")
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(sub / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    root = tmp_path_factory.mktemp("fid")
    with pytest.MonkeyPatch.context() as patch:  # module-wide: the CLI test reuses the stats
        patch.setenv("ANIMEGAN_CACHE", str(root / "cache"))
        yield _write_folder(root / "a", 6, False), _write_folder(root / "b", 6, True), root / "cache"


def test_fid_self_is_zero_and_shifted_is_larger(folders: tuple[Path, Path, Path]) -> None:
    a, b, cache = folders
    self_result = compare(a, a, device="cpu")
    other = compare(a, b, device="cpu")
    assert self_result["fid"] == pytest.approx(0.0, abs=1e-3)
    assert other["fid"] > 10.0
    assert other["kid"] > self_result["kid"]
    assert other["count_a"] == other["count_b"] == 6
    # The reference statistics were cached per folder; a changed file changes the key.
    key = stats_cache_path(image_files([a]))
    assert key.is_file() and key.parent == cache / "fid_stats"
    copy = a.parent / "a_copy.png"
    copy.write_bytes(sorted(image_files([a]))[0].read_bytes())
    os.utime(copy, (1, 1))
    before = stats_cache_path([copy])
    os.utime(copy, (2, 2))
    assert stats_cache_path([copy]) != before


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(AnimeGANError, match="no such folder"):
        compute_stats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnimeGANError, match="no images"):
        compute_stats(tmp_path / "empty")


def test_fid_cli_on_two_folders(folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from animegan.cli import main

    a, b, _ = folders
    assert main(["fid", str(a), str(b), "--kid"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fid"] > 10.0 and "kid" in result
    assert main(["fid", str(a / "missing"), str(b)]) == 2


def test_fid_cli_refuses_a_style_run_clearly(folders: tuple[Path, Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A photo-to-anime run folder has no latent space to sample: one line that says so, exit 2."""
    from animegan.cli import main

    a, _, _ = folders
    run = tmp_path / "style-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"trainer": "animegan", "recipe": "v2", "steps": 10}))
    assert main(["fid", str(run), str(a)]) == 2
    err = capsys.readouterr().err.strip()
    assert "photo-to-anime style run" in err and "Traceback" not in err and len(err.splitlines()) == 1
