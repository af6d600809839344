"""Measure a photo-to-anime style on held-out photos; prints one JSON object.

    python -m train.evaluate_style --weights NAME_OR_PATH --photos HELD_OUT_DIR --anime ANIME_DIR
        [--limit N] [--portrait] [--write-metadata] [--samples GRID.png]

Figures, each for the stylized photos and, as the baseline, for the untouched photos:

* ``fid`` / ``kid``: style distance, the photos (stylized or not) against the anime set, on the
  FID Inception-v3 (``animegan.metrics``). A style works when its FID is well below the
  baseline's.
* ``content``: how much of the photo survives, the mean absolute difference of the
  perceptual network's features (the trainers' content loss, ``train.perceptual``) between
  each photo and its stylization. ``content_unrelated`` gives the scale: the same distance
  between each photo and a different photo.

``--write-metadata`` stores the table in the weights' metadata (``metrics.style_eval``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.images import image_files, prepare_image, to_tensor_range
from animegan.metrics import INCEPTION_SIZE, FeatureStats, compare, compute_stats
from animegan.stylize import StyleOptions, get_stylizer

from .losses import content_loss
from .perceptual import Perceptual


def _tensor(image: Any) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(to_tensor_range(image.convert("RGB"))).permute(2, 0, 1)[None].contiguous()


@torch.no_grad()
def evaluate_style(weights: str, photos: str | Path, anime: str | Path, limit: int | None = None,
                   portrait: bool = False, device: str | None = None, samples: str | Path | None = None,
                   progress: bool = False, max_side: int | None = None,
                   photo_side: int | None = None) -> dict[str, Any]:
    """The style's figures on ``photos`` against ``anime``, with the untouched-photo baseline.

    ``max_side`` is the working size to stylize at (None: the style's own, 0: full size);
    ``photo_side`` first scales each photo's long side to that many pixels (bicubic), so that
    small held-out photos can stand in for the larger ones a working size is chosen for.
    """
    if photo_side is not None and photo_side < 16:
        raise AnimeGANError(f"photo side must be at least 16 pixels (got {photo_side})")
    files = image_files([photos])
    if limit:
        files = files[:limit]
    if len(files) < 2:
        raise AnimeGANError(f"{photos}: need at least 2 held-out photos, found {len(files)}")
    stylizer = get_stylizer(weights, device=device)
    options = StyleOptions(portrait=portrait, max_side=max_side)
    perceptual = Perceptual("inception", device="cpu")
    before, after = [], []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, unit="photo", desc="stylizing", file=sys.stderr)
    for path in iterator:
        image: Any = path
        if photo_side:
            image = prepare_image(path).rgb
            scale = photo_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
        photo, styled = stylizer.compare(image, options, name=path.name)
        before.append(_tensor(photo))
        after.append(_tensor(styled.resize(photo.size)))
    reference = compute_stats(anime, device, progress=progress)
    result: dict[str, Any] = {"photos": len(files), "anime": reference.count, "perceptual": perceptual.name,
                              "max_side": stylizer.working_side if max_side is None else max_side,
                              "photo_side": photo_side}
    result.update(style_figures(before, after, reference, perceptual, device=device))
    if samples:
        _save_pairs(before[:8], after[:8], Path(samples))
    return result


# One evaluation as a flat record (metrics.jsonl, best.pt): the style's figures, then the untouched photos'.
FIGURES = ("fid", "kid", "content", "baseline_fid", "baseline_kid", "content_unrelated")


def flat_figures(table: dict[str, Any]) -> dict[str, float]:
    """``style_figures``' table as the flat record of ``FIGURES``."""
    return {"fid": table["stylized"]["fid"], "kid": table["stylized"]["kid"], "content": table["stylized"]["content"],
            "baseline_fid": table["baseline"]["fid"], "baseline_kid": table["baseline"]["kid"],
            "content_unrelated": table["content_unrelated"]}


@torch.no_grad()
def style_figures(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], reference: FeatureStats,
                  perceptual: Perceptual, device: str | torch.device | None = None,
                  baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of stylized photos against an anime set, beside those of the untouched photos.

    ``before[i]`` is a photo and ``after[i]`` its stylization, both (1, 3, H, W) in [-1, 1] at the
    same size; ``reference`` is the anime set's Inception statistics; ``perceptual`` the network of
    the content distance. Returns ``{"stylized": {fid, kid, kid_std, content}, "baseline": {...},
    "content_unrelated", "fid_reduction"}``. ``baseline``, an earlier result for the same photos and
    reference, lends its baseline part and ``content_unrelated`` instead of computing them again.
    """
    if len(before) != len(after):
        raise AnimeGANError(f"{len(before)} photos but {len(after)} stylizations")
    if len(before) < 2:
        raise AnimeGANError(f"need at least 2 held-out photos, found {len(before)}")
    stylized = _style_distance(after, reference, device)
    net_device = next(perceptual.parameters()).device

    def features(x: torch.Tensor) -> torch.Tensor:
        return perceptual(x.to(net_device, torch.float32))

    # One photo's features at a time (full-size photos' features add up to gigabytes); the
    # unrelated pairs are each photo and the next (the last with the first), of the same size.
    content, unrelated = [], []
    first = previous = None
    for x, y in zip(before, after):
        f = features(x)
        content.append(content_loss(f, features(y)).item())
        if baseline is None:
            if previous is not None and previous.shape == f.shape:
                unrelated.append(content_loss(previous, f).item())
            first = f if first is None else first
            previous = f
    stylized["content"] = float(np.mean(content))
    if baseline is None:
        if previous is not None and first is not None and previous.shape == first.shape:
            unrelated.append(content_loss(previous, first).item())
        base = {**_style_distance(before, reference, device), "content": 0.0}
        content_unrelated = float(np.mean(unrelated)) if unrelated else float("nan")
    else:
        base, content_unrelated = dict(baseline["baseline"]), float(baseline["content_unrelated"])
    return {"stylized": stylized, "baseline": base, "content_unrelated": content_unrelated,
            "fid_reduction": 1.0 - stylized["fid"] / max(base["fid"], 1e-9)}


def _style_distance(images: Sequence[torch.Tensor], reference: FeatureStats,
                    device: str | torch.device | None) -> dict[str, float]:
    """FID and KID of images of any sizes against the reference (resized for Inception in small batches)."""
    def batches(size: int = 16) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), size):
            yield torch.cat([F.interpolate(x.float().clamp(-1, 1), size=(INCEPTION_SIZE, INCEPTION_SIZE),
                                           mode="bilinear", align_corners=False) for x in images[start:start + size]])

    figures = compare(batches(), reference, device=device)
    return {"fid": figures["fid"], "kid": figures["kid"], "kid_std": figures["kid_std"]}


def _save_pairs(before: list[torch.Tensor], after: list[torch.Tensor], path: Path, height: int = 256,
                gap: int = 4) -> None:
    """Two rows on white: the photos, then their stylizations, each scaled to ``height`` pixels high."""
    from animegan.batch import save_image
    from animegan.faces import to_pil_images

    def scaled(x: torch.Tensor) -> Image.Image:
        image = to_pil_images(x)[0]
        return image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.LANCZOS)

    pairs = [(scaled(a), scaled(b)) for a, b in zip(before, after)]
    canvas = Image.new("RGB", (sum(a.width for a, _ in pairs) + gap * (len(pairs) - 1), 2 * height + gap), "white")
    x = 0
    for top, bottom in pairs:
        canvas.paste(top, (x, 0))
        canvas.paste(bottom, (x, height + gap))
        x += top.width + gap
    save_image(canvas, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate_style", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="style name, .safetensors or community .pt file")
    p.add_argument("--photos", required=True, help="held-out photos (never seen in training)")
    p.add_argument("--anime", required=True, help="the anime set the style was trained on")
    p.add_argument("--limit", type=int, help="use at most this many photos")
    p.add_argument("--portrait", action="store_true", help="stylize in portrait mode (face crop at 512)")
    p.add_argument("--device", help="cpu, cuda ... (default: auto)")
    p.add_argument("--samples", help="also write a before/after grid of the first photos here")
    p.add_argument("--max-side", type=int, help="working size to stylize at (default: the style's own; 0: full size)")
    p.add_argument("--photo-side", type=int, help="first scale each photo's long side to this (bicubic)")
    p.add_argument("--write-metadata", action="store_true",
                   help="store the figures in the weights' metadata (project .safetensors only)")
    args = p.parse_args(argv)
    try:
        result = evaluate_style(args.weights, args.photos, args.anime, args.limit, args.portrait, args.device,
                                args.samples, progress=True, max_side=args.max_side, photo_side=args.photo_side)
        if args.write_metadata:
            from animegan.weights import load_weights, update_metadata

            source = load_weights(args.weights, kind="style").source
            if Path(source).suffix != ".safetensors":
                raise AnimeGANError(f"{source}: only project .safetensors weights carry metadata")
            update_metadata(source, {"metrics": {"style_eval": {**result, "photos_dir": str(args.photos),
                                                                "anime_dir": str(args.anime)}}})
    except AnimeGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
