"""``python -m animegan push WEIGHTS_OR_RUN --repo USER/NAME [--private] [--dry-run DIR]``."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..hub import check_can_push, parse_repo_id, prepare_upload, push_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="share a style or face model on the Hugging Face Hub, with a model card",
                       description="Upload weights (a .safetensors file, a project weights name, or a training run "
                                   "folder, exported first) with their metadata, a model card and a sample grid. "
                                   "Needs HF_TOKEN or 'hf auth login' unless --dry-run.")
    p.add_argument("source", metavar="WEIGHTS_OR_RUN", help="a .safetensors file, a name from weights/, or a run folder")
    p.add_argument("--repo", required=True, metavar="USER/NAME", help="the model repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--name", help="weights name when exporting a run folder (default: the folder's name)")
    p.add_argument("--dry-run", metavar="DIR", help="only write the upload folder to DIR (no network, no token)")
    p.add_argument("--sample-size", type=int, default=256, help="side of each image in a style's sample grid")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    repo = parse_repo_id(args.repo)
    if args.dry_run:
        folder = prepare_upload(args.source, args.dry_run, repo, name=args.name, sample_size=args.sample_size)
        print(f"wrote the upload for {repo} to {folder}:")
        for path in sorted(folder.iterdir()):
            print(f"  {path.name:28s} {path.stat().st_size:>10,d} bytes")
        return 0
    token = check_can_push()  # before exporting and rendering samples: fail fast
    with tempfile.TemporaryDirectory(prefix="animegan-push-") as tmp:
        print("preparing the model card and sample grid ...", flush=True)
        folder = prepare_upload(args.source, Path(tmp) / "upload", repo, name=args.name, sample_size=args.sample_size)
        print(f"uploading to {repo} ...", flush=True)
        url = push_folder(folder, repo, token=token, private=args.private)
    print(url)
    print(f"use it with: --style hub:{repo}   (or --weights hub:{repo} for face models)")
    return 0
