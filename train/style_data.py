"""Unpaired photo / anime data for the AnimeGAN trainer.

Layout: ``DIR/real_images/`` (photos) and ``DIR/anime_images/`` (one anime style), both read
recursively. Besides the anime pictures the recipe needs their *edge-smoothed* copies (Canny
edges, dilated, Gaussian-blurred only at those pixels: the discriminator learns that soft
edges are not anime) and grayscale versions (for the style loss and as extra fakes for D).
The smoothed copies are made once and cached under ``DIR/.animegan_cache/smooth/`` (or, for a
read-only dataset, under the animegan cache folder), keyed by file, size and modification time,
written atomically.

Every random choice of a batch comes from a ``torch.Generator`` passed in (see
``train.common.step_generator``), so a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.fileio import atomic_path
from animegan.images import image_files, prepare_image

from .losses import rgb_to_gray as to_gray

REAL_DIR = "real_images"
ANIME_DIR = "anime_images"
CACHE_DIR = ".animegan_cache"


@dataclass
class StyleBatch:
    """One training batch, NCHW float32 in [-1, 1]."""

    photo: torch.Tensor
    anime: torch.Tensor
    anime_gray: torch.Tensor  # 3 equal channels
    smooth: torch.Tensor  # edge-smoothed anime crop (same crop as ``anime``)
    smooth_gray: torch.Tensor


@dataclass
class Skipped:
    """Files left out because they could not be read."""

    files: list[Path]
    reasons: list[str]

    def summary(self) -> str:
        names = ", ".join(p.name for p in self.files[:5]) + (" ..." if len(self.files) > 5 else "")
        return f"skipped {len(self.files)} unreadable file(s): {names}" if self.files else ""


def edge_smooth(rgb: np.ndarray, kernel_size: int = 5, low: int = 100, high: int = 200) -> np.ndarray:
    """AnimeGAN's edge smoothing: Gaussian blur only where dilated Canny edges are.

    ``rgb`` is HxWx3 uint8; the result has the same shape. The blur uses cv2's 5x5 Gaussian
    (sigma from the size, as ``cv2.getGaussianKernel(5, 0)``) with reflected borders, which
    is what the original per-pixel loop computes.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, low, high)
    mask = cv2.dilate(edges, np.ones((kernel_size, kernel_size), np.uint8)) != 0
    blurred = cv2.GaussianBlur(rgb, (kernel_size, kernel_size), 0, borderType=cv2.BORDER_REFLECT_101)
    out = rgb.copy()
    out[mask] = blurred[mask]
    return out


def default_cache_dir(root: Path) -> Path:
    """``DIR/.animegan_cache``, or the animegan cache folder when the dataset is read-only."""
    if os.access(root, os.W_OK):
        return root / CACHE_DIR
    from animegan.weights import cache_dir

    return cache_dir() / "datasets" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(prepare_image(path).rgb, dtype=np.uint8)


def _scan(folder: Path, label: str) -> list[Path]:
    if not folder.is_dir():
        raise AnimeGANError(f"{folder}: missing folder; put the {label} there "
                            f"(the dataset folder needs {REAL_DIR}/ and {ANIME_DIR}/)")
    files = image_files([folder])
    if not files:
        raise AnimeGANError(f"{folder}: no images found (looked for .jpg .png .webp ... recursively)")
    return files


