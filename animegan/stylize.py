"""Photo to anime: image in, image out.

Handles what lies between a user's file and the network: orientation, alpha, odd modes,
the size policy (a cap on the long side, padding to what the model accepts, the result
back at the input's size), tiles for large images, batches, device and precision,
portrait crops and colour retention.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import device as device_policy
from .colors import match_colors
from .errors import AnimeGANError
from .images import ImageInput, finish_image, prepare_image
from .limits import check_time
from .portrait import largest_face, portrait_box
from .tiles import run_tiled
from .weights import build_from_weights, default_style, identity, load_weights

PORTRAIT_SIDE = 512
MIN_TILE = 64  # smaller tiles cost more in overlap than they save in memory


@dataclass
class StyleOptions:
    """What a user can choose about one stylization."""

    portrait: bool = False
    keep_colors: bool = False
    # Cap on the long side the network sees (the output keeps the input's size): None is the style's
    # working size (its metadata's max_side: the size its strokes were trained for; none: full size), 0 full size.
    max_side: int | None = None
    tile: int = 1024  # tile side for large images; 0 = never tile
    fallback_side: int = 0  # with max_side None, the cap for a style that records no working size (0: none)

    def __post_init__(self) -> None:
        # Checked here, where CLI flags and API arguments arrive: a tile of 1 px or a negative cap
        # used to end deep in torch (or in a division by zero) instead of in a message.
        if self.tile and not MIN_TILE <= int(self.tile):
            raise AnimeGANError(f"tile {self.tile} is too small: use 0 (never tile) or at least {MIN_TILE}")
        if self.max_side is not None and int(self.max_side) < 0:
            raise AnimeGANError(f"max side must be 0 (full size) or more, not {self.max_side}")


class Stylizer:
    """One style's network on one device, ready to stylize images and video frames."""

    def __init__(self, style: str | None = None, device: str | torch.device | None = None,
                 half: bool | None = None, compile_mode: str | None = None) -> None:
        """``compile_mode`` (see ``device.COMPILE_MODES``) runs untiled batches through ``torch.compile``;
        if compiling fails the stylizer runs eagerly and says why in ``compile_error``."""
        weights = load_weights(style if style is not None else default_style(), kind="style")
        if weights.kind != "style":
            raise AnimeGANError(f"{weights.source}: holds a {weights.kind} model, not a photo-to-anime style")
        self.name = str(style) if style is not None else weights.metadata.get("name", "style")
        self.metadata = weights.metadata
        self.working_side = working_side(self.metadata)
        self.device = device_policy.pick_device(device)
        self.dtype = device_policy.inference_dtype(self.device, half)
        self.model = device_policy.prepare(build_from_weights(weights), self.device, self.dtype)
        self.min_size = getattr(self.model, "min_size", 16)
        self.multiple = getattr(self.model, "size_multiple", 1)
        self.compile_error: str | None = None
        self._compiled = device_policy.compile_network(self.model, compile_mode) if compile_mode else None
        self._widest: dict[tuple[int, int], int] = {}  # per frame size, the largest batch compiled for
        # Tiling swaps norm hooks in and out of the model; one caller at a time per model.
        self._lock = threading.Lock()

    # -- tensors ------------------------------------------------------------------------
    def _run(self, batch: torch.Tensor, tile: int) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] on the CPU -> same shape, padded as the model needs."""
        _, _, h, w = batch.shape
        target_h = max(self.min_size, -(-h // self.multiple) * self.multiple)
        target_w = max(self.min_size, -(-w // self.multiple) * self.multiple)
        x = batch.to(self.device, self.dtype).contiguous(memory_format=device_policy.memory_format(self.device))
        if (target_h, target_w) != (h, w):
            # Reflect needs the pad to be smaller than the side; tiny images replicate instead.
            mode = "reflect" if target_h - h < h and target_w - w < w else "replicate"
            x = F.pad(x, (0, target_w - w, 0, target_h - h), mode=mode)
        with self._lock, torch.inference_mode():
            check_time()  # after the wait for the lock, which may itself have been long
            if tile and target_h * target_w > 2 * tile * tile:
                y = run_tiled(self.model, x, tile=tile)
            else:
                y = self._forward(x)
            return y[:, :, :h, :w].float().clamp(-1, 1).cpu().clone()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The untiled network call: compiled where asked (and working), else eager."""
        if self._compiled is None:
            return self.model(x)
        n = x.shape[0]
        # A compiled graph is specialised on the batch size: a short batch (a video's last) is
        # padded with copies of its last frame, which costs far less than compiling again.
        size = (x.shape[-2], x.shape[-1])
        widest = max(n, self._widest.get(size, 0))
        self._widest[size] = widest
        if n < widest:
            padded = torch.cat([x, x[-1:].expand(widest - n, -1, -1, -1)])
            padded = padded.contiguous(memory_format=device_policy.memory_format(self.device))
        else:
            # The graph's guards include the input's dispatch keys: always hand it an inference
            # tensor (the padded one is), or the first short batch would compile it again.
            padded = x if x.is_inference() else x.clone()
        try:
            return self._compiled(padded)[:n]
        except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor: eager still works
            self._compiled = None
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            self.compile_error = f"torch.compile failed ({type(exc).__name__}: {first_line}); ran without it"
            return self.model(x)

    def run_arrays(self, frames: Sequence[np.ndarray], tile: int = 1024) -> list[np.ndarray]:
        """Stylize same-size RGB uint8 arrays (H, W, 3) as one batch."""
        if not frames:
            return []
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        out = self._run(batch, tile)
        return list(((out + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())

    # -- images -------------------------------------------------------------------------
    def __call__(self, image: ImageInput, options: StyleOptions | None = None, name: str | None = None,
                 notes: list[str] | None = None) -> Image.Image:
        """Stylize one image; the result has the input's size (or the portrait crop's).

        ``notes``, when given, receives a line for each thing the user should know (portrait mode
        that found no face, so the whole picture was stylized).
        """
        return self.stylize_many([image], options, names=[name] if name else None, notes=notes)[0]

    def compare(self, image: ImageInput, options: StyleOptions | None = None, name: str | None = None,
                notes: list[str] | None = None) -> tuple[Image.Image, Image.Image]:
        """(before, after) at the same size: the upright input (or its portrait crop) and its stylization."""
        options = options or StyleOptions()
        job = self._prepare(image, options, name, notes)
        after = job.finish(self.run_arrays([np.asarray(job.work)], tile=options.tile)[0], options)
        return finish_image(job.source, job.alpha), after

    def stylize_many(self, images: Sequence[ImageInput], options: StyleOptions | None = None,
                     names: Sequence[str] | None = None, batch_size: int = 4,
                     notes: list[str] | None = None) -> list[Image.Image]:
        """Stylize several images, batching those that share a working size."""
        options = options or StyleOptions()
        prepared = [self._prepare(img, options, names[i] if names else None, notes) for i, img in enumerate(images)]
        results: list[Image.Image | None] = [None] * len(prepared)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(prepared):
            by_size.setdefault(item.work.size, []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                outs = self.run_arrays([np.asarray(prepared[i].work) for i in chunk], tile=options.tile)
                for i, out in zip(chunk, outs):
                    results[i] = prepared[i].finish(out, options)
        return results  # type: ignore[return-value]

    def work_cap(self, side: int | None, fallback: int = 0) -> int:
        """The long side the network works at, at most: ``side`` (0: no cap), or for None the style's
        working size (``fallback`` for a style that records none). Photos and video frames alike."""
        return (self.working_side or fallback) if side is None else int(side)

    def _prepare(self, image: ImageInput, options: StyleOptions, name: str | None,
                 notes: list[str] | None = None) -> "_Job":
        src = prepare_image(image, name)
        rgb, alpha = src.rgb, src.alpha
        if options.portrait:
            face = largest_face(np.asarray(rgb))
            if face is None:
                if notes is not None:
                    notes.append(f"{name or 'image'}: no face found; the whole picture was stylized")
            else:
                box = portrait_box(rgb.size, face)
                rgb = rgb.crop(box).resize((PORTRAIT_SIDE, PORTRAIT_SIDE), Image.Resampling.LANCZOS)
                alpha = alpha.crop(box).resize(rgb.size, Image.Resampling.LANCZOS) if alpha is not None else None
        work = rgb
        cap = self.work_cap(options.max_side, options.fallback_side)
        if cap and max(rgb.size) > cap:
            scale = cap / max(rgb.size)
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            work = rgb.resize(size, Image.Resampling.LANCZOS)
        return _Job(source=rgb, work=work, alpha=alpha)


@dataclass
class _Job:
    source: Image.Image  # upright RGB at output size
    work: Image.Image  # what the network sees
    alpha: Image.Image | None

    def finish(self, out: np.ndarray, options: StyleOptions) -> Image.Image:
        result = Image.fromarray(out)
        if result.size != self.source.size:
            result = result.resize(self.source.size, Image.Resampling.LANCZOS)
        if options.keep_colors:
            result = Image.fromarray(match_colors(np.asarray(result), np.asarray(self.source)))
        return finish_image(result, self.alpha)


def working_side(metadata: dict[str, Any]) -> int:
    """The long side a style's strokes were trained for (its metadata's ``max_side``), 0 when it records none.

    Metadata comes from any file or Hub repo: a value that is not a size of at least 16 is ignored.
    """
    try:
        side = int(metadata.get("max_side") or 0)
    except (TypeError, ValueError):
        return 0
    return side if side >= 16 else 0


@functools.lru_cache(maxsize=4)
def _cached_stylizer(style: str, identity_key: str, device: str | None, half: bool | None,
                     compile_mode: str | None) -> Stylizer:
    return Stylizer(style, device, half, compile_mode)


def get_stylizer(style: str | None = None, device: str | None = None, half: bool | None = None,
                 compile_mode: str | None = None, *, portrait: bool = False) -> Stylizer:
    """A cached ``Stylizer``: weights load once per style and device, and again if the file changes.

    With no ``style``, the default style for the mode (``portrait``: the portrait style, if one is shipped).
    """
    name = str(style) if style is not None else default_style(portrait)
    if half is None and device_policy.full_precision_forced():
        half = False  # keyed on what the environment asks now, not on what it asked when cached
    return _cached_stylizer(name, identity(name), None if device is None else str(device), half, compile_mode)


def stylize(image: ImageInput, style: str | None = None, *, portrait: bool = False, keep_colors: bool = False,
            max_side: int | None = None, tile: int = 1024, device: str | None = None) -> Image.Image:
    """Stylize one image (path, PIL image, array or bytes) and return a PIL image.

    ``style`` is a style name, a ``.safetensors`` file or a community ``.pt`` file; ``None``
    means the default style (in portrait mode, the portrait style). The output has the input's size,
    or 512x512 in portrait mode when a face is found, and keeps the input's alpha channel.
    """
    options = StyleOptions(portrait=portrait, keep_colors=keep_colors, max_side=max_side, tile=tile)
    return get_stylizer(style, device, portrait=portrait)(image, options)
