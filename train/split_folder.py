"""Lay out the fixed train/evaluation split of an image folder as two folders of symlinks.

    python -m train.split_folder ../shared/data/photo_scenes --train data/scenery/real_images \
        --eval data/scenery_heldout

    python -m train.split_folder ../shared/data/anime_faces --eval data/faces_eval64 --size 64

The split is ``train/splits.py``'s (1 file in 10 by a hash of its name), so the same files are
held out on every machine; the trainers then read plain folders and never see the held-out part.
With ``--size N`` the folders get PNG copies instead of links, each resized and centre-cropped to NxN
as the trainers load it (``train.data.load_square``): the reference at a smaller model's own size.
Each copy names its source (path, size, modification time) in a PNG text field, so a rerun writes
only what changed and removes copies of files gone from the split; unreadable files are skipped.
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
        unreadable: list[Path] = []
        for path in chosen:
            if size:
                out = target / (Path(path).stem + ".png")
                if out.name in written:
                    raise AnimeGANError(f"{path} and {written[out.name]} would both be written as {out}")
                written[out.name] = Path(path)
                if not _write_square(path, out, size):
                    unreadable.append(Path(path))
                continue
            link = target / Path(path).name
            if link.is_symlink() or link.exists():
                if link.resolve() == Path(path).resolve():
                    continue
                raise AnimeGANError(f"{link}: exists and is not a link to {path}")
            link.symlink_to(Path(path).resolve())
        if size:
            counts[part == "eval"] -= len(unreadable)
            _tidy_copies(target, set(written) - {Path(p).stem + ".png" for p in unreadable}, unreadable)
    return counts[0], counts[1]


SOURCE_KEY = "animegan-source"  # PNG text of a copy: the file it was made from, as it was then


def _source_tag(path: Path) -> str:
    st = path.stat()
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _copy_source(out: Path) -> tuple[str, tuple[int, int]] | None:
    """(the ``SOURCE_KEY`` tag, "" for an image without one; its size) of an existing image, None when unreadable."""
    from PIL import Image

    try:
        with Image.open(out) as done:
            return getattr(done, "text", {}).get(SOURCE_KEY, ""), done.size
    except (OSError, SyntaxError, ValueError):
        return None


def _write_square(path: Path, out: Path, size: int) -> bool:
    """Write ``path`` as a ``size`` px PNG at ``out`` unless a copy of it as it is now is there; False
    when ``path`` cannot be read (then nothing is written, and an old copy of it is removed)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    tag = _source_tag(path)
    if out.is_file() and _copy_source(out) == (tag, (size, size)):  # rerunnable: kept as written
        return True
    try:
        pixels = load_square(path, size)
    except (AnimeGANError, OSError, ValueError):
        out.unlink(missing_ok=True)  # a copy of what the file was is not what it is now
        return False
    info = PngInfo()
    info.add_text(SOURCE_KEY, tag)
    with atomic_path(out) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
    return True


def _tidy_copies(target: Path, expected: set[str], unreadable: list[Path]) -> None:
    """Remove the copies an earlier split wrote of files no longer in the source; warn about the rest
    (other images in the folder would join the reference that the folder is)."""
    from animegan.images import image_files

    if unreadable:
        print(f"warning: skipped {len(unreadable)} unreadable image(s), e.g. {unreadable[0]}", file=sys.stderr)
    foreign = []
    for path in image_files([target]):
        if path.parent == target and path.name in expected:
            continue
        found = _copy_source(path) if path.parent == target and path.suffix.lower() == ".png" else None
        if found is not None and found[0]:  # a copy an earlier split made: its source is gone from the split
            path.unlink(missing_ok=True)
        else:
            foreign.append(path)
    if foreign:
        print(f"warning: {target} holds {len(foreign)} other image(s) that are not part of this split, "
              f"e.g. {foreign[0].name}: whatever reads the folder reads them too", file=sys.stderr)


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
