"""The held-out split laid out as folders: disjoint, complete, stable, and rerunnable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animegan.errors import AnimeGANError
from train.split_folder import main, split_folder
from train.splits import is_eval


def test_split_is_disjoint_complete_and_rerunnable(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    names = [f"img_{i:03d}.png" for i in range(60)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(src / ("sub" if i % 2 else ".") / name)
    n_train, n_eval = split_folder(src, tmp_path / "train", tmp_path / "eval")
    train = {p.name for p in (tmp_path / "train").iterdir()}
    held = {p.name for p in (tmp_path / "eval").iterdir()}
    assert (n_train, n_eval) == (len(train), len(held)) and n_eval > 0
    assert train.isdisjoint(held) and train | held == set(names)
    assert held == {n for n in names if is_eval(n)}
    assert all((tmp_path / "eval" / n).resolve().is_file() for n in held)
    assert split_folder(src, tmp_path / "train", tmp_path / "eval") == (n_train, n_eval)  # idempotent
    (tmp_path / "eval" / sorted(held)[0]).unlink()
    (tmp_path / "eval" / sorted(held)[0]).write_bytes(b"other")
    with pytest.raises(AnimeGANError, match="exists and is not a link"):
        split_folder(src, None, tmp_path / "eval")


def test_size_writes_the_held_out_faces_shrunk_as_the_trainers_load_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    names = [f"face_{i:03d}.jpg" for i in range(40)]
    for name in names:  # 96x80: the short side goes to 32, then a centre crop
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(src / name, quality=95)
    assert main([str(src), "--eval", str(tmp_path / "e32"), "--size", "32"]) == 0
    held = sorted(n for n in names if is_eval(n))
    written = sorted((tmp_path / "e32").iterdir())
    assert [p.name for p in written] == [Path(n).stem + ".png" for n in held] and held
    from train.data import load_square

    for path, name in zip(written, held):
        assert not path.is_symlink()
        assert np.array_equal(np.asarray(Image.open(path)), load_square(src / name, 32))
    stamps = [p.stat().st_mtime_ns for p in written]
    assert split_folder(src, None, tmp_path / "e32", size=32)[1] == len(held)  # rerunnable: kept as written
    assert [p.stat().st_mtime_ns for p in written] == stamps
    split_folder(src, None, tmp_path / "e32", size=16)  # another size replaces them
    assert all(Image.open(p).size == (16, 16) for p in written)
    (src / "sub").mkdir()  # a second file of the same name, in a subfolder: held out too (by name)
    Image.open(src / held[0]).save(src / "sub" / held[0])
    with pytest.raises(AnimeGANError, match="would both be written"):
        split_folder(src, None, tmp_path / "e32", size=16)


def test_size_copies_follow_their_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The copies are an FID reference: a rerun renews a copy whose source changed, removes one whose
    source is gone, rewrites a damaged one, skips an unreadable source and names other images."""
    import os

    from train.data import load_square

    src, out = tmp_path / "src", tmp_path / "e32"
    src.mkdir()
    rng = np.random.default_rng(1)
    names = [f"face_{i:03d}.png" for i in range(60)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src / name)
    held = sorted(n for n in names if is_eval(n))
    assert len(held) >= 4
    split_folder(src, None, out, size=32)
    changed, gone, damaged, broken = held[:4]
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(src / changed)
    os.utime(src / changed, ns=(10**18, 10**18))  # a new modification time, however coarse the clock
    (src / gone).unlink()
    (out / (Path(damaged).stem + ".png")).write_bytes(b"not a png")
    (src / broken).write_bytes(b"not an image either")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(out / "mine.png")  # the user's own file
    capsys.readouterr()
    assert split_folder(src, None, out, size=32)[1] == len(held) - 2  # gone, and unreadable
    err = capsys.readouterr().err
    assert "skipped 1 unreadable" in err and "1 other image" in err and "mine.png" in err
    assert np.array_equal(np.asarray(Image.open(out / (Path(changed).stem + ".png"))), load_square(src / changed, 32))
    assert np.array_equal(np.asarray(Image.open(out / (Path(damaged).stem + ".png"))), load_square(src / damaged, 32))
    copies = sorted(p.name for p in out.iterdir())
    assert copies == sorted([Path(n).stem + ".png" for n in held if n not in (gone, broken)] + ["mine.png"])


