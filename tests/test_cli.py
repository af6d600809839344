"""``python -m animegan stylize`` end to end, in a subprocess as a user would run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import REPO, gradient_image


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "animegan", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_stylize_folder_skips_bad_files_and_fails_overall(style: str, weights_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(gradient_image(40, 30)).save(src / "a.jpg")
    Image.fromarray(gradient_image(30, 40)).convert("RGBA").save(src / "sub" / "b.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = _cli("stylize", str(src), "-o", str(out), "--style", style, env={"ANIMEGAN_WEIGHTS_DIR": str(weights_dir)})
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert Image.open(out / "a.jpg").size == (40, 30)
    b = Image.open(out / "sub" / "b.png")
    assert b.size == (30, 40) and b.mode == "RGBA"
    assert not list(out.rglob("*.part*"))


def test_stylize_one_file_to_a_named_output(style: str, weights_dir: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient_image(50, 50)).save(photo)
    target = tmp_path / "result" / "anime.webp"
    result = _cli("stylize", str(photo), "-o", str(target), "--style", style, "--keep-colors", "--max-side", "32",
                  env={"ANIMEGAN_WEIGHTS_DIR": str(weights_dir)})
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (50, 50)


def test_clear_errors_exit_2(weights_dir: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient_image(20, 20)).save(photo)
    env = {"ANIMEGAN_WEIGHTS_DIR": str(weights_dir), "ANIMEGAN_OFFLINE": "1"}
    no_style = _cli("stylize", str(photo), "-o", str(tmp_path / "o"), env=env)
    assert no_style.returncode == 2 and "no anime style is available offline" in no_style.stderr
    unknown = _cli("stylize", str(photo), "-o", str(tmp_path / "o"), "--style", "nope", env=env)
    assert unknown.returncode == 2 and "unknown style or missing file 'nope'" in unknown.stderr
    missing = _cli("stylize", str(tmp_path / "absent.jpg"), "-o", str(tmp_path / "o"), "--style",
                   "face_paint_512_v2", env=env)
    assert missing.returncode == 2 and "not cached" in missing.stderr
    for r in (no_style, unknown, missing):
        assert "Traceback" not in r.stderr


def test_results_never_overwrite_each_other_and_keep_the_named_format(style: str, tmp_path: Path) -> None:
    from animegan.cli import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(gradient_image(20, 16, seed=1)).save(tmp_path / "a" / "x.png")
    Image.fromarray(gradient_image(16, 20, seed=2)).save(tmp_path / "b" / "x.png")
    Image.fromarray(gradient_image(24, 24, seed=3)).save(tmp_path / "a" / "photo.tif")
    Image.fromarray(gradient_image(28, 28, seed=4)).save(tmp_path / "a" / "photo.bmp")
    out = tmp_path / "out"
    assert main(["stylize", str(tmp_path / "a"), str(tmp_path / "b" / "x.png"), "-o", str(out), "--style", style]) == 0
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"x.png": (20, 16), "x-2.png": (16, 20), "photo.png": (28, 28), "photo-2.png": (24, 24)} or \
        sizes == {"x.png": (20, 16), "x-2.png": (16, 20), "photo.png": (24, 24), "photo-2.png": (28, 28)}
    for suffix, fmt in ((".bmp", "BMP"), (".tif", "TIFF"), (".webp", "WEBP")):
        target = tmp_path / f"named{suffix}"
        assert main(["stylize", str(tmp_path / "a" / "x.png"), "-o", str(target), "--style", style]) == 0
        with Image.open(target) as written:
            assert written.format == fmt and written.size == (20, 16)


def test_batch_progress_starts_before_the_first_file(style: str, tmp_path: Path) -> None:
    from animegan.batch import stylize_files

    for i in range(2):
        Image.fromarray(gradient_image(16, 16, seed=i)).save(tmp_path / f"p{i}.png")
    calls: list[tuple[int, int]] = []
    report = stylize_files([tmp_path / "p0.png", tmp_path / "p1.png"], tmp_path / "out", style,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)] and len(report.written) == 2


def test_a_missing_input_is_skipped_and_reported_not_fatal(style: str, tmp_path: Path, capsys) -> None:
    from animegan.cli import main

    Image.fromarray(gradient_image(16, 16)).save(tmp_path / "ok.png")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    args = ["stylize", str(tmp_path / "ok.png"), str(tmp_path / "gone.jpg"), str(tmp_path / "empty"), "-o", str(out)]
    assert main([*args, "--style", style]) == 1
    err = capsys.readouterr().err
    assert "gone.jpg: no such file" in err and "empty: folder holds no images" in err and "2 of 3 files failed" in err
    assert (out / "ok.png").is_file()
    assert main(["stylize", str(tmp_path / "gone.jpg"), "-o", str(out), "--style", style]) == 2  # nothing to do
    assert "gone.jpg: no such file or folder" in capsys.readouterr().err


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> CIE L*a*b* (D65), the textbook formulas (independent of OpenCV's conversion)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
    xyz = linear @ to_xyz.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _ab_stats(rgb: np.ndarray) -> np.ndarray:
    ab = _lab(rgb)[..., 1:].reshape(-1, 2)
    return np.concatenate([ab.mean(0), ab.std(0)])  # mean a, mean b, spread a, spread b


def test_keep_colors_and_max_side_change_what_is_written(style: str, tmp_path: Path) -> None:
    """What --max-side and --keep-colors do to the written picture, beyond its size."""
    from animegan.cli import main
    from animegan.stylize import get_stylizer

    # A real photo (examples/, public domain): its colours sit well inside the gamut, unlike the
    # test gradient's, so matching them is not cut short by clipping.
    photo = Image.open(REPO / "examples" / "chelsea.jpg").convert("RGB")
    src = np.asarray(photo.resize((96, 80), Image.Resampling.LANCZOS))
    Image.fromarray(src).save(tmp_path / "photo.png")
    written = {}
    for name, flags in {"plain": [], "small": ["--max-side", "48"], "kept": ["--keep-colors"]}.items():
        target = tmp_path / f"{name}.png"
        assert main(["stylize", str(tmp_path / "photo.png"), "-o", str(target), "--style", style, *flags]) == 0
        written[name] = np.asarray(Image.open(target).convert("RGB"))
        assert written[name].shape == src.shape
    plain, small, kept = written["plain"], written["small"], written["kept"]

    # --max-side 48: the network saw the photo scaled to 48x40 (LANCZOS), and its result was scaled
    # back up to 96x80: computed here through the stylizer on the small picture.
    work = np.asarray(Image.fromarray(src).resize((48, 40), Image.Resampling.LANCZOS))
    up = Image.fromarray(get_stylizer(style).run_arrays([work], tile=0)[0]).resize((96, 80), Image.Resampling.LANCZOS)
    assert np.abs(small.astype(np.int16) - np.asarray(up)).max() <= 1
    assert np.abs(small.astype(np.float32) - plain).mean() > 3  # not the full-size run scaled nowhere

    # --keep-colors: the colour channels' means and spreads come back to the photo's (within the
    # rounding and gamut clipping of the conversion), where the plain stylization is far from them.
    photo_ab, plain_ab, kept_ab = _ab_stats(src), _ab_stats(plain), _ab_stats(kept)
    assert np.abs(kept_ab - photo_ab).max() < 0.2 * np.abs(plain_ab - photo_ab).max()
    assert np.abs(kept_ab - photo_ab).max() < 1.0  # Lab units (measured 0.07; the plain result is off by 35)
    # ... while the lightness, the style's shading, stays the stylization's, not the photo's.
    lightness = {name: _lab(rgb)[..., 0] for name, rgb in (("photo", src), ("plain", plain), ("kept", kept))}
    assert np.abs(lightness["kept"] - lightness["plain"]).mean() < np.abs(lightness["kept"] - lightness["photo"]).mean()
