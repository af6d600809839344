"""FID and KID on Inception-v3 pool features, usable on any folder of images.

Images (RGB, [-1, 1]) are resized to 299x299 (bilinear) and run through the standard FID
Inception-v3 (``animegan.inception``) to its 2048-d ``pool2`` features. A source is a
folder, a list of image files, a tensor / list of tensors (N, 3, H, W) in [-1, 1], or an
iterable of such batches (e.g. ``generator_batches``). Statistics of a folder or file list
are cached under ``weights.cache_dir()/fid_stats``, keyed by the files' paths, sizes and
contents, so a reference set is read once, also where its files are laid down anew (a data mount
or checkout refreshed at each session gives the same bytes new modification times).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .device import pick_device
from .errors import AnimeGANError
from .fileio import atomic_path
from .images import image_files, prepare_image, to_tensor_range
from .inception import load_inception

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
CACHE_VERSION = 1
MAX_CACHED_FEATURES = 10_000  # rows kept for KID; the mean and covariance use every image
# An entry is 35 to 120 MB (the covariance alone is 32 MB): past this size, the least recently
# used entries go, so a user who measures many folders does not fill the disk.
STATS_CACHE_BYTES = 2 * 1024 ** 3

Source = Union[str, os.PathLike, Sequence[Any], torch.Tensor, Iterable[torch.Tensor]]


@dataclass
class FeatureStats:
    """Mean and covariance of Inception features, plus (a sample of) the features for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    count: int
    skipped: int = 0


# ----------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------
def _batches_of_files(files: list[Path], batch_size: int, report: list[str]) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for path in files:
        try:
            rgb = prepare_image(path).rgb
        except AnimeGANError as exc:
            report.append(str(exc))
            continue
        t = torch.from_numpy(to_tensor_range(rgb)).permute(2, 0, 1)[None]
        batch.append(_resize(t))  # sizes may differ within a folder; resize before stacking
        if len(batch) == batch_size:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def _resize(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == (INCEPTION_SIZE, INCEPTION_SIZE):
        return x
    return F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)


def _tensor_batches(source: Any, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(source, torch.Tensor):
        source = [source]
    for item in source:
        if not isinstance(item, torch.Tensor):
            raise AnimeGANError(f"expected image tensors (N, 3, H, W) in [-1, 1], got {type(item).__name__}")
        item = item[None] if item.dim() == 3 else item
        if item.dim() != 4 or item.shape[1] != 3:
            raise AnimeGANError(f"expected image tensors (N, 3, H, W), got shape {tuple(item.shape)}")
        for chunk in item.split(batch_size):
            yield chunk


@torch.inference_mode()
def features_of(batches: Iterable[torch.Tensor], device: str | torch.device | None = None,
                limit: int | None = None, progress: bool = False, total: int | None = None) -> np.ndarray:
    """(N, 2048) float32 pool features of batches of images in [-1, 1]."""
    dev = pick_device(device)
    net = load_inception(dev)
    out: list[np.ndarray] = []
    seen = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total if limit is None else min(total or limit, limit), unit="img", desc="inception",
                   file=sys.stderr)
    for batch in batches:
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            batch = batch[: limit - seen]
        x = _resize(batch.to(dev, torch.float32).clamp(-1, 1))
        if dev.type == "cpu":  # oneDNN prefers channels_last: 7-27% in bench/fid_bench.py on an AVX2 EPYC
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(net(x).float().cpu().numpy())
        seen += len(batch)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def stats_from_features(features: np.ndarray, skipped: int = 0) -> FeatureStats:
    if len(features) < 2:
        raise AnimeGANError(f"FID needs at least 2 images, got {len(features)}")
    f = features.astype(np.float64)
    keep = features if len(features) <= MAX_CACHED_FEATURES else features[
        np.random.default_rng(0).choice(len(features), MAX_CACHED_FEATURES, replace=False)]
    return FeatureStats(mu=f.mean(0), sigma=np.cov(f, rowvar=False), features=keep.astype(np.float32),
                        count=len(features), skipped=skipped)


