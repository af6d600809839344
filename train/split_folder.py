"""Lay out the fixed train/evaluation split of an image folder as two folders of symlinks.

    python -m train.split_folder ../shared/data/photo_scenes --train data/scenery/real_images \
        --eval data/scenery_heldout

The split is ``train/splits.py``'s (1 file in 10 by a hash of its name), so the same files are
held out on every machine; the trainers then read plain folders and never see the held-out part.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from animegan.errors import AnimeGANError

from . import splits
from .data import list_images


def split_folder(source: str | os.PathLike[str], train_dir: str | os.PathLike[str] | None,
                 eval_dir: str | os.PathLike[str] | None) -> tuple[int, int]:
    """Symlink each image of ``source`` into ``train_dir`` or ``eval_dir``; returns the two counts."""
    files = list_images(source)
    counts = [0, 0]
    for part, folder in (("train", train_dir), ("eval", eval_dir)):
        chosen = splits.split(files, part)
        counts[part == "eval"] = len(chosen)
        if folder is None:
            continue
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        for path in chosen:
            link = target / Path(path).name
            if link.is_symlink() or link.exists():
                if link.resolve() == Path(path).resolve():
                    continue
                raise AnimeGANError(f"{link}: exists and is not a link to {path}")
            link.symlink_to(Path(path).resolve())
    return counts[0], counts[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.split_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="image folder (searched recursively)")
    p.add_argument("--train", help="folder for links to the training part")
    p.add_argument("--eval", help="folder for links to the held-out part")
    args = p.parse_args(argv)
    try:
        n_train, n_eval = split_folder(args.source, args.train, args.eval)
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"train {n_train}, eval {n_eval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