def test_cli_reports_counts_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing"), "--eval", str(tmp_path / "e")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([str(tmp_path), "--eval", str(tmp_path / "e"), "--size", "0"]) == 2
    assert "--size must be at least 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# The rule itself, pinned independently of ``is_eval`` (README: "1 image in 10, chosen by a
# hash of its file name"; train/splits.py: sha1 of the name, first 8 bytes big-endian, mod 10)
# ----------------------------------------------------------------------------------------
def _expected_eval(name: str) -> bool:
    """The documented rule, computed another way: the first 16 hex digits of sha1(name), mod 10."""
    import hashlib

    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:16], 16) % 10 == 0


def test_split_follows_the_documented_hash_rule() -> None:
    rng = np.random.default_rng(7)
    names = ([f"img_{i:03d}.png" for i in range(300)] + [f"{rng.integers(1 << 48):012x}.webp" for _ in range(300)]
             + ["ünïcode fâce.jpg", "a b.png", "x"])
    assert [is_eval(n) for n in names] == [_expected_eval(n) for n in names]
    # Only the file name counts, not the folder it sits in or the path's form.
    for name in names[:50]:
        assert is_eval(Path("some/deep/folder") / name) == is_eval(name) == is_eval(f"/abs/{name}")


def test_split_is_one_in_ten() -> None:
    n = 20_000
    held = sum(is_eval(f"face_{i:05d}.webp") for i in range(n))
    # Binomial(n, 0.1): mean 2000, standard deviation sqrt(n * 0.1 * 0.9) = 42.4; 4 sigma.
    assert abs(held - n / 10) < 4 * (n * 0.1 * 0.9) ** 0.5
    files = [Path(f"d/{i:06d}.png") for i in range(n)]
    from train.splits import split

    train, evaluation = split(files, "train"), split(files, "eval")
    assert len(train) + len(evaluation) == n and not set(train) & set(evaluation)
    assert abs(len(evaluation) - n / 10) < 4 * (n * 0.1 * 0.9) ** 0.5


def test_split_choice_is_stable_across_versions() -> None:
    """Literal names, so that a change of hash, byte order or modulus (which would silently mix
    held-out images into the training set of a resumed or compared run) fails here."""
    names = [f"img_{i:03d}.png" for i in range(60)]
    assert [n for n in names if is_eval(n)] == ["img_001.png", "img_006.png", "img_032.png", "img_045.png",
                                                "img_047.png"]
    assert [n for n in (f"{i:05d}.webp" for i in range(100)) if is_eval(n)] == ["00003.webp", "00051.webp",
                                                                               "00055.webp", "00059.webp",
                                                                               "00062.webp", "00079.webp",
                                                                               "00083.webp"]


def test_real_anime_faces_holdout_is_the_readme_count() -> None:
    """README: FID against 'those 2,995 held-out faces' of anime_faces (29,960 images)."""
    from conftest import SHARED
    from train.data import list_images
    from train.splits import split

    folder = SHARED / "data" / "anime_faces"
    if not folder.is_dir():
        pytest.skip("../shared/data/anime_faces is not here")
    files = list_images(folder)  # what the face trainer lists for --data
    held = split(files, "eval")
    assert (len(files), len(held)) == (29_960, 2_995)
    # ... and the rest is what the shipped faces64 was trained on (its metadata's image count)
    from animegan.weights import read_metadata
    from conftest import REPO

    assert len(split(files, "train")) == read_metadata(REPO / "weights" / "faces64.safetensors")[
        "training_data"]["images"] == 26_965
    assert [p.name for p in held[:4]] == ["animeface_000b79cd76a7.webp", "animeface_00123c560177.webp",
                                          "animeface_00336c7e6660.webp", "animeface_003882ee2a56.webp"]
    assert all(_expected_eval(p.name) for p in held[:200])
