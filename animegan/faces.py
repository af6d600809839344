"""Anime faces from latent noise: seed -> latent -> image, grids, interpolation, morphs, sliders.

::

    from animegan.faces import FaceGenerator
    fg = FaceGenerator("faces128")              # a project weights name or a .safetensors path
    fg.face(42)                                 # PIL image; the same seed gives the same face
    fg.interpolate([1, 2, 3], t=0.25)           # spherical interpolation along 1 -> 2 -> 3
    fg.face(42, variety=0.7, sliders=[2, 0, -1])
    fg.save_morph([1, 2, 3], "morph.gif")       # or .mp4

A latent is drawn from a CPU ``torch.Generator`` seeded by the seed, so it is the same on
every machine; the image is deterministic on a given device. 'variety' scales the latent
toward the mean (0): the truncation trick. The semantic sliders are GANSpace-style
directions: principal components of the generator's first-layer activations, carried back
to the latent space by least squares; computed once per weights file and cached (or
shipped beside it as ``NAME.sliders.safetensors``).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .device import inference_dtype, pick_device, prepare
from .errors import AnimeGANError
from .fileio import atomic_path, file_sha256
from .limits import check_time

SLIDER_COUNT = 5
SLIDER_SCALE = 2.0   # latent units per slider unit; a slider runs from -3 to 3
SLIDER_SAMPLES = 1024
SLIDERS_VERSION = 1
MAX_SEED = 2**63 - 1


# ----------------------------------------------------------------------------------------
# Latents
# ----------------------------------------------------------------------------------------
def latent_for_seed(seed: int, latent_dim: int) -> torch.Tensor:
    """The (latent_dim,) N(0, I) latent of a seed, drawn on the CPU so every device agrees."""
    seed = int(seed)
    if seed < 0 or seed > MAX_SEED:
        raise AnimeGANError(f"seed {seed} is out of range (0 to {MAX_SEED})")
    return torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1); linear when they are parallel."""
    if t <= 0 or t >= 1:  # exactly the seeds' latents at the ends (the sines leave a rounding error)
        return (a if t <= 0 else b).clone()
    a64, b64 = a.double(), b.double()
    cos = torch.dot(a64 / a64.norm(), b64 / b64.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so.abs() < 1e-6:
        out = (1 - t) * a64 + t * b64
    else:
        out = torch.sin((1 - t) * omega) / so * a64 + torch.sin(t * omega) / so * b64
    return out.to(a.dtype)


def path_latent(latents: Sequence[torch.Tensor], t: float) -> torch.Tensor:
    """The point at ``t`` in [0, 1] along the slerp path through several latents."""
    if len(latents) < 2:
        raise AnimeGANError("interpolation needs at least two seeds")
    t = min(max(float(t), 0.0), 1.0)
    pos = t * (len(latents) - 1)
    i = min(int(math.floor(pos)), len(latents) - 2)
    return slerp(latents[i], latents[i + 1], pos - i)


# Every frame of a morph is held in memory until it is written: these bound one request.
MAX_MORPH_SEEDS = 64
MAX_MORPH_FRAMES = 2400  # 100 s at 24 fps


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """'1,5,9' or '1 5 9' or a list -> [1, 5, 9]."""
    if not isinstance(text, str):
        return [int(s) for s in text]
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise AnimeGANError(f"seeds must be whole numbers separated by commas, not {text!r}") from None


# ----------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------
def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(a) for a in to_uint8(images)]


def make_grid(images: Sequence[Image.Image], cols: int | None = None, pad: int = 2,
              background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Lay same-size images out in rows (square-ish by default)."""
    if not images:
        raise AnimeGANError("no images for the grid")
    n = len(images)
    cols = max(1, min(cols or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), background)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid.paste(im, (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


# ----------------------------------------------------------------------------------------
# Semantic sliders (GANSpace-style)
# ----------------------------------------------------------------------------------------
@dataclass
class Sliders:
    """Unit latent directions (K, latent_dim), most important first, and their step size."""

    directions: torch.Tensor
    scale: float = SLIDER_SCALE

    @property
    def count(self) -> int:
        return int(self.directions.shape[0])

    def names(self) -> list[str]:
        return [f"Direction {k + 1}" for k in range(self.count)]

    def apply(self, z: torch.Tensor, values: Sequence[float] | None) -> torch.Tensor:
        """Move latents (N, d) or (d,) along the directions by ``values`` (slider units)."""
        if not values:
            return z
        v = torch.tensor([float(x) for x in values][: self.count], dtype=torch.float64)
        offset = (v[:, None] * self.directions[: len(v)].double()).sum(0) * self.scale
        return (z.double() + offset).to(z.dtype)


@torch.no_grad()
def compute_sliders(generator: nn.Module, count: int = SLIDER_COUNT, samples: int = SLIDER_SAMPLES,
                    seed: int = 0) -> Sliders:
    """PCA of the first layer's activations over random latents, regressed back onto the latents."""
    g = generator.eval()
    z = torch.randn(samples, g.latent_dim, generator=torch.Generator().manual_seed(seed))
    p = next(g.parameters())
    feats = torch.cat([g.early_features(chunk.to(p.device, p.dtype)).flatten(1).double().cpu()
                       for chunk in z.split(256)])
    feats = feats - feats.mean(0, keepdim=True)
    k = max(1, min(count, samples - 1, feats.shape[1]))
    _, _, vh = torch.linalg.svd(feats, full_matrices=False)
    coords = feats @ vh[:k].T                      # (samples, k) principal coordinates
    coords = coords / coords.std(0, keepdim=True).clamp_min(1e-12)
    u = torch.linalg.lstsq(coords, z.double()).solution  # (k, latent_dim): z ~ coords @ u
    directions = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return Sliders(directions.float())


def save_sliders(path: str | os.PathLike[str], sliders: Sliders) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"directions": sliders.directions.contiguous()}, str(tmp),
                  metadata={"scale": str(sliders.scale), "version": str(SLIDERS_VERSION)})
    return path


