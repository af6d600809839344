"""Reading user images safely: any mode, EXIF orientation, alpha kept aside, size limits."""
from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import AnimeGANError

# Larger images are refused before decoding (a decompression bomb is small on disk).
# ``$ANIMEGAN_MAX_PIXELS`` changes it; it is read at each call (``max_pixels``), so a bad value
# is a clear message where an image is opened, never a failed ``import animegan``.
MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ANIMEGAN_MAX_PIXELS"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# The decoders PIL may try. Photos come in these; the other plugins (EPS runs Ghostscript,
# and rarely used parsers such as FITS, SPIDER or PCD) are attack surface with no use here.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "PPM", "TGA", "ICO", "AVIF")

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]


@dataclass
class PreparedImage:
    """RGB pixels ready for a network, plus what is needed to rebuild the original's form."""

    rgb: Image.Image
    alpha: Image.Image | None
    name: str


def max_pixels() -> int:
    """The largest image accepted, in pixels: ``$ANIMEGAN_MAX_PIXELS`` when set, else ``MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise AnimeGANError(f"{MAX_PIXELS_ENV}={text!r}: give the largest image size as a whole number of pixels, "
                            "e.g. 200000000")
    return value


def _megapixels(pixels: int) -> str:
    """'100 MP', '0.0025 MP': whole megapixels, or enough digits to tell a small limit from 0."""
    mp = pixels / 1e6
    return f"{mp:.0f} MP" if mp >= 10 else f"{mp:.3g} MP"


def open_image(source: ImageInput, name: str | None = None) -> Image.Image:
    """Open a path, bytes, array or PIL image, refusing pixel counts over ``max_pixels()``.

    Every way a file can be bad (empty, truncated, hostile, not an image at all) ends in an
    ``AnimeGANError`` naming it; nothing else escapes, so callers need no other handler.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, name or "image")
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name or "array")
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, (str, os.PathLike, bytes)):
        raise AnimeGANError(f"{name or 'input'}: expected an image file, bytes, array or PIL image, "
                            f"not {type(source).__name__}")
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, (str, os.PathLike)):
        if not str(source).strip():  # Path("") is the current folder: say what is really wrong
            raise AnimeGANError("no image given")
        path = Path(source)
        if path.is_dir():
            raise AnimeGANError(f"{label}: is a folder, not an image")
        if not path.exists():
            raise AnimeGANError(f"{label}: no such file")
        if not path.is_file():  # a FIFO or a device would block or never end
            raise AnimeGANError(f"{label}: not a regular file")
        if path.stat().st_size == 0:
            raise AnimeGANError(f"{label}: empty file")
    elif not source:
        raise AnimeGANError(f"{label}: empty file")
    try:
        with warnings.catch_warnings(), _pil_guard_at_least(max_pixels()):
            # Our own pixel check below runs before any decoding, so PIL's softer warning is not
            # needed; its hard DecompressionBombError (twice its limit) still stops a bomb in open().
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS)
            _check_pixels(image.size, label)
            image.load()
    except AnimeGANError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{_megapixels(int(found.group(1)))}; " if found else ""
        raise AnimeGANError(f"{label}: image is too large to process safely ({size}the limit is "
                            f"{_megapixels(max_pixels())})") from None
    except UnidentifiedImageError:
        raise AnimeGANError(f"{label}: not an image, or a format this tool cannot read") from None
    except MemoryError:
        raise
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, struct.error, IndexError ... on hostile files
        raise AnimeGANError(f"{label}: truncated or damaged image ({_first_line(exc)})") from None
    return image


_PIL_GUARD_LOCK = threading.Lock()


@contextlib.contextmanager
def _pil_guard_at_least(pixels: int) -> Iterator[None]:
    """PIL's own bomb guard raised, while one image opens, to a limit set above it.

    PIL refuses anything over twice its ``MAX_IMAGE_PIXELS`` (about 179 MP) in ``open()``, before our
    check; without this, ``ANIMEGAN_MAX_PIXELS`` could not go past that. Our limit still applies first.
    """
    if Image.MAX_IMAGE_PIXELS is None or 2 * Image.MAX_IMAGE_PIXELS >= pixels:
        yield
        return
    with _PIL_GUARD_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def _check_pixels(size: tuple[int, int], label: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise AnimeGANError(f"{label}: image has no pixels")
    limit = max_pixels()
    if w * h > limit:
        raise AnimeGANError(f"{label}: {w}x{h} is too large ({_megapixels(w * h)}; the limit is "
                            f"{_megapixels(limit)})")


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    """uint8/uint16/float (0..1, or 0..255) arrays, HxW, HxWx1, HxWx3 or HxWx4, RGB order."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise AnimeGANError(f"{label}: array of shape {a.shape} is not an image (HxW, HxWx3 or HxWx4)")
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise AnimeGANError(f"{label}: array of {a.dtype} values is not an image (use uint8, uint16 or float)")
    _check_pixels((a.shape[1], a.shape[0]), label)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        finite = a[np.isfinite(a)]
        top = float(finite.max()) if finite.size else 0.0
        if top > 1.0:  # a float copy of 8-bit pixels (0..255), not the 0..1 convention
            if top > 255.0 + 1e-3:
                raise AnimeGANError(f"{label}: float array with values up to {top:.4g}; use 0..1 (or 0..255)")
            a = a / 255.0
        a = (np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def prepare_image(source: ImageInput, name: str | None = None) -> PreparedImage:
    """Upright RGB plus the alpha channel (if any) from any PIL mode.

    EXIF orientation is applied; animated images give their first frame; 16-bit, CMYK,
    palette (with transparency), grayscale and LA inputs all come out as 8-bit RGB.
    """
    image = open_image(source, name)
    label = name or getattr(image, "filename", None) or "image"
    # Frame 0 is the one open_image decoded. Asking for n_frames would parse every later frame,
    # and a damaged one (IndexError, struct.error ...) must not cost the first.
    try:
        rgb, alpha = _upright_rgb(image)
    except MemoryError:
        raise
    except Exception as exc:  # a conversion that trips on a hostile palette or mode
        raise AnimeGANError(f"{label}: truncated or damaged image ({_first_line(exc)})") from None
    return PreparedImage(rgb=rgb, alpha=alpha, name=str(label))


def _upright_rgb(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block must not lose the picture
        pass
    mode = image.mode
    alpha = None
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(image, dtype=np.int64)
        # A 16-bit file is 16-bit even when dark; only 32-bit "I" (no depth of its own) is guessed from its values.
        peak = 65535 if mode != "I" or a.max(initial=0) > 255 else 255
        image = Image.fromarray((np.clip(a, 0, peak) * (255.0 / peak) + 0.5).astype(np.uint8), "L")
    elif mode == "F":
        a = np.nan_to_num(np.asarray(image, dtype=np.float32))
        lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
        image = Image.fromarray(((a - lo) / max(hi - lo, 1e-6) * 255 + 0.5).astype(np.uint8), "L")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        image = rgba
    elif mode == "RGBX":
        image = image.convert("RGB")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, alpha


def finish_image(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """Put the original alpha back on a stylized RGB image of the same size."""
    if alpha is None:
        return rgb
    if alpha.size != rgb.size:
        alpha = alpha.resize(rgb.size, Image.Resampling.LANCZOS)
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def image_files(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively) into image files, in a stable order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


def to_tensor_range(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 HxWx3 in [-1, 1]."""
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0