# ----------------------------------------------------------------------------------------
# Sources, with a cache for folders and file lists
# ----------------------------------------------------------------------------------------
def list_source_files(source: str | os.PathLike | Sequence[Any]) -> list[Path]:
    """Image files of a folder (recursive) or a list of paths; clear errors for missing/empty."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AnimeGANError(f"{path}: no such folder")
        files = image_files([path])
    else:
        files = [Path(p) for p in source]
    if not files:
        raise AnimeGANError(f"{source}: no images found" if isinstance(source, (str, os.PathLike))
                            else "no images given")
    return files


def _is_file_source(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return True
    return isinstance(source, (list, tuple)) and bool(source) and all(isinstance(p, (str, os.PathLike)) for p in source)


def _subset(files: list[Path], limit: int | None) -> list[Path]:
    if limit is None or len(files) <= limit:
        return files
    return sorted(random.Random(0).sample(files, limit))  # fixed choice: the cache stays valid


def stats_cache_path(files: list[Path], limit: int | None = None, variant: str = "") -> Path:
    """Cache file for these files' statistics (paths, sizes and contents in the key).

    Contents, not modification times: hashing the bytes costs a fraction of a second for thousands
    of images, where one miss costs minutes of Inception on the CPU.

    ``variant`` names another way of reading the same files (e.g. shrunk to 64 px), cached apart.
    """
    from .weights import cache_dir

    key: dict[str, Any] = {"v": CACHE_VERSION, "size": INCEPTION_SIZE, "limit": limit}
    if variant:
        key["variant"] = variant
    digest = hashlib.sha256(json.dumps(key).encode())
    for f in files:
        data = f.read_bytes()
        content = hashlib.blake2b(data, digest_size=16).hexdigest()
        digest.update(f"{f.resolve()}\0{len(data)}\0{content}\n".encode())
    return cache_dir() / "fid_stats" / f"{digest.hexdigest()[:32]}.npz"


def _read_cached(path: Path) -> FeatureStats | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            stats = FeatureStats(z["mu"], z["sigma"], z["features"], int(z["count"]), int(z["skipped"]))
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is recomputed
    try:
        os.utime(path)  # a use: the pruning keeps the most recently used entries
    except OSError:
        pass  # a read-only cache still serves
    return stats


def _write_cached(path: Path, stats: FeatureStats) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=stats.mu, sigma=stats.sigma, features=stats.features, count=stats.count,
                     skipped=stats.skipped)
    prune_stats_cache(path.parent, keep=path)


def prune_stats_cache(folder: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove the least recently used entries of ``folder`` until it holds at most ``limit`` bytes
    (``STATS_CACHE_BYTES``); ``keep`` (the entry just written) stays whatever its size. Returns the removed."""
    limit = STATS_CACHE_BYTES if limit is None else limit
    entries = []
    for entry in folder.glob("*.npz"):
        if entry.name.startswith("."):
            continue  # another process's entry, still being written (``atomic_path``'s temporary)
        try:
            st = entry.stat()
        except OSError:
            continue  # removed meanwhile by another process
        entries.append((st.st_mtime_ns, st.st_size, entry))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in sorted(entries, key=lambda e: e[:2]):
        if total <= limit:
            break
        if keep is not None and entry == keep:
            continue
        entry.unlink(missing_ok=True)
        total -= size
        removed.append(entry)
    return removed


def compute_stats(source: Source, device: str | torch.device | None = None, limit: int | None = None,
                  batch_size: int = 32, cache: bool = True, progress: bool = False,
                  cache_as: tuple[list[Path], str] | None = None) -> FeatureStats:
    """Feature statistics of a folder, file list, tensor(s) or iterable of batches.

    A folder or file list is cached; ``limit`` takes a fixed random subset of files (or the
    first ``limit`` generated images). Batches read from files in another way are cached too
    when ``cache_as`` gives (those files, a name for the way); a cached entry is returned
    without touching ``source``, so a lazy iterable then reads nothing.
    """
    if _is_file_source(source):
        files = _subset(list_source_files(source), limit)  # type: ignore[arg-type]
        cached = stats_cache_path(files, limit) if cache else None
        stats = _read_cached(cached) if cached is not None else None
        if stats is not None:
            return stats
        report: list[str] = []
        feats = features_of(_batches_of_files(files, batch_size, report), device, progress=progress, total=len(files))
        if report:
            print(f"warning: skipped {len(report)} unreadable image(s), e.g. {report[0]}", file=sys.stderr)
        stats = stats_from_features(feats, skipped=len(report))
        if cached is not None:
            _write_cached(cached, stats)
        return stats
    cached = stats_cache_path(cache_as[0], limit, cache_as[1]) if cache and cache_as else None
    stats = _read_cached(cached) if cached is not None else None
    if stats is not None:
        return stats
    feats = features_of(_tensor_batches(source, batch_size), device, limit=limit, progress=progress, total=limit)
    stats = stats_from_features(feats)
    if cached is not None:
        _write_cached(cached, stats)
    return stats


