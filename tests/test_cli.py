"""``python -m animegan stylize`` end to end, in a subprocess as a user would run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