def load_sliders(path: str | os.PathLike[str], latent_dim: int | None = None) -> Sliders | None:
    """Sliders from a file, or None when it is missing, damaged or made for another latent size."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            directions = fh.get_tensor("directions").float()
        scale = float(meta.get("scale", SLIDER_SCALE))
    except Exception:  # missing or damaged: recompute
        return None
    if directions.dim() != 2 or (latent_dim is not None and directions.shape[1] != latent_dim):
        return None
    return Sliders(directions, scale)


def sliders_for_file(weights_path: Path, generator: nn.Module) -> Sliders:
    """Shipped ``NAME.sliders.safetensors``, else the cache, else compute once and cache."""
    from .weights import cache_dir

    shipped = weights_path.with_name(f"{weights_path.stem}.sliders.safetensors")
    found = load_sliders(shipped, generator.latent_dim) if shipped.is_file() else None
    if found is not None:
        return found
    cached = cache_dir() / "sliders" / f"{file_sha256(weights_path)[:32]}-v{SLIDERS_VERSION}.safetensors"
    found = load_sliders(cached, generator.latent_dim) if cached.is_file() else None
    if found is not None:
        return found
    sliders = compute_sliders(generator)
    try:
        save_sliders(cached, sliders)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
    return sliders


# ----------------------------------------------------------------------------------------
# The generator wrapper
# ----------------------------------------------------------------------------------------
class FaceGenerator:
    """A face generator ready for sampling: seeds in, PIL images out."""

    def __init__(self, weights: str | os.PathLike[str] | nn.Module, device: str | torch.device | None = None,
                 half: bool | None = None) -> None:
        from .weights import build_from_weights, load_weights

        self.device = pick_device(device)
        self.source: Path | None = None
        self.metadata: dict = {}
        if isinstance(weights, nn.Module):
            net = weights
        else:
            loaded = load_weights(weights, kind="faces")
            if loaded.kind != "faces":
                raise AnimeGANError(f"{loaded.source}: holds a {loaded.kind!r} network, not a face generator")
            net = build_from_weights(loaded)
            self.source, self.metadata = Path(loaded.source), loaded.metadata
        if not hasattr(net, "latent_dim"):
            raise AnimeGANError("not a face generator (it has no latent_dim)")
        # fp32 on the CPU: a small net at 4x4..128x128 gains little from bf16 (bench/faces_bench.py),
        # and a seed should give the same face on every machine.
        self.dtype = inference_dtype(self.device, half, cpu_reduced=False)
        self.net = prepare(net, self.device, self.dtype)
        self.latent_dim: int = int(net.latent_dim)
        self.image_size: int = int(net.image_size)
        self.name = self.metadata.get("name") or (self.source.stem if self.source else "generator")
        self._sliders: Sliders | None = None

    # -- latents --------------------------------------------------------------------------
    def latent(self, seed: int) -> torch.Tensor:
        return latent_for_seed(seed, self.latent_dim)

    def edit(self, z: torch.Tensor, variety: float = 1.0, sliders: Sequence[float] | None = None) -> torch.Tensor:
        """Truncation (scale toward the mean, 0) then the semantic sliders."""
        z = z * float(variety)
        if sliders and any(float(v) != 0 for v in sliders):
            z = self.sliders.apply(z, sliders)
        return z

    @property
    def sliders(self) -> Sliders:
        if self._sliders is None:
            self._sliders = sliders_for_file(self.source, self.net) if self.source else compute_sliders(self.net)
        return self._sliders

    # -- images ---------------------------------------------------------------------------
    @torch.inference_mode()
    def render(self, z: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """Latents (N, d) -> (N, S, S, 3) uint8."""
        z = z.reshape(-1, self.latent_dim)
        out = []
        for chunk in z.split(batch_size):
            check_time()  # a request's time limit (animegan.limits), between batches of a long morph
            out.append(to_uint8(self.net(chunk.to(self.device, self.dtype))))
        return np.concatenate(out)

    def face(self, seed: int, variety: float = 1.0, sliders: Sequence[float] | None = None) -> Image.Image:
        return Image.fromarray(self.render(self.edit(self.latent(seed), variety, sliders))[0])

    def faces(self, seeds: Sequence[int], variety: float = 1.0,
              sliders: Sequence[float] | None = None) -> list[Image.Image]:
        z = torch.stack([self.edit(self.latent(s), variety, sliders) for s in seeds])
        return [Image.fromarray(a) for a in self.render(z)]

    def grid(self, seeds: Sequence[int], cols: int | None = None, variety: float = 1.0,
             sliders: Sequence[float] | None = None) -> Image.Image:
        return make_grid(self.faces(seeds, variety, sliders), cols=cols)

    def interpolate(self, seeds: Sequence[int], t: float, variety: float = 1.0,
                    sliders: Sequence[float] | None = None) -> Image.Image:
        """The face at ``t`` in [0, 1] on the spherical path through the seeds' latents."""
        z = path_latent([self.latent(s) for s in seeds], t)
        return Image.fromarray(self.render(self.edit(z, variety, sliders))[0])

    def morph_frames(self, seeds: Sequence[int], frames: int = 48, variety: float = 1.0,
                     sliders: Sequence[float] | None = None, loop: bool = False) -> np.ndarray:
        """(frames, S, S, 3) uint8 along the path (back to the first seed when ``loop``)."""
        if len(seeds) > MAX_MORPH_SEEDS or frames > MAX_MORPH_FRAMES:
            raise AnimeGANError(f"a morph goes through at most {MAX_MORPH_SEEDS} seeds in at most "
                                f"{MAX_MORPH_FRAMES} frames (asked: {len(seeds)} seeds, {frames} frames)")
        loop = loop and len(seeds) > 1
        seeds = list(seeds) + ([seeds[0]] if loop else [])
        latents = [self.latent(s) for s in seeds]
        frames = max(2, frames)
        # A loop leaves out its last point, which is the first frame again.
        ts = np.linspace(0.0, 1.0, frames + 1)[:-1] if loop else np.linspace(0.0, 1.0, frames)
        z = torch.stack([self.edit(path_latent(latents, float(t)), variety, sliders) for t in ts])
        return self.render(z)

    def save_morph(self, seeds: Sequence[int], path: str | os.PathLike[str], frames: int = 48, fps: int = 24,
                   variety: float = 1.0, sliders: Sequence[float] | None = None, size: int | None = 256,
                   loop: bool = True) -> Path:
        """Write the morph as an animated GIF or an MP4 (by the path's suffix), atomically."""
        return write_animation(self.morph_frames(seeds, frames, variety, sliders, loop), path, fps, size)


