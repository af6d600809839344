"""FID/KID of face models against held-out real faces, at full size and at 64 px; prints one JSON object.

    python bench/faces_quality.py [MODEL ...] [--real data/faces_eval] [--real64 data/faces_eval64]
                                  [--samples 10000] [--seed 0] [--device cpu]

MODEL is a weights name or a ``.safetensors`` path (default: every face model in ``weights/``).
Each model's samples (the fid CLI's latents: ``--seed``) are compared with two references: ``--real``, the held-out faces as they are (128 px for the anime-faces data), and
``--real64``, the same faces shrunk to 64 px with Lanczos (``train.data.load_square``). The
second is the fair measure for a 64 px model, whose samples the first compares with sharper
faces than it can make. A 64 px model's features serve both comparisons; a larger model's samples
are drawn again and shrunk the same way as the reference (8-bit, Lanczos), so both sides of that
comparison went through the same resampling.
The README's faces table quotes this script's figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animegan.faces import FaceGenerator, face_weights, to_uint8  # noqa: E402
from animegan.metrics import compute_stats, fid_from_stats, generator_batches, kid_from_features  # noqa: E402


def _shrunk(batches, size: int):
    """Generated batches in [-1, 1] -> the same images as 8-bit, Lanczos-resized to ``size``, in [-1, 1]."""
    for batch in batches:
        if batch.shape[-1] == size:
            yield batch
            continue
        small = [np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.LANCZOS)) for a in to_uint8(batch)]
        yield torch.from_numpy(np.stack(small)).permute(0, 3, 1, 2).float() / 127.5 - 1


def measure(name: str, references: dict[str, object], samples: int, seed: int, device: str | None) -> dict:
    """``fid``/``kid`` against each reference (named by its key) for one face model."""
    gen = FaceGenerator(name, device=device, half=False)
    size = int(gen.net.image_size)
    out: dict[str, float | int | str] = {"size": int(size), "samples": samples}
    native = None
    for key, (ref, ref_size) in references.items():
        start = time.perf_counter()
        batches = generator_batches(gen.net, samples, seed=seed, device=device)
        if ref_size is not None and ref_size != size:
            stats = compute_stats(_shrunk(batches, ref_size), device, limit=samples)
        else:  # the samples as they are: computed once, reused for every reference at their size
            native = native or compute_stats(batches, device, limit=samples)
            stats = native
        kid, kid_std = kid_from_features(stats.features, ref.features)
        out.update({f"fid{key}": fid_from_stats(stats, ref), f"kid{key}": kid, f"kid_std{key}": kid_std,
                    f"seconds{key}": round(time.perf_counter() - start, 1)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", help="weights names or .safetensors paths (default: every face model)")
    p.add_argument("--real", default="data/faces_eval", help="held-out real faces, as they are")
    p.add_argument("--real64", default="data/faces_eval64", help="the same faces shrunk to 64 px ('' to skip)")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    references = {"": (compute_stats(args.real, args.device, progress=True), None)}
    if args.real64:
        references["64"] = (compute_stats(args.real64, args.device, progress=True), 64)
    models = args.models or face_weights()
    result = {"real": args.real, "real64": args.real64, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "models": {}}
    for name in models:
        result["models"][name] = measure(name, references, args.samples, args.seed, args.device)
        print(json.dumps({name: result["models"][name]}), file=sys.stderr)  # partial results as they come
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