def generator_batches(generator: torch.nn.Module, count: int, batch_size: int = 32, seed: int = 0,
                      device: str | torch.device | None = None, truncation: float = 1.0) -> Iterator[torch.Tensor]:
    """``count`` images from a face generator, latents drawn from a CPU generator seeded by ``seed``."""
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    params = next(generator.parameters())
    done = 0
    while done < count:
        n = min(batch_size, count - done)
        z = torch.randn(n, generator.latent_dim, generator=gen) * truncation
        with torch.inference_mode():
            yield generator(z.to(dev, params.dtype)).float()
        done += n


# ----------------------------------------------------------------------------------------
# The distances
# ----------------------------------------------------------------------------------------
def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two Gaussians: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2).

    tr((S_a S_b)^1/2) is the sum of square roots of the eigenvalues of the symmetric
    S_a^1/2 S_b S_a^1/2 (stable for singular covariances), or, for sets smaller than the
    feature size, the same figure from the features directly.
    """
    diff = a.mu - b.mu
    value = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * _trace_sqrt_product(a, b))
    return max(value, 0.0)


def _trace_sqrt_product(a: FeatureStats, b: FeatureStats) -> float:
    if len(a.features) == a.count and len(b.features) == b.count and min(a.count, b.count) < FEATURE_DIM:
        # Small sets: with S = X^T X / (n - 1) for centred features X, the eigenvalues of S_a S_b
        # are the squared singular values of X_a X_b^T / sqrt((n_a - 1)(n_b - 1)): an n x n problem
        # instead of a 2048 x 2048 one.
        xa = a.features.astype(np.float64) - a.features.mean(0, dtype=np.float64)
        xb = b.features.astype(np.float64) - b.features.mean(0, dtype=np.float64)
        cross = xa @ xb.T / np.sqrt((a.count - 1) * (b.count - 1))
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    w, v = np.linalg.eigh(a.sigma)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ b.sigma @ root_a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def kid_from_features(fa: np.ndarray, fb: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial kernel, unbiased MMD^2): mean and std over subsets."""
    m = min(len(fa), len(fb), subset_size)
    if m < 2:
        raise AnimeGANError(f"KID needs at least 2 images on each side, got {len(fa)} and {len(fb)}")
    d = fa.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = fa[rng.choice(len(fa), m, replace=False)].astype(np.float64)
        y = fb[rng.choice(len(fb), m, replace=False)].astype(np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def compare(a: Source | FeatureStats, b: Source | FeatureStats, kid: bool = True, limit: int | None = None,
            device: str | torch.device | None = None, progress: bool = False) -> dict[str, float]:
    """FID (and KID) between two sources: ``{"fid", "kid", "kid_std", "count_a", "count_b"}``."""
    sa = a if isinstance(a, FeatureStats) else compute_stats(a, device, limit=limit, progress=progress)
    sb = b if isinstance(b, FeatureStats) else compute_stats(b, device, limit=limit, progress=progress)
    result: dict[str, float] = {"fid": fid_from_stats(sa, sb)}
    if kid:
        result["kid"], result["kid_std"] = kid_from_features(sa.features, sb.features)
    result["count_a"], result["count_b"] = sa.count, sb.count
    return result


def fid(a: Source | FeatureStats, b: Source | FeatureStats, **kwargs: Any) -> float:
    """FID between two sources (folders, file lists, tensors, batches or precomputed stats)."""
    return compare(a, b, kid=False, **kwargs)["fid"]
