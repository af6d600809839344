"""Reliability and security: hostile inputs, limits, crashes and untrusted files, each tried and counted.

Every case here ends in a result or in the project's one-line ``AnimeGANError`` message;
any other exception is a crash and fails the test with its traceback, and a case that runs
past its time limit fails as a hang. The case lists below are the source of the counts in
``docs/reliability.md``; ``test_reliability_doc_counts_match_the_suite`` keeps them equal.
The load test (20 parallel clients) lives in ``test_load.py``.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.stylize import StyleOptions
from conftest import REPO, free_port, gradient_image, make_v2_generator

CASE_TIMEOUT_S = 60.0  # far above any case's real time (< 2 s): only a hang gets near it
# The Photo tab's default, as a visitor would send it: the style's working size, or the tab's cap
APP_OPTIONS = StyleOptions(max_side=None, fallback_side=1280)


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    value: Any = None
    message: str | None = None


def bounded(fn: Callable[[], Any], seconds: float = CASE_TIMEOUT_S) -> Outcome:
    """Run ``fn`` in a thread: its result, or its AnimeGANError's message; anything else is a crash."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"hang: neither a result nor a message after {seconds:.0f} s")
    error = box.get("error")
    if error is None:
        return Outcome(value=box.get("value"))
    if isinstance(error, AnimeGANError):
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message, message
        return Outcome(message=message)
    raise error  # a crash: not a result, not a clear message


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge size over a few bytes of data: a decompression bomb's shape."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _png16(array: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB), big-endian samples."""
    h, w = array.shape[:2]
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _rgb(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(gradient_image(w, h, seed))


FFMPEG: str | None = None


def ffmpeg(*args: str) -> None:
    global FFMPEG
    if FFMPEG is None:
        from animegan.video import ffmpeg_exe

        FFMPEG = ffmpeg_exe()
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, timeout=60)


# ----------------------------------------------------------------------------------------
# Image cases: each builds one file; ``expect`` is "result" or a fragment of the message
# ----------------------------------------------------------------------------------------
@dataclass
class ImageCase:
    build: Callable[[Path], Path]
    expect: str
    size: tuple[int, int] | None = (40, 30)  # of the result (None: not checked)
    alpha: bool = False


IMAGE_CASES: dict[str, ImageCase] = {}
# The stored pixels for each EXIF orientation, so that applying the tag gives the upright picture.
_STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
           7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _file(name: str, data: bytes | Callable[[], bytes], expect: str, **kw: Any) -> None:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    IMAGE_CASES[name] = ImageCase(build, expect, **kw)