class StyleData:
    """The photos and anime images of one dataset folder, decoded and kept in memory.

    ``val_photos`` photos, chosen by a hash of their names (so the choice does not depend on
    the order files are listed in), are held out for the sample grids and never trained on.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 256, val_photos: int = 4,
                 min_images: int = 2, cache_dir: str | os.PathLike[str] | None = None,
                 scale_jitter: float = 1.25, log: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnimeGANError(f"{self.root}: dataset folder not found")
        if size < 16:
            raise AnimeGANError(f"crop size {size} is too small (at least 16)")
        self.size = int(size)
        self.scale_jitter = max(1.0, float(scale_jitter))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(self.root)
        self.skipped = Skipped([], [])

        for folder, label in ((REAL_DIR, "photos"), (ANIME_DIR, "anime images")):
            if not (self.root / folder).is_dir():  # name a missing folder before an empty one
                _scan(self.root / folder, label)
        photo_files = _scan(self.root / REAL_DIR, "photos")
        anime_files = _scan(self.root / ANIME_DIR, "anime images")
        photos, photo_names = load_images(photo_files, self.skipped)
        anime, anime_names = load_images(anime_files, self.skipped)
        for kind, items, folder in (("photos", photos, REAL_DIR), ("anime images", anime, ANIME_DIR)):
            if len(items) < min_images:
                extra = f"; {self.skipped.summary()}" if self.skipped.files else ""
                raise AnimeGANError(f"{self.root / folder}: only {len(items)} readable {kind}, "
                                    f"need at least {min_images}{extra}")
        smooth = [self._smoothed(f, a) for f, a in zip(anime_names, anime)]

        val_idx = held_out(photo_names, max(0, min(int(val_photos), len(photos) - min_images)))
        self.val_names = [photo_names[i] for i in sorted(val_idx)]
        self.val = [photos[i] for i in sorted(val_idx)]
        self.photos = [p for i, p in enumerate(photos) if i not in val_idx]
        self.photo_names = [p for i, p in enumerate(photo_names) if i not in val_idx]
        self.anime, self.smooth, self.anime_names = anime, smooth, anime_names
        if log and self.skipped.files:
            print(f"warning: {self.skipped.summary()}", flush=True)

    # -- loading ------------------------------------------------------------------------
    def _smoothed(self, path: Path, rgb: np.ndarray) -> np.ndarray:
        """The edge-smoothed copy, from the cache when the source is unchanged."""
        st = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
        cached = self.cache_dir / "smooth" / f"{key}.png"
        if cached.is_file():
            try:
                with Image.open(cached) as im:
                    out = np.asarray(im.convert("RGB"), dtype=np.uint8)
                if out.shape == rgb.shape:
                    return out
            except (OSError, ValueError):
                pass  # a damaged cache entry is rebuilt
        out = edge_smooth(rgb)
        try:
            with atomic_path(cached) as tmp:
                Image.fromarray(out).save(tmp, format="PNG")
        except OSError as exc:  # a read-only dataset still trains, only slower to start
            print(f"warning: cannot cache smoothed image in {self.cache_dir} ({exc})", flush=True)
        return out

    # -- batches ------------------------------------------------------------------------
    def describe(self) -> str:
        return (f"{len(self.photos)} photos ({len(self.val)} more held out for samples) from {self.root / REAL_DIR}, "
                f"{len(self.anime)} anime images from {self.root / ANIME_DIR}")

    def batch(self, batch_size: int, gen: torch.Generator) -> StyleBatch:
        """A batch drawn only from ``gen``: photos and anime images chosen independently (unpaired)."""
        pi = torch.randint(len(self.photos), (batch_size,), generator=gen).tolist()
        ai = torch.randint(len(self.anime), (batch_size,), generator=gen).tolist()
        photo = _to_tensor([random_crops([self.photos[i]], self.size, self.scale_jitter, gen)[0] for i in pi])
        pairs = [random_crops([self.anime[i], self.smooth[i]], self.size, self.scale_jitter, gen) for i in ai]
        anime = _to_tensor([p[0] for p in pairs])
        smooth = _to_tensor([p[1] for p in pairs])
        return StyleBatch(photo=photo, anime=anime, anime_gray=to_gray(anime).contiguous(), smooth=smooth,
                          smooth_gray=to_gray(smooth).contiguous())

    def validation_batch(self) -> torch.Tensor:
        """The fixed held-out photos (training photos if none could be held out), centre-cropped."""
        arrays = self.val or self.photos[: min(4, len(self.photos))]
        return _to_tensor([centre_crop(a, self.size) for a in arrays])


class PhotoCrops:
    """A folder of photos (read recursively) for trainers that need photos only (distillation).

    Loads, holds out and crops exactly as ``StyleData`` does its photos.
    """

    def __init__(self, folder: str | os.PathLike[str], size: int = 256, val_photos: int = 4,
                 min_images: int = 1, scale_jitter: float = 1.25) -> None:
        self.root = Path(folder)
        if not self.root.is_dir():
            raise AnimeGANError(f"{self.root}: photo folder not found")
        if size < 16:
            raise AnimeGANError(f"crop size {size} is too small (at least 16)")
        self.size, self.scale_jitter = int(size), max(1.0, float(scale_jitter))
        self.skipped = Skipped([], [])
        photos, names = load_images(_scan(self.root, "photos"), self.skipped)
        if len(photos) < min_images:
            extra = f"; {self.skipped.summary()}" if self.skipped.files else ""
            raise AnimeGANError(f"{self.root}: only {len(photos)} readable photos, need at least {min_images}{extra}")
        val_idx = held_out(names, max(0, min(int(val_photos), len(photos) - min_images)))
        self.val = [photos[i] for i in sorted(val_idx)]
        self.photos = [p for i, p in enumerate(photos) if i not in val_idx]

    def describe(self) -> str:
        return f"{len(self.photos)} photos ({len(self.val)} more held out for samples) from {self.root}"

    def batch(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """NCHW float32 crops in [-1, 1], drawn only from ``gen``."""
        idx = torch.randint(len(self.photos), (batch_size,), generator=gen).tolist()
        return _to_tensor([random_crops([self.photos[i]], self.size, self.scale_jitter, gen)[0] for i in idx])

    def validation_batch(self) -> torch.Tensor:
        arrays = self.val or self.photos[: min(4, len(self.photos))]
        return _to_tensor([centre_crop(a, self.size) for a in arrays])


def load_images(files: list[Path], skipped: Skipped) -> tuple[list[np.ndarray], list[Path]]:
    """Decode files to RGB arrays; unreadable or tiny ones are recorded in ``skipped``."""
    arrays, names = [], []
    for f in files:
        try:
            a = _read_rgb(f)
        except AnimeGANError as exc:
            skipped.files.append(f)
            skipped.reasons.append(str(exc))
            continue
        if min(a.shape[:2]) < 8:
            skipped.files.append(f)
            skipped.reasons.append(f"{f}: image is smaller than 8 pixels")
            continue
        arrays.append(a)
        names.append(f)
    return arrays, names


def held_out(names: list[Path], count: int) -> set[int]:
    """Indices of ``count`` files chosen by a hash of their names (independent of listing order)."""
    order = sorted(range(len(names)), key=lambda i: hashlib.sha1(names[i].name.encode()).hexdigest())
    return set(order[:count])


def resize_to(a: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    h, w = a.shape[:2]
    if (new_w, new_h) == (w, h):
        return a
    interp = cv2.INTER_AREA if new_w < w else cv2.INTER_CUBIC
    return cv2.resize(a, (new_w, new_h), interpolation=interp)


def random_crops(arrays: list[np.ndarray], size: int, scale_jitter: float, gen: torch.Generator) -> list[np.ndarray]:
    """The same random scale, crop and flip applied to same-size arrays -> size x size x 3 uint8 crops."""
    h, w = arrays[0].shape[:2]
    r = torch.rand(4, generator=gen).tolist()
    scale = size / min(h, w) * (1.0 + r[0] * (scale_jitter - 1.0))
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    top = int(r[1] * (new_h - size + 1))
    left = int(r[2] * (new_w - size + 1))
    flip = r[3] < 0.5
    out = []
    for a in arrays:
        crop = resize_to(a, new_w, new_h)[top:top + size, left:left + size]
        out.append(crop[:, ::-1] if flip else crop)
    return out


def centre_crop(a: np.ndarray, size: int) -> np.ndarray:
    """Scale the short side to ``size`` and cut the centre square."""
    h, w = a.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resize_to(a, new_w, new_h)[top:top + size, left:left + size]


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    """SxSx3 uint8 crops -> NCHW float32 in [-1, 1]."""
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2)))
    return stacked.float().div_(127.5).sub_(1.0)
