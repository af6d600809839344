"""The photo-to-anime trainer's speed as a user runs it: whole trainer processes; prints one JSON object.

    python bench/style_trainer_runs.py [--repo PATH] [--procs 1] [--threads N] [--skip 100] \\
        -- --data data/scenery --config train/recipes/scenery-ghibli.json --steps 400 --init-steps 20 ...

Everything after ``--`` goes to ``python -m train.animegan`` unchanged (``--out`` and ``--quiet`` are
added), so the same line can time an older checkout (``--repo``, e.g. a ``git worktree`` of the
commit an issue measured) on this machine, where ``bench/train_animegan_bench.py`` only times the
code beside it. ``--procs N`` starts N processes under torchrun (DDP over gloo on the CPU; the
batch is per process, so halve it to keep the recipe's batch), ``--threads`` sets
``OMP_NUM_THREADS`` for each. The rate is the mean of the trainer's own ``images_per_s`` lines
(sample grids, checkpoints and data loading included) after step ``--skip``, so the content-only
init phase and the first GAN steps (warm-up) are left out; keep evaluations off or the rate counts
them too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from animegan.device import cpu_has_native_bf16  # noqa: E402


def run(repo: Path, trainer_args: list[str], procs: int, threads: int | None, skip: int) -> dict:
    """One trainer process group in a temporary run folder; its rate after step ``skip``."""
    with tempfile.TemporaryDirectory(prefix="style-trainer-bench-") as tmp:
        out = Path(tmp) / "run"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
            if procs > 1 else [sys.executable]
        command = [*launcher, "-m", "train.animegan", *trainer_args, "--out", str(out), "--quiet"]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        started = time.time()
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        wall = time.time() - started
        if done.returncode != 0:
            raise SystemExit(f"trainer failed ({done.returncode}): {done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r and r["step"] > skip]
    if not rates:
        raise SystemExit(f"no logged rate after step {skip}: train for more steps or lower --skip")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    return {"repo": str(repo), "commit": commit.stdout.strip(), "procs": procs, "threads": threads,
            "trainer_args": trainer_args, "images_per_s": round(statistics.mean(rates), 3),
            "images_per_s_windows": [round(r, 3) for r in rates], "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose trainer runs (default: this one)")
    p.add_argument("--procs", type=int, default=1, help="processes under torchrun (DDP); 1: a plain process")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each process")
    p.add_argument("--skip", type=int, default=100, help="leave out the logged rates up to this step")
    args = p.parse_args(own)
    if not trainer_args:
        p.error("give the trainer's arguments after --")
    result = run(args.repo.resolve(), trainer_args, args.procs, args.threads, args.skip)
    result.update(cpu=platform.processor() or platform.machine(), native_bf16=cpu_has_native_bf16(),
                  cpu_count=os.cpu_count())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
