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


def test_cli_reports_counts_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing"), "--eval", str(tmp_path / "e")]) == 2
    assert "no such folder" in capsys.readouterr().err