def write_animation(frames: np.ndarray, path: str | os.PathLike[str], fps: int = 24, size: int | None = None) -> Path:
    """Frames (N, H, W, 3) uint8 -> .gif or .mp4 (H.264, via imageio-ffmpeg), written atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise AnimeGANError(f"{path}: a morph is written as .gif or .mp4")
    if size and frames.shape[1] != size:
        frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.LANCZOS))
                           for f in frames])
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            imageio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
        else:
            writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                        macro_block_size=16, pixelformat="yuv420p")
            try:
                for f in frames:
                    writer.append_data(f)
            finally:
                writer.close()
    return path


# ----------------------------------------------------------------------------------------
# For menus and the app
# ----------------------------------------------------------------------------------------
def face_weights() -> list[str]:
    """Names of the project's face weights (``weights/`` with kind 'faces'), the best FID first.

    The first is the default everywhere (the Faces tab, the CLI), so whichever model wins on FID
    is the default; weights without a measured FID follow, by name.
    """
    from .weights import project_weights

    def rank(item: tuple[str, dict]) -> tuple[float, str]:
        fid = (item[1].get("metrics") or {}).get("fid")
        return (float(fid) if isinstance(fid, (int, float)) else float("inf"), item[0])

    return [name for name, _ in sorted(project_weights("faces").items(), key=rank)]


def no_face_weights_message() -> str:
    return ("no face weights yet: train some with 'python -m train.faces --data DIR --out runs/faces "
            "--steps 20000 --export faces64', which writes weights/faces64.safetensors")


@functools.lru_cache(maxsize=4)
def _cached_generator(name: str, stamp: float, device: str | None) -> FaceGenerator:
    return FaceGenerator(name, device=device)


def get_face_generator(name: str, device: str | None = None) -> FaceGenerator:
    """A cached FaceGenerator (reloaded when the weights file changes)."""
    from .weights import weights_dir

    if not name:
        raise AnimeGANError(no_face_weights_message())
    candidate = weights_dir() / f"{name}.safetensors"
    path = candidate if candidate.is_file() else Path(name)
    stamp = path.stat().st_mtime if path.is_file() else 0.0
    return _cached_generator(str(name), stamp, device)
