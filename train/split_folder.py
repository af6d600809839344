"""Lay out the fixed train/evaluation split of an image folder as two folders of symlinks.

    python -m train.split_folder ../shared/data/photo_scenes --train data/scenery/real_images \
        --eval data/scenery_heldout

    python -m train.split_folder ../shared/data/anime_faces --eval data/faces_eval64 --size 64

The split is ``train/splits.py``'s (1 file in 10 by a hash of its name), so the same files are
held out on every machine; the trainers then read plain folders and never see the held-out part.
With ``--size N`` the folders get PNG copies instead of links, each resized and centre-cropped to NxN
as the trainers load it (``train.data.load_square``): the reference at a smaller model's own size.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from animegan.errors import AnimeGANError
from animegan.fileio import atomic_path

from . import splits
from .data import list_images, load_square


def split_folder(source: str | os.PathLike[str], train_dir: str | os.PathLike[str] | None,
                 eval_dir: str | os.PathLike[str] | None, size: int | None = None) -> tuple[int, int]:
    """Symlink each image of ``source`` into ``train_dir`` or ``eval_dir`` (or, with ``size``, write it
    there as a ``size`` px PNG); returns the two counts."""
    files = list_images(source)
    counts = [0, 0]
    for part, folder in (("train", train_dir), ("eval", eval_dir)):
        chosen = splits.split(files, part)
        counts[part == "eval"] = len(chosen)
        if folder is None:
            continue
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for path in chosen:
            if size:
                out = target / (Path(path).stem + ".png")
                if out.name in written:
                    raise AnimeGANError(f"{path} and {written[out.name]} would both be written as {out}")
                written[out.name] = Path(path)
                _write_square(path, out, size)
                continue
            link = target / Path(path).name
            if link.is_symlink() or link.exists():
                if link.resolve() == Path(path).resolve():
                    continue
                raise AnimeGANError(f"{link}: exists and is not a link to {path}")
            link.symlink_to(Path(path).resolve())
    return counts[0], counts[1]


def _write_square(path: Path, out: Path, size: int) -> None:
    from PIL import Image

    if out.is_file():  # rerunnable: a copy written before (atomically) at this size is kept
        with Image.open(out) as done:
            if done.size == (size, size):
                return
    with atomic_path(out) as tmp:
        Image.fromarray(load_square(path, size)).save(tmp, format="PNG")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.split_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="image folder (searched recursively)")
    p.add_argument("--train", help="folder for links to the training part")
    p.add_argument("--eval", help="folder for links to the held-out part")
    p.add_argument("--size", type=int, help="write PNG copies resized and centre-cropped to SIZE px instead of links")
    args = p.parse_args(argv)
    try:
        if args.size is not None and args.size < 1:
            raise AnimeGANError("--size must be at least 1")
        n_train, n_eval = split_folder(args.source, args.train, args.eval, args.size)
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"train {n_train}, eval {n_eval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
