"""Face generation latency and trainer throughput, both variants; prints one JSON object.

    python bench/faces_bench.py [--device cpu] [--size 128] [--train-size 64] [--batch 16] [--steps 6]
                                [--threads N] [--no-train]

Latency: one 128x128 face (batch 1, eval mode, after warm-up), median of repeats, with the
default widths, and for ``faces64_upscaled_128`` the shipped 128 px layout (``weights/faces128``'s: its
64 px improved generator, then the 2x face upscaler, ``animegan/models/face_upscaler.py``): the
plain way (an eager fp32 NCHW call of the network, as the seeds do) and the project's
``FaceGenerator`` (seed -> latent -> PIL, the device policy), with their ratio and largest pixel
difference. Throughput: training images/s of ``train.faces`` on a small made-up folder (median
of the logged intervals after the first, which pays for start-up), the plain way (``amp`` and
``channels_last`` off: fp32 NCHW) against the trainer's default fast path (train/precision.py),
from the same seed on the same data, with the largest difference between the two runs' final
sample grids.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animegan.faces import FaceGenerator, latent_for_seed  # noqa: E402
from animegan.models.dcgan import VARIANTS, DCGANGenerator, variant_configs  # noqa: E402
from animegan.models.face_upscaler import UpscaledFaceGenerator, UpscaledFacesConfig  # noqa: E402


def _median_ms(fn, repeats: int, cuda: bool) -> float:
    for seed in range(3):
        fn(seed)
    times = []
    for seed in range(repeats):
        t = time.perf_counter()
        fn(seed)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


SHIPPED_128 = Path(__file__).resolve().parents[1] / "weights" / "faces128.safetensors"


def upscaled_generator() -> torch.nn.Module:
    """The 128 px layout the project ships (``weights/faces128``'s config: a 64 px generator and the 2x
    upscaler), with fresh weights: latency depends on the layout alone."""
    from animegan.weights import read_metadata

    return UpscaledFaceGenerator(UpscaledFacesConfig(**read_metadata(SHIPPED_128)["config"]))


def latency(variant: str, size: int, device: str, repeats: int = 20) -> dict:
    """The plain way (the seeds' eager fp32 NCHW call) against ``FaceGenerator`` (the project's policy)."""
    torch.manual_seed(0)
    net = (upscaled_generator() if variant == "faces64_upscaled" else
           DCGANGenerator(variant_configs(variant, size)[0])).eval()
    plain = copy.deepcopy(net).to(device)
    fg = FaceGenerator(net, device=device)
    cuda = fg.device.type == "cuda"

    @torch.inference_mode()
    def plain_face(seed: int) -> np.ndarray:
        y = plain(latent_for_seed(seed, fg.latent_dim)[None].to(device))[0].clamp(-1, 1)
        return ((y + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    plain_ms = _median_ms(plain_face, repeats, cuda)
    project_ms = _median_ms(fg.face, repeats, cuda)
    diff = max(int(np.abs(plain_face(s).astype(np.int16) - np.asarray(fg.face(s), dtype=np.int16)).max())
               for s in range(4))
    return {"plain_ms": plain_ms, "project_ms": project_ms, "speedup": round(plain_ms / project_ms, 2),
            "project_dtype": str(fg.dtype)[6:], "max_abs_diff_255": diff}


def throughput(variant: str, size: int, batch: int, steps: int, device: str, data: Path, out: Path) -> dict:
    """Trainer images/s, the plain way against the fast path, and how far apart their samples end."""
    from animegan.runs import RunFolder
    from train.faces import FaceTrainConfig, train

    rates, grids, precision = {}, {}, ""
    for way, fast in (("plain", False), ("project", True)):
        cfg = FaceTrainConfig(data=str(data), arch=variant, image_size=size, batch_size=batch, steps=steps,
                              log_every=2, sample_every=10**9, checkpoint_every=10**9, amp=fast, channels_last=fast)
        run = RunFolder(out / way)
        train(cfg, run.path, device=device, verbose=False)
        logged = [r["images_per_s"] for r in run.metrics()][1:] or [0.0]
        rates[way] = statistics.median(logged)
        grids[way] = np.asarray(Image.open(run.samples()[-1]).convert("RGB"), dtype=np.int16)
        precision = run.read_status().get("precision", "")
    diff = np.abs(grids["plain"] - grids["project"])
    return {"plain_images_per_s": round(rates["plain"], 1), "project_images_per_s": round(rates["project"], 1),
            "speedup": round(rates["project"] / max(rates["plain"], 1e-9), 2), "project_precision": precision,
            "sample_mean_abs_diff_255": round(float(diff.mean()), 2), "sample_max_abs_diff_255": int(diff.max()),
            "batch": batch, "size": size, "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-train", action="store_true", help="latency only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"device": args.device, "torch_threads": torch.get_num_threads(), "latency_1_face": {},
                    "trainer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(64):
            Image.fromarray(rng.integers(0, 255, (args.train_size, args.train_size, 3), dtype=np.uint8)).save(
                data / f"{i}.png")
        for variant in VARIANTS:
            result["latency_1_face"][f"{variant}_{args.size}"] = latency(variant, args.size, args.device)
            if args.no_train:
                continue
            result["trainer"][f"{variant}_{args.train_size}"] = throughput(
                variant, args.train_size, args.batch, args.steps, args.device, data, Path(tmp) / variant)
        result["latency_1_face"]["faces64_upscaled_128"] = latency("faces64_upscaled", 128, args.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
