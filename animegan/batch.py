"""Stylizing many files: where each output goes, one bad file never stops the rest."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from .errors import AnimeGANError
from .fileio import atomic_path
from .images import IMAGE_SUFFIXES, image_files
from .stylize import StyleOptions, get_stylizer

KEEP_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, one-line reason)
    notes: list[str] = field(default_factory=list)  # done, but worth a line (portrait mode found no face)


def output_path_for(source: Path, output: Path, root: Path | None, single: bool) -> Path:
    """Where one input's result goes.

    A single input with an image-suffixed output writes exactly there; otherwise the output is a
    folder and inputs found inside a folder keep their relative sub-folders. The suffix is kept
    for PNG/JPEG/WebP inputs and becomes .png for the rest.
    """
    if single and output.suffix.lower() in IMAGE_SUFFIXES:
        return output
    relative = source.relative_to(root) if root is not None else Path(source.name)
    suffix = source.suffix.lower() if source.suffix.lower() in KEEP_SUFFIXES else ".png"
    return output / relative.with_suffix(suffix)


def unique_targets(targets: Sequence[Path]) -> list[Path]:
    """The same paths, with ``-2``, ``-3`` ... added where two inputs would write one file.

    Two inputs can share a result name (``a/x.png`` and ``b/x.png`` given together, or
    ``photo.tif`` and ``photo.bmp`` that both become ``photo.png``); the later ones get a number
    rather than silently replacing the first.
    """
    taken: set[Path] = set()
    unique = []
    for target in targets:
        candidate, n = target, 1
        while candidate in taken:
            n += 1
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        taken.add(candidate)
        unique.append(candidate)
    return unique


def save_image(image: Image.Image, path: Path) -> Path:
    """Save atomically in the format the suffix names; returns where it went (RGBA never goes to JPEG)."""
    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE or (fmt == "JPEG" and image.mode != "RGB"):
        path = path.with_suffix(".png")  # JPEG has no alpha: keep it rather than drop it
        suffix, fmt = ".png", "PNG"
    with atomic_path(path) as tmp:
        params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
        image.save(tmp, format=fmt, **params)
    return path


def stylize_files(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], style: str | None = None,
                  *, portrait: bool = False, keep_colors: bool = False, max_side: int | None = None, tile: int = 1024,
                  device: str | None = None, half: bool | None = None,
                  progress: Callable[[int, int], None] | None = None) -> BatchReport:
    """Stylize files and folders into ``output``; bad files are reported, the rest still written.

    A missing input or a folder without images is reported like a bad file while the rest are
    done; an unusable style, or nothing at all to stylize, is an ``AnimeGANError`` before any work.
    ``half=False`` runs the network in float32 where the policy would use bfloat16 or float16.
    """
    output = Path(output)
    stylizer = get_stylizer(style, device, half, portrait=portrait)  # a bad style fails here, once, not per file
    options = StyleOptions(portrait=portrait, keep_colors=keep_colors, max_side=max_side, tile=tile)
    jobs: list[tuple[Path, Path | None]] = []
    report = BatchReport()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = image_files([path])
            if not found:
                report.failed.append((str(path), f"folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            jobs += [(f, path) for f in found]
        elif path.exists():
            jobs.append((path, None))
        else:
            report.failed.append((str(path), "no such file or folder"))
    if not jobs:
        source, reason = report.failed[0] if report.failed else ("stylize", "no inputs given")
        raise AnimeGANError(f"{source}: {reason}")
    single = len(jobs) == 1 and jobs[0][1] is None
    targets = unique_targets([output_path_for(source, output, root, single) for source, root in jobs])
    if progress is not None:
        progress(0, len(jobs))  # the bar (and its clock) starts before the first file, not after it
    for i, ((source, root), target) in enumerate(zip(jobs, targets)):
        try:
            result = stylizer(source, options, name=str(source), notes=report.notes)
            report.written.append(save_image(result, target))
        except AnimeGANError as exc:
            report.failed.append((str(source), str(exc)))
        except (OSError, ValueError, RuntimeError) as exc:  # e.g. out of memory, disk full: report and go on
            report.failed.append((str(source), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
        if progress is not None:
            progress(i + 1, len(jobs))
    return report
