"""``python -m animegan faces``: N face PNGs for seeds, a grid, a morph."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AnimeGANError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faces", help="generate anime faces from seeds (same seed, same face)")
    p.add_argument("--weights", help="face weights: a project name (see weights/) or a .safetensors path "
                                     "(default: the first project face weights)")
    p.add_argument("--count", type=int, default=16, help="number of faces (seeds seed-start .. seed-start+N-1)")
    p.add_argument("--out", help="folder for the PNG files (seed_00000042.png ...)")
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--variety", type=float, default=1.0, help="latent scale: below 1 gives safer, more average faces")
    p.add_argument("--grid", metavar="FILE", help="also write all the faces as one grid image")
    p.add_argument("--morph", metavar="SEEDS", help="seeds to morph through, e.g. 1,7,42")
    p.add_argument("--morph-out", metavar="FILE", help="morph file (.gif or .mp4)")
    p.add_argument("--frames", type=int, default=48, help="frames in the morph")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--device", help="cpu, cuda ... (default: auto)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..faces import face_weights, get_face_generator, no_face_weights_message, parse_seeds

    if args.count < 0:
        raise AnimeGANError(f"--count must be 0 or more, not {args.count}")
    if args.morph and not args.morph_out:
        raise AnimeGANError("--morph needs --morph-out FILE (.gif or .mp4)")
    if not (args.out or args.grid or args.morph):
        raise AnimeGANError("say where to write: --out DIR, --grid FILE or --morph SEEDS --morph-out FILE")
    name = args.weights or (face_weights() or [None])[0]
    if not name:
        raise AnimeGANError(no_face_weights_message())
    fg = get_face_generator(name, device=args.device)
    seeds = list(range(args.seed_start, args.seed_start + args.count))
    faces = []
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise AnimeGANError(f"{out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
    from ..fileio import atomic_path

    for seed in tqdm(seeds, unit="face", desc=fg.name, file=sys.stderr, disable=not seeds):
        face = fg.face(seed, variety=args.variety)
        if args.out:
            with atomic_path(Path(args.out) / f"seed_{seed:08d}.png") as tmp:
                face.save(tmp, format="PNG")
        if args.grid:
            faces.append(face)
    if args.out:
        print(f"wrote {len(seeds)} faces to {args.out}")
    if args.grid:
        if not faces:
            raise AnimeGANError("--grid needs --count of at least 1")
        from ..faces import make_grid

        with atomic_path(args.grid) as tmp:
            make_grid(faces).save(tmp)
        print(f"wrote grid {args.grid}")
    if args.morph:
        path = fg.save_morph(parse_seeds(args.morph), args.morph_out, frames=args.frames, fps=args.fps,
                             variety=args.variety)
        print(f"wrote morph {path}")
    return 0