def _register_image_cases() -> None:
    rgb = _rgb()
    png, jpeg, gif, webp = (_save(rgb, f) for f in ("PNG", "JPEG", "GIF", "WEBP"))
    frames = [rgb, rgb.rotate(90), rgb.rotate(180)]
    anim_gif = _save(rgb, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    # truncated and zero-byte
    _file("zero-byte.png", b"", "empty file")
    _file("first-40-bytes.png", png[:40], "not an image")
    _file("half.png", png[: len(png) // 2], "truncated or damaged")
    _file("half.jpg", jpeg[: len(jpeg) // 2], "truncated or damaged")
    _file("half.gif", gif[: len(gif) // 2], "truncated or damaged")
    _file("half.webp", webp[: len(webp) // 2], "truncated or damaged")
    bad_crc = bytearray(png)
    bad_crc[60] ^= 0xFF
    _file("bad-crc.png", bytes(bad_crc), "truncated or damaged")
    # wrong extensions
    _file("text.png", b"these are not pixels\n", "not an image")
    _file("png-named.jpg", png, "result")
    _file("jpeg-named.png", jpeg, "result")
    _file("gif-named.webp", gif, "result")
    _file("no-extension", png, "result")
    _file("svg.png", b"<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'/>", "not an image")
    # EPS makes PIL run Ghostscript where installed: refused whatever the machine has.
    _file("postscript.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image")
    _file("video.jpg", lambda: _clip_bytes(), "not an image")
    # decompression bombs: a small file declaring a huge picture, refused before decoding
    _file("bomb-12000x12000.png", _png_header_only(12000, 12000), "too large")
    bmp = bytearray(_save(rgb, "BMP"))
    struct.pack_into("<ii", bmp, 18, 30000, 30000)
    _file("bomb-30000x30000.bmp", bytes(bmp), "too large")
    screen = bytearray(gif)
    struct.pack_into("<HH", screen, 6, 65535, 65535)
    _file("bomb-screen.gif", bytes(screen), "too large")
    _file("bomb-100000x100000.ppm", b"P6\n100000 100000\n255\n" + b"\0" * 64, "too large")
    # extreme shapes
    _file("1x1.png", lambda: _save(_rgb(1, 1), "PNG"), "result", size=(1, 1))
    _file("20000x20.png", lambda: _save(_rgb(20000, 20), "PNG"), "result", size=(20000, 20))
    _file("20x20000.png", lambda: _save(_rgb(20, 20000), "PNG"), "result", size=(20, 20000))
    # animation: the first frame is used
    _file("animated.gif", anim_gif, "result")
    _file("animated-damaged-2nd-frame.gif", anim_gif[: len(anim_gif) - len(anim_gif) // 5], "result")
    _file("animated.png", lambda: _save(rgb, "PNG", save_all=True, append_images=frames[1:]), "result")
    _file("animated.webp", lambda: _save(rgb, "WEBP", save_all=True, append_images=frames[1:]), "result")
    # modes: CMYK, 16-bit, palettes with transparency, float
    _file("cmyk.jpg", lambda: _save(rgb.convert("CMYK"), "JPEG"), "result")
    _file("cmyk.tif", lambda: _save(rgb.convert("CMYK"), "TIFF"), "result")
    deep = (np.asarray(rgb, np.uint16) * 257)
    _file("16bit-gray.png", lambda: _png16(deep[:, :, 0], 0), "result")
    _file("16bit-rgb.png", lambda: _png16(deep, 2), "result")
    _file("16bit-rgba.png", lambda: _png16(np.dstack([deep, deep[:, :, :1]]), 6), "result", alpha=True)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    _file("palette-trns.png", lambda: _save(palette, "PNG", transparency=0), "result", alpha=True)
    _file("palette-trns.gif", lambda: _save(palette, "GIF", transparency=3), "result", alpha=True)
    _file("float32.tif", lambda: _save(Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 7), "TIFF"),
          "result")
    # EXIF orientation 1-8, and a damaged EXIF block
    for k, transpose in _STORED.items():
        def stored(k: int = k, transpose: Any = transpose) -> bytes:
            exif = Image.Exif()
            exif[0x0112] = k
            return _save(rgb if transpose is None else rgb.transpose(transpose), "JPEG", exif=exif.tobytes(),
                         quality=95)

        _file(f"exif-orientation-{k}.jpg", stored, "result")
    good = _save(rgb, "JPEG")
    _file("exif-damaged.jpg", good[:2] + b"\xff\xe1\x00\x20Exif\x00\x00" + b"\xff" * 26 + good[2:], "result")

    # not plain files
    def fifo(folder: Path) -> Path:
        path = folder / "pipe.png"
        os.mkfifo(path)  # opening it for reading would block forever
        return path

    def folder_named_png(folder: Path) -> Path:
        path = folder / "album.png"
        path.mkdir()
        return path

    def dangling(folder: Path) -> Path:
        path = folder / "dangling.png"
        path.symlink_to(folder / "gone.png")
        return path

    IMAGE_CASES["named-pipe.png"] = ImageCase(fifo, "not a regular file")
    IMAGE_CASES["folder.png"] = ImageCase(folder_named_png, "is a folder")
    IMAGE_CASES["dangling-link.png"] = ImageCase(dangling, "no such file")


_CLIP: bytes | None = None


def _clip_bytes() -> bytes:
    """A tiny H.264 MP4 (made once)."""
    global _CLIP
    if _CLIP is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.mp4"
            ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x32:rate=10", "-t", "0.3", "-c:v", "libx264",
                   "-pix_fmt", "yuv420p", str(path))
            _CLIP = path.read_bytes()
    return _CLIP


_register_image_cases()

# Inputs that are not files: what an API caller might hand ``stylize``.
INPUT_CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "array-object": (lambda: np.array([[None, 1], [2, 3]], dtype=object), "not an image"),
    "array-strings": (lambda: np.array([["a", "b"]]), "not an image"),
    "array-complex": (lambda: np.ones((4, 4, 3), complex), "not an image"),
    "array-nan-inf": (lambda: np.dstack([np.full((6, 5), np.nan), np.full((6, 5), np.inf), np.zeros((6, 5))]),
                      "result"),
    "array-0x0": (lambda: np.zeros((0, 0, 3), np.uint8), "no pixels"),
    "array-two-channels": (lambda: np.zeros((4, 4, 2), np.uint8), "not an image"),
    "array-4d": (lambda: np.zeros((1, 4, 4, 3), np.uint8), "not an image"),
    "array-bool": (lambda: np.ones((5, 6), bool), "result"),
    "array-float-0-255": (lambda: np.asarray(_rgb(), np.float32), "result"),
    "array-float-huge": (lambda: np.asarray(_rgb(), np.float32) * 1000, "use 0..1"),
    "none": (lambda: None, "expected an image"),
    "list": (lambda: [[1, 2], [3, 4]], "expected an image"),
    "empty-string": (lambda: "", "no image given"),
    "bytes-garbage": (lambda: b"\x00\x01garbage" * 10, "not an image"),
    "bytearray-png": (lambda: bytearray(_save(_rgb(), "PNG")), "result"),
    "memoryview-jpeg": (lambda: memoryview(_save(_rgb(), "JPEG")), "result"),
}


# Options as the CLI (--tile, --max-side) or an API caller may pass them, on a 160x96 photo.
OPTION_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "tile-64": ({"tile": 64}, "result"),
    "tile-63": ({"tile": 63}, "too small"),
    "tile-1": ({"tile": 1}, "too small"),
    "tile-negative": ({"tile": -5}, "too small"),
    "max-side-1": ({"max_side": 1}, "result"),
    "max-side-negative": ({"max_side": -1}, "max side"),
}


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory: pytest.TempPathFactory):
    """One stylizer for the module (random v2 weights, fp32), built once: the cases share it."""
    from animegan.stylize import Stylizer
    from animegan.weights import save_weights

    path = tmp_path_factory.mktemp("style") / "fuzz-style.safetensors"
    save_weights(path, make_v2_generator().state_dict(), {"architecture": "animeganv2", "kind": "style"}, dtype=None)
    return Stylizer(str(path), device="cpu")


@pytest.fixture(scope="module")
def exif_reference(stylizer) -> np.ndarray:
    """The upright picture stylized directly: what every EXIF orientation must come out as."""
    return np.asarray(stylizer(_rgb(), APP_OPTIONS), np.float32)


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_fuzz_stylizer_image_files(case: str, stylizer, exif_reference: np.ndarray, tmp_path: Path) -> None:
    spec = IMAGE_CASES[case]
    path = spec.build(tmp_path)
    outcome = bounded(lambda: stylizer(path, APP_OPTIONS, name=path.name))
    if spec.expect != "result":
        assert outcome.message is not None, f"expected a message, got a {type(outcome.value).__name__}"
        assert spec.expect in outcome.message and path.name in outcome.message, outcome.message
        return
    assert outcome.message is None, outcome.message
    out = outcome.value
    assert isinstance(out, Image.Image) and out.mode == ("RGBA" if spec.alpha else "RGB")
    if spec.size:
        assert out.size == spec.size
    assert np.isfinite(np.asarray(out, np.float32)).all()
    if case.startswith("exif-orientation"):  # upright exactly once, whatever the tag (JPEG loss aside)
        assert np.abs(np.asarray(out, np.float32) - exif_reference).mean() < 6.0


def test_16_bit_and_cmyk_files_decode_to_their_pixel_values(tmp_path: Path) -> None:
    """The 16-bit and CMYK cases above are checked for a result of the right size and mode; here,
    that the decoded pixels are the right ones, against conversions written out independently."""
    from animegan.images import prepare_image

    h, w = 48, 64
    # 16-bit: a ramp over the whole 0..65535 range (not only multiples of 257), so that taking the
    # low byte, or scaling a 16-bit value as if it were 8-bit, shows at once. Expected: value >> 8.
    ramp = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    deep = np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])
    alpha = ramp.T.reshape(h, w)
    for name, array, color_type in (("gray", ramp, 0), ("rgb", deep, 2), ("rgba", np.dstack([deep, alpha]), 6)):
        path = tmp_path / f"{name}16.png"
        path.write_bytes(_png16(array, color_type))
        decoded = prepare_image(path)
        expected = (array[:, :, :3] if array.ndim == 3 else np.dstack([array] * 3)) >> 8
        got = np.asarray(decoded.rgb, np.int32)
        assert got.shape == (h, w, 3) and np.abs(got - expected).max() <= 1, name
        if color_type == 6:
            assert np.abs(np.asarray(decoded.alpha, np.int32) - (alpha >> 8)).max() <= 1
        else:
            assert decoded.alpha is None

    # A dark 16-bit greyscale file (every value under 256) stays dark: its depth is the file's, not a guess.
    dark = (ramp // 300).astype(np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    assert np.asarray(prepare_image(tmp_path / "dark16.png").rgb).max() <= (int(dark.max()) >> 8) + 1

    # CMYK with black (K) in it, stored losslessly: R = 255 (1 - C/255)(1 - K/255), and so on.
    rng = np.random.default_rng(3)
    cmyk = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "print.tif")
    c = cmyk.astype(np.float64)
    expected = np.round((255 - c[:, :, :3]) * (255 - c[:, :, 3:]) / 255)
    got = np.asarray(prepare_image(tmp_path / "print.tif").rgb, np.float64)
    assert np.abs(got - expected).max() <= 1
    # A CMYK JPEG (Adobe's inverted storage) made from a photo decodes back to that photo.
    photo = np.asarray(_rgb(w, h))
    (tmp_path / "print.jpg").write_bytes(_save(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95))
    back = np.asarray(prepare_image(tmp_path / "print.jpg").rgb, np.float64)
    assert np.abs(back - photo).mean() < 3.0  # JPEG's loss only; an inverted decode would be off by ~100
    assert np.corrcoef(back.ravel(), photo.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_fuzz_stylizer_other_inputs(case: str, stylizer) -> None:
    make, expect = INPUT_CASES[case]
    outcome = bounded(lambda: stylizer(make(), APP_OPTIONS))
    if expect == "result":
        assert outcome.message is None, outcome.message
        assert isinstance(outcome.value, Image.Image)
    else:
        assert outcome.message is not None and expect in outcome.message, outcome.message


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_fuzz_stylizer_options(case: str, stylizer) -> None:
    """Before the checks in StyleOptions, a tile of 64 divided by zero, 1 failed in torch, 32 gave NaN pixels."""
    from animegan.stylize import StyleOptions

    options, expect = OPTION_CASES[case]
    photo = _rgb(160, 96)
    outcome = bounded(lambda: stylizer(photo, StyleOptions(**options)))
    if expect != "result":
        assert outcome.message is not None and expect in outcome.message, outcome.message
        return
    assert outcome.message is None, outcome.message
    out = np.asarray(outcome.value, np.float32)
    assert out.shape == (96, 160, 3) and np.isfinite(out).all() and out.std() > 5
    if "tile" in options:  # the tiles match the whole picture run at once (seams aside)
        assert np.abs(out - np.asarray(stylizer(photo, StyleOptions(tile=0)), np.float32)).mean() < 4.0


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_fuzz_dataset_loader_files(case: str, tmp_path: Path) -> None:
    from train.data import load_square

    spec = IMAGE_CASES[case]
    path = spec.build(tmp_path)
    outcome = bounded(lambda: load_square(path, 16))
    if spec.expect == "result":
        assert outcome.message is None, outcome.message
        assert outcome.value.shape == (16, 16, 3) and outcome.value.dtype == np.uint8
    else:
        assert outcome.message is not None and spec.expect in outcome.message, outcome.message


def test_dataset_loader_skips_every_bad_file_of_a_folder(tmp_path: Path) -> None:
    """All image cases in one training folder: the readable ones load, the others are skipped with a reason."""
    from animegan.images import image_files
    from train.data import ImageFolderDataset

    folder = tmp_path / "data"
    folder.mkdir()
    for spec in IMAGE_CASES.values():
        spec.build(folder)
    listed = image_files([folder])
    good = {p.name for p in listed if IMAGE_CASES.get(p.name) and IMAGE_CASES[p.name].expect == "result"}
    for preload in (True, False):
        ds = bounded(lambda: ImageFolderDataset(folder, 16, preload=preload, workers=2, verbose=False)).value
        if preload:
            assert {p.name for p in ds.files} == good
            assert len(ds.skipped) == len(listed) - len(good)
            assert all("\n" not in reason for reason in ds.skipped)
        batch = ds.load_batch(list(range(len(ds))))  # lazily: unreadable files swapped for readable ones
        assert batch.shape == (len(ds), 3, 16, 16) and torch.isfinite(batch).all()


DATASET_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing-folder": (lambda t: t / "nope", "no such folder"),
    "file-not-folder": (lambda t: (t / "f.png").write_bytes(_save(_rgb(), "PNG")) and t / "f.png", "is a file"),
    "empty-folder": (lambda t: (t / "empty").mkdir() or t / "empty", "no images found"),
    "only-bad-files": (lambda t: _bad_folder(t), "none of the 3 images could be read"),
    "symlink-loop": (lambda t: _loop_folder(t), "result"),
}


def _bad_folder(tmp: Path) -> Path:
    folder = tmp / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"no")
    (folder / "c.gif").write_bytes(_save(_rgb(), "GIF")[:30])
    return folder


def _loop_folder(tmp: Path) -> Path:
    folder = tmp / "loop"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "again").symlink_to(folder)  # a listing that followed it would never end
    (folder / "face.png").write_bytes(_save(_rgb(), "PNG"))
    return folder


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_fuzz_dataset_folders(case: str, tmp_path: Path) -> None:
    from train.data import ImageFolderDataset

    build, expect = DATASET_CASES[case]
    folder = build(tmp_path)
    outcome = bounded(lambda: ImageFolderDataset(folder, 16, verbose=False))
    if expect == "result":
        assert outcome.message is None and len(outcome.value) >= 1
    else:
        assert outcome.message is not None and expect in outcome.message, outcome.message


MUTATIONS = 3000  # seeded byte flips, insertions and cuts of small valid files


def test_fuzz_seeded_mutations_of_valid_files() -> None:
    """Random damage to PNG, JPEG, GIF (animated), WebP, BMP and TIFF files: never a crash.

    Before the fix in ``animegan.images.prepare_image`` about one in 150 of these crashed
    (a damaged later GIF/TIFF frame raised IndexError/struct.error/TypeError from a frame count).
    """
    from animegan.images import prepare_image

    rng = np.random.default_rng(7)
    base = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    seeds = [_save(base, "PNG"), _save(base, "JPEG"), _save(base, "WEBP"), _save(base, "BMP"),
             _save(base, "GIF", save_all=True, append_images=[base.rotate(90)]),
             _save(base, "TIFF", compression="tiff_lzw"), _save(base, "TIFF", save_all=True,
                                                                append_images=[base.rotate(90)])]
    results = messages = 0
    for _ in range(MUTATIONS):
        data = bytearray(seeds[int(rng.integers(len(seeds)))])
        for _ in range(int(rng.integers(1, 5))):
            at = int(rng.integers(len(data)))
            op = int(rng.integers(3))
            if op == 0:
                data[at] = int(rng.integers(256))
            elif op == 1:
                del data[max(8, at):]
            else:
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
        try:
            prepare_image(bytes(data), "mutant")
            results += 1
        except AnimeGANError:
            messages += 1
    assert results + messages == MUTATIONS and results > 0 and messages > 0


# ----------------------------------------------------------------------------------------
# Video cases
# ----------------------------------------------------------------------------------------
def _video(name: str, *args: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        ffmpeg(*args, str(path))
        return path

    return build


def _bytes_file(name: str, data: Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data())
        return path

    return build


def _bytes_patched(build: Callable[[Path], Path], old: bytes, new: bytes) -> Callable[[Path], Path]:
    """A built file with a byte pattern replaced, e.g. its codec tag (a codec no decoder knows)."""
    def patched(folder: Path) -> Path:
        path = build(folder)
        data = path.read_bytes()
        assert old in data
        path.write_bytes(data.replace(old, new))
        return path

    return patched


def _renamed(build: Callable[[Path], Path], name: str) -> Callable[[Path], Path]:
    def renamed(folder: Path) -> Path:
        return build(folder).rename(folder / name)

    return renamed


def _damaged(build: Callable[[Path], Path], how: str) -> Callable[[Path], Path]:
    def damaged(folder: Path) -> Path:
        path = build(folder)
        data = bytearray(path.read_bytes())
        if how == "tail":
            del data[len(data) * 2 // 3:]
        else:  # scramble a stretch in the middle
            for i in range(len(data) // 2, len(data) // 2 + 400):
                data[i] ^= 0x5A
        path.write_bytes(bytes(data))
        return path

    return damaged


_SRC = ["-f", "lavfi", "-i", "testsrc2=size=48x32:rate=10"]
_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_TONE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"]
_GOOD = _video("good.mp4", *_SRC, "-t", "0.5", *_H264)
_GOOD_FASTSTART = _video("fast.mp4", *_SRC, "-t", "1", *_H264, "-movflags", "+faststart")


def _no_frames(folder: Path) -> Path:
    """A Matroska file whose video track (48x32 H.264) is declared but holds no packets, beside a sound track."""
    with_frames = _video("av.mp4", *_SRC, *_TONE, "-t", "0.5", *_H264, "-c:a", "aac")(folder)
    path = folder / "no-frames.mkv"
    ffmpeg("-i", str(with_frames), "-map", "0", "-c", "copy", "-bsf:v", "noise=drop=1", str(path))
    with_frames.unlink()
    return path


def _playlist(folder: Path) -> Path:
    """An HLS playlist naming another file on the machine: ffmpeg would open and read it."""
    segment = _video("secret.ts", *_SRC, "-t", "0.5", *_H264)(folder)
    path = folder / "list.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\n{segment}\n#EXT-X-ENDLIST\n")
    return path


def _fifo_video(folder: Path) -> Path:
    path = folder / "pipe.mp4"
    os.mkfifo(path)
    return path


@dataclass
class VideoCase:
    build: Callable[[Path], Path]
    expect: str  # "result", "either" (damaged files: what survives, or a message) or a message fragment
    size: tuple[int, int] | None = None
    frames: int | None = None


VIDEO_CASES: dict[str, VideoCase] = {
    "zero-byte": VideoCase(_bytes_file("empty.mp4", lambda: b""), "empty file"),
    "truncated-no-index": VideoCase(_renamed(_damaged(_GOOD, "tail"), "cut.mp4"), "not a video file"),
    "truncated-faststart": VideoCase(_damaged(_GOOD_FASTSTART, "tail"), "either"),
    "scrambled-middle": VideoCase(_damaged(_GOOD, "middle"), "either"),
    "text-as-mp4": VideoCase(_bytes_file("notes.mp4", lambda: b"hello\n" * 50), "not a video file"),
    "still-png-as-mp4": VideoCase(_bytes_file("still.mp4", lambda: _save(_rgb(), "PNG")), "still image"),
    "audio-only-m4a": VideoCase(_video("tone.m4a", *_TONE, "-t", "0.5", "-c:a", "aac"), "audio-only"),
    "audio-only-named-mp4": VideoCase(_video("tone.mp4", *_TONE, "-t", "0.5", "-c:a", "aac"), "audio-only"),
    "container-without-streams": VideoCase(_video("none.mp4", *_SRC, "-frames:v", "0", *_H264),
                                           "without a video stream"),
    "video-stream-with-no-frames": VideoCase(_no_frames, "no frames could be decoded"),
    "unknown-codec-tag": VideoCase(_bytes_patched(_GOOD, b"avc1", b"zzzz"), "codec ('zzzz') is unknown"),
    "odd-33x17-h264": VideoCase(_video("odd.mp4", "-f", "lavfi", "-i", "testsrc2=size=33x17:rate=10", "-t", "0.5",
                                       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"),
                                "result", (32, 16), 5),
    "odd-33x17-mjpeg-avi": VideoCase(_video("odd.avi", "-f", "lavfi", "-i", "testsrc2=size=33x17:rate=10", "-t", "0.5",
                                            "-c:v", "mjpeg"), "result", (32, 16), 5),
    "tiny-3x3": VideoCase(_video("tiny.mkv", "-f", "lavfi", "-i", "testsrc2=size=3x3:rate=10", "-t", "0.3",
                                 "-c:v", "ffv1"), "result", (2, 2), 3),
    "animated-gif-input": VideoCase(_video("anim.gif", *_SRC, "-t", "0.5"), "result", (48, 32), 5),
    "mp4-named-avi": VideoCase(_renamed(_GOOD, "good.avi"), "result", (48, 32), 5),
    "over-8k-frame": VideoCase(_video("huge.avi", "-f", "lavfi", "-i", "color=black:s=8200x4100", "-frames:v", "1",
                                      "-c:v", "mjpeg"), "too large"),
    "named-pipe": VideoCase(_fifo_video, "not a regular file"),
    "playlist-naming-a-local-file": VideoCase(_playlist, "not a video file"),
    "folder": VideoCase(lambda t: (t / "clip.mp4").mkdir() or t / "clip.mp4", "is a folder"),
}


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_fuzz_video(case: str, stylizer, tmp_path: Path) -> None:
    from animegan.video import stylize_video

    spec = VIDEO_CASES[case]
    source = spec.build(tmp_path)
    target = tmp_path / "out" / "anime.mp4"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the pipeline's ffmpeg processes share the two cores
    try:
        outcome = bounded(lambda: stylize_video(source, target, stylizer=stylizer, batch_size=2))
    finally:
        torch.set_num_threads(before)
    leftovers = [p.name for p in target.parent.iterdir() if p != target] if target.parent.exists() else []
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if spec.expect in ("result", "either") and outcome.message is None:
        result = outcome.value
        assert result.path == target and target.stat().st_size > 0 and result.frames >= 1
        if spec.size:
            assert (result.width, result.height) == spec.size
        if spec.frames:
            assert result.frames == spec.frames
        return
    assert spec.expect != "result", outcome.message
    assert outcome.message is not None and not target.exists()
    if spec.expect != "either":
        assert spec.expect in outcome.message, outcome.message


def test_video_probe_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled header probe becomes a message after PROBE_TIMEOUT_S, not an endless wait or a traceback."""
    from animegan import video

    slow = tmp_path / "slow-ffmpeg"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    clip = _GOOD(tmp_path)
    monkeypatch.setattr(video, "ffmpeg_exe", lambda: str(slow))
    monkeypatch.setattr(video, "PROBE_TIMEOUT_S", 0.5)
    outcome = bounded(lambda: video.probe_video(clip), seconds=20)
    assert outcome.message is not None and "took over 0.5 s" in outcome.message


# ----------------------------------------------------------------------------------------
# Time limits per request
# ----------------------------------------------------------------------------------------
def test_time_limit_stops_stylizer_video_and_faces_between_units(stylizer, tmp_path: Path) -> None:
    from animegan.faces import FaceGenerator
    from animegan.limits import TimeLimitExceeded, check_time, time_left, time_limit
    from animegan.models.dcgan import DCGANConfig, DCGANGenerator
    from animegan.stylize import StyleOptions
    from animegan.video import stylize_video

    big = _rgb(160, 160)
    with time_limit(300, "tiles"):
        assert stylizer(big, StyleOptions(tile=64)).size == (160, 160)  # 16 tiles, well inside the limit
        assert 0 < time_left() <= 300
    with pytest.raises(TimeLimitExceeded, match="tiles: stopped at the 0 s time limit"):
        with time_limit(0, "tiles"):
            stylizer(big, StyleOptions(tile=64))
    with time_limit(0.2, "nested"), time_limit(300, "inner"):  # the earlier deadline wins
        time.sleep(0.25)
        with pytest.raises(TimeLimitExceeded, match="nested"):
            check_time()
    check_time()  # no limit outside a block

    clip = _GOOD(tmp_path)
    out = tmp_path / "out.mp4"
    with pytest.raises(TimeLimitExceeded), time_limit(0, "stylizing the video"):
        stylize_video(clip, out, stylizer=stylizer)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["good.mp4"]  # nothing left behind

    torch.manual_seed(0)
    faces = FaceGenerator(DCGANGenerator(DCGANConfig(image_size=16, latent_dim=8, width=8)).eval(), device="cpu")
    with pytest.raises(TimeLimitExceeded), time_limit(0, "making faces"):
        faces.grid(list(range(40)))


# ----------------------------------------------------------------------------------------
# The app: upload limit, time limit, one model slot, queue limit
# ----------------------------------------------------------------------------------------
MODEL_HANDLERS = {"run_photo", "run_video", "face_image", "grid_image", "interpolation_image", "morph_file"}


def test_every_model_event_shares_the_one_slot(weights_dir: Path) -> None:
    from animegan.ui import build_app, configure_queue
    from animegan.ui.common import MODEL_SLOT

    demo = configure_queue(build_app(), max_size=5)
    model_fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") in MODEL_HANDLERS]
    assert {f.fn.__name__ for f in model_fns} == MODEL_HANDLERS
    for f in model_fns:  # queued (a queue=False event would bypass the slot), in the shared slot, one at a time
        assert f.queue and f.concurrency_id == MODEL_SLOT and f.concurrency_limit == 1, f.fn.__name__
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 1


@pytest.fixture
def app_server(style: str, monkeypatch: pytest.MonkeyPatch):
    """The app served in this process through ``animegan.ui.launch``, with small limits for the tests."""
    import animegan.ui.common as common
    from animegan.ui import launch

    monkeypatch.setattr(common, "MAX_FILE_SIZE", "40kb")
    monkeypatch.setattr(common, "QUEUE_SIZE", 2)
    monkeypatch.setattr(common, "SESSION_CAPACITY", 3)
    port = free_port()
    demo = launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_upload_limit_time_limit_one_slot_and_full_queue(app_server, style: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    import animegan.ui.common as common

    demo, url = app_server
    assert demo.max_file_size == 40 * 1024
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 40 * 1024
    small = tmp_path / "small.png"
    _rgb(36, 28).save(small)
    client = Client(url, verbose=False)

    # Uploads: the client refuses early, and the server refuses a raw upload (a client that ignores the limit).
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), style, None, False, False, 0, api_name="/stylize")
    with open(big, "rb") as fh:
        answer = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", fh, "image/png")}, timeout=30)
    assert answer.status_code == 413 and "exceed" in answer.text.lower()

    # A typed style that names a server file is refused like any unknown style (no path probing).
    for sneaky in (str(REPO / "app.py"), "../weights/" + style, "/etc/passwd"):
        with pytest.raises(AppError, match="unknown style"):
            client.predict(handle_file(str(small)), sneaky, None, False, False, 0, api_name="/stylize")

    # A raw request naming a server file that was never uploaded is refused, although the Photo
    # event skips preprocessing (gradio_client would upload such a file itself, so plain HTTP here).
    secret = tmp_path / "server-only.png"
    _rgb(20, 20).save(secret)
    named = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    for data in ([named, style, None, False, False, 0], [named, style, named, False, False, 0]):
        event = httpx.post(f"{url}gradio_api/call/stylize", json={"data": data}, timeout=30).json()["event_id"]
        with httpx.stream("GET", f"{url}gradio_api/call/stylize/{event}", timeout=60) as stream:
            reply = stream.read().decode()
        assert "event: error" in reply and "not uploaded by a user" in reply, reply[:300]

    # The per-request time limit ends a request with a message.
    monkeypatch.setitem(common.TIME_LIMITS_S, "photo", 0)
    with pytest.raises(AppError, match="time limit per request"):
        client.predict(handle_file(str(small)), style, None, False, False, 0, api_name="/stylize")
    monkeypatch.setitem(common.TIME_LIMITS_S, "photo", 120)

    # One model slot across tabs: hold the photo handler inside the slot, then send faces and video work.
    gate, lock = threading.Event(), threading.Lock()
    running, peak = [0], [0]

    def watched(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                if fn.__name__ == "run_photo":
                    gate.wait(30)
                return fn(*args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1

        return wrapper

    for f in demo.fns.values():
        if getattr(f.fn, "__name__", "") in MODEL_HANDLERS:
            monkeypatch.setattr(f, "fn", watched(f.fn))
    held = Client(url, verbose=False).submit(handle_file(str(small)), style, None, False, False, 0,
                                             api_name="/stylize")
    deadline = time.monotonic() + 20
    while running[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running[0] == 1
    from animegan.faces import SLIDER_COUNT

    faces_index = next(i for i, f in demo.fns.items() if getattr(f.fn, "__name__", "") == "face_image")
    waiting = [Client(url, verbose=False).submit(None, 0, 1.0, *[0.0] * SLIDER_COUNT, fn_index=faces_index)
               for _ in range(2)]  # fills the queue of 2
    time.sleep(0.5)
    assert running[0] == 1  # the faces requests wait: the photo holds the slot
    with pytest.raises(QueueError, match="Queue is full"):
        Client(url, verbose=False).submit(handle_file(str(small)), style, None, False, False, 0,
                                          api_name="/stylize").result(timeout=30)
    gate.set()
    pair, download = held.result(timeout=60)
    assert Image.open(download).size == (36, 28)
    for job in waiting:  # no face weights here: a plain message, after their turn in the slot
        with pytest.raises(AppError, match="no face weights"):
            job.result(timeout=60)
    assert peak[0] == 1
    # Gradio keeps ~0.2 MB of per-session config for this app: only the newest SESSION_CAPACITY sessions.
    holder = demo.server_app.state_holder
    assert holder.capacity == 3 and 0 < len(holder.session_data) <= 3


# ----------------------------------------------------------------------------------------
# Crash: kill -9 a face training run mid-step, damage its newest checkpoint, resume
# ----------------------------------------------------------------------------------------
CHECKPOINT_EVERY = 3
CRASH_FAULTS = ["SIGKILL mid-step", "truncated newest checkpoint", "malicious pickle as newest checkpoint",
                "half-written temporary checkpoint file"]


class _Evil:
    marker: Path

    def __reduce__(self):  # the payload a hostile file would carry
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path: Path, marker: Path, legacy: bool = False, **extra: Any) -> Path:
    evil = _Evil()
    evil.marker = marker
    torch.save({**extra, "payload": evil}, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_kill_nine_mid_step_then_damaged_checkpoints_then_resume(tmp_path: Path) -> None:
    from animegan.runs import RunFolder
    from train.faces import main

    data = tmp_path / "faces"
    data.mkdir()
    for i in range(8):
        _rgb(20, 20, seed=i).save(data / f"f{i}.png")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"g_width": 8, "d_width": 8, "image_size": 16, "batch_size": 4, "sample_count": 4,
                                  "log_every": 1, "sample_every": 1000, "checkpoint_every": CHECKPOINT_EVERY}))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "train.faces", "--data", str(data), "--out", str(out),
                             "--steps", "100000", "--config", str(config), "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = RunFolder(out)
    deadline = time.monotonic() + 90
    try:
        while len(run.checkpoints()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert len(run.checkpoints()) >= 2, "the trainer did not reach its second checkpoint"
        time.sleep(0.05)  # into the middle of a later step
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Nothing the kill left is corrupt, and at most the steps since the newest checkpoint are lost.
    for path in run.checkpoints():
        assert isinstance(torch.load(path, weights_only=True)["G"], dict)
    newest = int(torch.load(run.checkpoints()[-1], weights_only=True)["step"])
    logged = run.metrics()[-1]["step"]
    assert 0 <= logged - newest <= CHECKPOINT_EVERY

    # The faults a crash or a hostile hand can leave: a cut newest file, a pickle, a half-written temp file.
    whole = run.checkpoints()[-1].read_bytes()
    (run.checkpoints_dir / f"step_{newest + 1:08d}.pt").write_bytes(whole[: len(whole) // 2])
    marker = tmp_path / "pwned"
    _evil_pickle(run.checkpoints_dir / f"step_{newest + 2:08d}.pt", marker, step=newest + 2)
    partial = run.checkpoints_dir / f".step_{newest + 3:08d}.x1y2z3.part.pt"
    partial.write_bytes(whole[:1000])

    target = newest + 2
    assert main(["--out", str(out), "--steps", str(target), "--resume", "--quiet"]) == 0
    assert not marker.exists()  # the pickle was refused, never run
    assert not partial.exists()
    assert sorted(p.name for p in run.checkpoints_dir.glob("*.damaged")) == [
        f"step_{newest + 1:08d}.pt.damaged", f"step_{newest + 2:08d}.pt.damaged"]
    for path in run.checkpoints():  # every checkpoint left loads, the newest is the target
        assert int(torch.load(path, weights_only=True)["step"]) == int(path.stem.split("_")[1])
    assert int(torch.load(run.checkpoints()[-1], weights_only=True)["step"]) == target
    steps = [r["step"] for r in run.metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == target  # the lost steps were redone once
    assert run.read_status()["state"] == "finished"


# ----------------------------------------------------------------------------------------
# Untrusted weights
# ----------------------------------------------------------------------------------------
def _v2_state() -> dict[str, torch.Tensor]:
    return make_v2_generator(seed=3).state_dict()


def _legacy_pickle(tmp: Path, marker: Path):
    path = _evil_pickle(tmp / "old-format.pt", marker, legacy=True)
    return (lambda: _load(path)), "refused"


def _pickle_named_safetensors(tmp: Path, marker: Path):
    path = _evil_pickle(tmp / "style.safetensors", marker)
    return (lambda: _load(path)), "not a readable safetensors"


def _pickle_in_checkpoint_dict(tmp: Path, marker: Path):
    path = _evil_pickle(tmp / "ckpt.pth", marker, **{"model_state_dict": _v2_state()})
    return (lambda: _load(path)), "refused"


def _pickle_as_preset_download(tmp: Path, marker: Path):
    from animegan.weights import fetch_preset

    served = _evil_pickle(tmp / "served.pt", marker)

    def fetch() -> Any:
        try:
            return fetch_preset("paprika", url=served.as_uri())
        finally:
            assert not any((tmp / "cache" / "presets").glob("paprika*")), "a refused download was cached"

    return fetch, "refused"


def _pickle_in_cache_with_forged_checksum(tmp: Path, marker: Path):
    from animegan.fileio import file_sha256
    from animegan.weights import load_weights

    presets = tmp / "cache" / "presets"
    presets.mkdir(parents=True)
    path = _evil_pickle(presets / "paprika.pt", marker)
    (presets / "paprika.sha256").write_text(file_sha256(path) + "\n")  # the sidecar cannot vouch for content
    return (lambda: load_weights("paprika")), "refused"


def _pickle_uploaded_in_photo_tab(tmp: Path, marker: Path):
    import gradio as gr

    from animegan.ui.photo import run_photo

    path = _evil_pickle(tmp / "upload.pt", marker)
    photo = tmp / "p.png"
    _rgb(24, 24).save(photo)

    def upload() -> Any:
        try:
            return run_photo(str(photo), None, str(path), False, False, 0)
        except gr.Error as exc:  # what the page shows
            raise AnimeGANError(exc.message) from None

    return upload, "refused"


def _pickle_as_training_checkpoint(tmp: Path, marker: Path):
    from animegan.export import export_faces as export
    from animegan.runs import RunFolder

    run = RunFolder(tmp / "run")
    run.create({"data": "x", "image_size": 16})
    _evil_pickle(run.checkpoints_dir / "step_00000010.pt", marker, step=10)
    return (lambda: export(run.path, "stolen", weights_dir=tmp / "w")), "no checkpoint to export"


def _truncated_safetensors(tmp: Path, marker: Path):
    from animegan.weights import save_weights

    path = save_weights(tmp / "cut.safetensors", _v2_state(), {"architecture": "animeganv2"})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    path.with_suffix(".json").unlink()
    return (lambda: _load(path)), "not a readable safetensors"


def _safetensors_header_past_end(tmp: Path, marker: Path):
    path = tmp / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    return (lambda: _load(path)), "not a readable safetensors"


def _safetensors_wrong_shapes(tmp: Path, marker: Path):
    from animegan.weights import save_weights

    state = _v2_state()
    state["out_layer.0.weight"] = torch.zeros(3, 32, 3, 3)
    path = save_weights(tmp / "shapes.safetensors", state, {"architecture": "animeganv2"})
    return (lambda: _load(path)), "has shape (3, 32, 3, 3)"


def _safetensors_of_another_architecture(tmp: Path, marker: Path):
    from animegan.weights import save_weights

    path = save_weights(tmp / "v3.safetensors", _v2_state(), {"architecture": "animeganv3"})
    return (lambda: _load(path)), "do not fit the architecture"


def _metadata_asking_for_a_giant_network(tmp: Path, marker: Path):
    from animegan.weights import save_weights

    # A few-hundred-byte file whose config asks for ~15 GB of v3 parameters (width 2048): refused by
    # its shapes before any memory is allocated.
    path = save_weights(tmp / "giant.safetensors", {"enc.0.weight": torch.zeros(1)},
                        {"architecture": "animeganv3", "config": {"width": 2048, "residual_blocks": 64}})
    return (lambda: _load(path)), "do not fit the architecture"


def _metadata_with_absurd_counts(tmp: Path, marker: Path):
    from animegan.weights import save_weights

    path = save_weights(tmp / "absurd.safetensors", {"x": torch.zeros(1)},
                        {"architecture": "animeganv3", "config": {"residual_blocks": 10**9}})
    return (lambda: _load(path)), "implausible architecture config (residual_blocks=1000000000)"


def _damaged_cached_preset_offline(tmp: Path, marker: Path):
    from animegan.fileio import file_sha256
    from animegan.weights import load_weights

    presets = tmp / "cache" / "presets"
    presets.mkdir(parents=True)
    path = presets / "paprika.pt"
    torch.save(_v2_state(), path)
    (presets / "paprika.sha256").write_text(file_sha256(path) + "\n")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped: only the checksum can tell
    path.write_bytes(bytes(data))

    def load() -> Any:
        try:
            return load_weights("paprika")
        finally:
            assert not path.exists(), "the damaged copy must be dropped, not kept"

    return load, "not cached and downloads are off"


def _load(path: Path) -> Any:
    from animegan.stylize import Stylizer

    return Stylizer(str(path), device="cpu")


WEIGHTS_BUILDERS: dict[str, Callable[[Path, Path], tuple[Callable[[], Any], str]]] = {
    "pickle-legacy-format": _legacy_pickle,
    "pickle-named-safetensors": _pickle_named_safetensors,
    "pickle-inside-checkpoint-dict": _pickle_in_checkpoint_dict,
    "pickle-as-preset-download": _pickle_as_preset_download,
    "pickle-in-cache-with-forged-checksum": _pickle_in_cache_with_forged_checksum,
    "pickle-uploaded-in-photo-tab": _pickle_uploaded_in_photo_tab,
    "pickle-as-training-checkpoint": _pickle_as_training_checkpoint,
    "safetensors-truncated": _truncated_safetensors,
    "safetensors-header-past-end": _safetensors_header_past_end,
    "safetensors-wrong-shapes": _safetensors_wrong_shapes,
    "safetensors-other-architecture": _safetensors_of_another_architecture,
    "cached-preset-bit-flip-offline": _damaged_cached_preset_offline,
    "metadata-asking-for-a-giant-network": _metadata_asking_for_a_giant_network,
    "metadata-with-absurd-counts": _metadata_with_absurd_counts,
}


@pytest.mark.parametrize("case", list(WEIGHTS_BUILDERS))
def test_untrusted_weights(case: str, tmp_path: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANIMEGAN_CACHE", str(tmp_path / "cache"))
    if case == "pickle-as-preset-download":
        monkeypatch.delenv("ANIMEGAN_OFFLINE", raising=False)  # a file:// URL: still no network
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("ANIMEGAN_OFFLINE", "1")
    marker = tmp_path / "pwned"
    use, expect = WEIGHTS_BUILDERS[case](tmp_path, marker)  # (how the file is used, the message expected)
    outcome = bounded(use)
    assert outcome.message is not None and expect in outcome.message, outcome.message
    assert not marker.exists(), "the pickled payload ran"


def test_partial_cached_preset_is_fetched_again(weights_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between moving the file in and writing its checksum: the copy is not trusted, it is fetched again."""
    from animegan.weights import _cached_preset_path, fetch_preset

    monkeypatch.delenv("ANIMEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    served = tmp_path / "served.pt"
    torch.save(_v2_state(), served)
    cached = _cached_preset_path("celeba_distill")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(served.read_bytes()[:-100])  # no .sha256 beside it
    mtime = cached.stat().st_mtime_ns
    assert fetch_preset("celeba_distill", url=served.as_uri()).read_bytes() == served.read_bytes()
    assert cached.with_suffix(".sha256").is_file() and cached.stat().st_mtime_ns != mtime


# ----------------------------------------------------------------------------------------
# Paths: run names, export names and dataset folders stay inside their roots
# ----------------------------------------------------------------------------------------
BAD_NAMES = ["../x", "..", "/abs", "a/b", "a\\b", ".hidden", "-rf", "a\x00b", "two\nlines", "x" * 65, "", "~root",
             "ok..", "spa ce"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_cannot_escape(name: str, tmp_path: Path) -> None:
    from animegan.training import run_path
    from animegan.export import export_faces as export
    from animegan.runs import RunFolder

    root = tmp_path / "runs"
    with pytest.raises(AnimeGANError):
        run_path(name, root)
    run = RunFolder(tmp_path / "run")
    weights = tmp_path / "weights" / "inner"
    outcome = bounded(lambda: export(run.path, name, weights_dir=weights))
    assert outcome.message is not None and "weights name" in outcome.message
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], f"files written for a bad name: {written}"


def test_cli_refuses_a_bad_export_name_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.faces import main

    data = tmp_path / "d"
    data.mkdir()
    _rgb(16, 16).save(data / "a.png")
    started = time.monotonic()
    assert main(["--data", str(data), "--out", str(tmp_path / "r"), "--steps", "5", "--export", "../../evil"]) == 2
    assert "bad weights name" in capsys.readouterr().err and time.monotonic() - started < 5
    assert not (tmp_path / "r").exists()


def test_dataset_folders_stay_inside_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from animegan.training import dataset_folders, inspect_dataset

    root = tmp_path / "data"
    faces = root / "faces"
    faces.mkdir(parents=True)
    _rgb(16, 16).save(faces / "a.png")
    outside = tmp_path / "private"
    (outside / "real_images").mkdir(parents=True)
    (outside / "anime_images").mkdir()
    _rgb(16, 16).save(outside / "secret.png")
    (root / "link").symlink_to(outside)
    style = root / "style"
    style.mkdir()
    (style / "real_images").symlink_to(outside / "real_images")  # a subfolder pointing out
    (style / "anime_images").mkdir()

    assert inspect_dataset("faces", str(outside)).ok  # no root set: a local app may use any folder
    monkeypatch.setenv("ANIMEGAN_DATA_ROOT", str(root))
    assert dataset_folders("faces", "faces") == [("faces", faces)]  # relative to the root
    assert inspect_dataset("faces", str(faces)).folders[0].readable == 1
    for kind, given in [("faces", str(outside)), ("faces", "../private"), ("faces", "link"), ("faces", "/"),
                        ("style", "link"), ("style", "style")]:
        with pytest.raises(AnimeGANError, match="outside the data folder"):
            inspect_dataset(kind, given)


# ----------------------------------------------------------------------------------------
# The counts in docs/reliability.md
# ----------------------------------------------------------------------------------------
def suite_counts() -> dict[str, int]:
    """What the suite tries, by the names docs/reliability.md uses."""
    import test_load

    counts = {
        "IMAGE_CASES": len(IMAGE_CASES),
        "INPUT_CASES": len(INPUT_CASES) + len(OPTION_CASES),
        "LOADER_CASES": len(IMAGE_CASES) + len(DATASET_CASES),
        "VIDEO_CASES": len(VIDEO_CASES),
        "MUTATIONS": MUTATIONS,
        "LOAD_CLIENTS": test_load.CLIENTS,
        "LOAD_REQUESTS": test_load.CLIENTS * test_load.REQUESTS_PER_CLIENT * test_load.ROUNDS,
        "LOAD_RSS_TOLERANCE_MB": test_load.RSS_TOLERANCE_MB,
        "CRASH_FAULTS": len(CRASH_FAULTS),
        "WEIGHTS_CASES": len(WEIGHTS_BUILDERS) + 1,  # + the partial cached preset fetched again
        "PATH_CASES": len(BAD_NAMES) * 2 + 1 + 6,  # run_path and export per name, the CLI, six dataset escapes
        "STEPS_LOST_AT_MOST": CHECKPOINT_EVERY,
    }
    counts["INPUTS_TOTAL"] = (counts["IMAGE_CASES"] + counts["INPUT_CASES"] + counts["LOADER_CASES"]
                              + counts["VIDEO_CASES"] + counts["MUTATIONS"])
    counts["FAULTS_TOTAL"] = counts["CRASH_FAULTS"] + counts["WEIGHTS_CASES"] + counts["PATH_CASES"]
    return counts


def test_reliability_doc_counts_match_the_suite() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    # Table rows end in: | <number> | `NAME` |
    found = {name: int(number) for number, name in re.findall(r"\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|", doc)}
    expected = suite_counts()
    assert found == expected
