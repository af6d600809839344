"""Photo stylization: the plain way against the project's way, in one process; prints one JSON object.

    python bench/stylize_bench.py [--sizes 256 512 1024 1920x1080] [--repeat 3] [--device cpu]
                                  [--style NAME_OR_FILE | --width 0.45] [--variants] [--compile] [--onnx]
                                  [--nnpack] [--emulated-bf16] [--variant-size 512] [--threads N]

The plain way is eager PyTorch in float32, NCHW, calling the community AnimeGANv2 network
(``AnimeGANv2Generator`` is it op for op and key for key) on a tensor made from the image.
The project's way is ``Stylizer.run_arrays``, which applies the device policy of
``animegan/device.py`` (bfloat16 where the CPU has native bf16, float16 on CUDA,
channels_last). Both start and end at uint8 pixels; the differences are in 1/255 steps.

``--variants`` also times each tried ingredient on its own at 512x512 (``--variant-size``; channels_last alone,
bf16 alone, torch.compile with its first-call cost); ``--compile`` adds compile to them,
``--onnx`` ONNX Runtime (an optional install) in fp32 with its default and our thread count, and
``--nnpack`` NNPACK's Winograd and FFT convolutions (fp32, NCHW) for the stride-1 3x3 and 7x7
layers. On a CPU without native bf16 the bf16 variants are skipped (oneDNN emulates bf16 there,
several times slower than fp32) unless ``--emulated-bf16`` asks for them.
Without ``--style`` the network is randomly initialised (its speed does not depend on its
weights); the input is ``examples/astronaut.jpg`` resized, so the differences are measured on
a photo rather than on noise. ``peak`` is the best large-GEMM rate this process reaches, the
practical ceiling for the convolutions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from animegan import device as policy  # noqa: E402
from animegan.models import build_model  # noqa: E402
from animegan.models.flops import conv_flops  # noqa: E402
from animegan.stylize import Stylizer  # noqa: E402
from animegan.weights import build_from_weights, load_weights, save_weights  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of an n x n matrix product: what the BLAS reaches on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return round(2 * n ** 3 / best / 1e9, 1)


def timed(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up (oneDNN picks its kernels per shape on the first call)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def plain_runner(model: torch.nn.Module, image: np.ndarray, device: torch.device) -> Callable[[], np.ndarray]:
    """uint8 HWC -> float NCHW -> fp32 eager network -> uint8 HWC, as the community scripts do."""
    def run() -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
            y = model(x)[0].clamp(-1, 1)
            return ((y + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return run


def variant_runner(model: torch.nn.Module, image: np.ndarray, device: torch.device, dtype: torch.dtype,
                   fmt: torch.memory_format) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1)
            y = model(x.to(device, dtype).contiguous(memory_format=fmt))[0].float().clamp(-1, 1)
            return ((y + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return run


def onnx_runner(model: torch.nn.Module, image: np.ndarray, folder: str, threads: int) -> Callable[[], np.ndarray]:
    """The fp32 network exported to ONNX and run by ONNX Runtime's CPU provider (optional dependency)."""
    import onnxruntime as ort

    path = os.path.join(folder, "stylize.onnx")
    if not os.path.exists(path):
        x = torch.zeros(1, 3, 64, 64)
        axes = {"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}
        torch.onnx.export(model.float().cpu().eval(), (x,), path, input_names=["x"], output_names=["y"],
                          dynamic_axes=axes, dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's own choice
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run() -> np.ndarray:
        x = (image.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1).astype(np.float32)
        y = np.clip(session.run(None, {"x": x})[0][0], -1, 1)
        return np.round((y + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)
    return run


class NNPACKConv2d(torch.nn.Conv2d):
    """A stride-1 convolution through NNPACK (Winograd for 3x3, FFT for larger kernels); NCHW only."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [0, 0])


def with_nnpack(model: torch.nn.Module) -> torch.nn.Module:
    """Route every stride-1, ungrouped, unpadded convolution of 3x3 or larger through NNPACK."""
    if not torch.backends.nnpack.is_available():  # this call also initialises NNPACK; without it every call fails
        raise SystemExit("--nnpack: this torch build has no NNPACK")
    for module in model.modules():
        if (type(module) is torch.nn.Conv2d and module.stride == (1, 1) and module.groups == 1
                and module.padding == (0, 0) and module.dilation == (1, 1) and min(module.kernel_size) >= 3):
            module.__class__ = NNPACKConv2d
    return model


def differences(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"mean_abs_diff_255": round(float(d.mean()), 3), "max_abs_diff_255": int(d.max())}


def photo(w: int, h: int) -> np.ndarray:
    return np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB").resize((w, h), Image.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "1024", "1920x1080"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--style", default=None, help="style name or weights file (default: random init)")
    parser.add_argument("--width", type=float, default=1.0, help="random init at this width (0.45: a -fast student)")
    parser.add_argument("--variants", action="store_true", help="also time each ingredient alone at 512x512")
    parser.add_argument("--compile", action="store_true", help="with --variants: add torch.compile variants")
    parser.add_argument("--onnx", action="store_true",
                        help="with --variants: add ONNX Runtime (pip install onnxruntime onnx) on the CPU")
    parser.add_argument("--nnpack", action="store_true",
                        help="with --variants: add NNPACK's Winograd/FFT convolutions (fp32, NCHW) on the CPU")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="with --variants: time the bf16 variants even where the CPU only emulates bf16")
    parser.add_argument("--variant-size", type=int, default=512, help="the square size --variants runs at")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        style = args.style
        if style is None:
            os.environ["ANIMEGAN_WEIGHTS_DIR"] = folder
            torch.manual_seed(0)
            config = {"width": args.width}
            save_weights(Path(folder) / "bench.safetensors", build_model("animeganv2", config).state_dict(),
                         {"architecture": "animeganv2", "kind": "style", "config": config}, dtype=None)
            style = "bench"
        project = Stylizer(style, device=args.device)
        device = project.device
        plain = build_from_weights(load_weights(style)).to(device).float().eval()  # fp32, NCHW

        results = []
        for text in args.sizes:
            w, h = parse_size(text)
            image = photo(w, h)
            plain_s, plain_out = timed(plain_runner(plain, image, device), args.repeat)
            project_s, project_out = timed(lambda: project.run_arrays([image], tile=0)[0], args.repeat)
            gflop = conv_flops(plain, (h, w)) / 1e9
            results.append({
                "size": f"{w}x{h}", "gflop": round(gflop, 1),
                "plain_s": round(plain_s, 3), "project_s": round(project_s, 3),
                "speedup": round(plain_s / project_s, 2),
                "plain_gflop_per_s": round(gflop / plain_s, 1), "project_gflop_per_s": round(gflop / project_s, 1),
                **differences(plain_out, project_out),
            })

        variants: list[dict] = []
        if args.variants:
            image = photo(args.variant_size, args.variant_size)
            _, reference = timed(plain_runner(plain, image, device), 1)
            reduced = torch.bfloat16 if device.type == "cpu" else torch.float16
            rname = str(reduced)[6:]
            with_reduced = device.type != "cpu" or policy.cpu_has_native_bf16() or args.emulated_bf16
            tried = [("fp32 NCHW", torch.float32, torch.contiguous_format, ""),
                     ("fp32 channels_last", torch.float32, torch.channels_last, "")]
            if with_reduced:
                tried += [(f"{rname} NCHW", reduced, torch.contiguous_format, ""),
                          (f"{rname} channels_last", reduced, torch.channels_last, "")]
            else:
                variants.append({"variant": "bf16", "skipped": "this CPU emulates bf16 (--emulated-bf16 times it)"})
            if args.compile:
                tried += [("compile fp32 channels_last", torch.float32, torch.channels_last, "compile")]
                if with_reduced:
                    tried += [(f"compile {rname} channels_last", reduced, torch.channels_last, "compile")]
            if args.nnpack and device.type == "cpu":
                tried += [("nnpack fp32 NCHW", torch.float32, torch.contiguous_format, "nnpack")]
            for name, dtype, fmt, how in tried:
                net = build_from_weights(load_weights(style)).to(device=device, dtype=dtype, memory_format=fmt).eval()
                run_net = (policy.compile_network(net, "default") if how == "compile"
                           else with_nnpack(net) if how == "nnpack" else net)
                runner = variant_runner(run_net, image, device, dtype, fmt)
                start = time.perf_counter()
                runner()
                first_s = time.perf_counter() - start
                seconds, out = timed(runner, args.repeat)
                variants.append({"variant": name, "seconds": round(seconds, 3), "first_call_s": round(first_s, 2),
                                 **differences(reference, out)})
            if args.onnx and device.type == "cpu":
                for threads in (0, torch.get_num_threads()):
                    start = time.perf_counter()
                    runner = onnx_runner(plain, image, folder, threads)
                    runner()
                    first_s = time.perf_counter() - start
                    seconds, out = timed(runner, args.repeat)
                    variants.append({"variant": f"onnxruntime fp32, {threads or 'default'} threads",
                                     "seconds": round(seconds, 3), "first_call_s": round(first_s, 2),
                                     **differences(reference, out)})

    print(json.dumps({
        "bench": "stylize", "device": str(device), "project_dtype": str(project.dtype)[6:],
        "project_memory_format": str(policy.memory_format(device))[6:],
        "style": args.style or f"random init, width {args.width}",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "native_bf16": policy.cpu_has_native_bf16(),
        # An emulated bf16 product of this size takes minutes, so only a native one is timed.
        "peak_gemm_gflop_per_s": {"fp32": gemm_peak(torch.float32),
                                  "bf16": gemm_peak(torch.bfloat16) if policy.cpu_has_native_bf16() else None}
        if device.type == "cpu" else None,
        "results": results, "variants": variants, "variant_size": args.variant_size,
    }, indent=1))


if __name__ == "__main__":
    main()
