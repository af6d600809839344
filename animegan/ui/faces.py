"""The Faces tab: seeds to faces, a grid, a live interpolation slider, semantic sliders, morph download."""
from __future__ import annotations

import random
import uuid
from typing import Any

import gradio as gr

from ..errors import AnimeGANError
from ..faces import SLIDER_COUNT, face_weights, get_face_generator, no_face_weights_message, parse_seeds
from ..spaces_gpu import gpu
from .common import MODEL_EVENT, LoadHooks, output_dir, served_image, time_limited, user_errors

SEED_MAX = 2**31 - 1
SEED, SEED_A, SEED_B, T = 42, 1, 2, 0.5  # what the tab opens with


def _generator(weights: str | None):
    """The generator for a value sent by a browser or API client: listed weights or a ``hub:`` id, never a path."""
    text = str(weights or "").strip()
    if not text:
        raise AnimeGANError(no_face_weights_message())
    if not (text.startswith("hub:") or text in face_weights()):
        raise AnimeGANError(f"unknown face weights {text[:80]!r}: pick them from the list or type hub:USER/NAME")
    return get_face_generator(text)


def _seed(value: Any) -> int:
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise AnimeGANError(f"seed must be a whole number, not {value!r}") from None
    if seed < 0:
        raise AnimeGANError(f"seed must be 0 or more, not {seed}")
    return seed


@user_errors
@gpu
@time_limited("faces")
def face_image(weights: str | None, seed: Any, variety: float, *sliders: float) -> str:
    """One face for a seed, with variety and the semantic sliders applied (a PNG file, see ``served_image``)."""
    seed = _seed(seed)
    return served_image(_generator(weights).face(seed, variety=float(variety), sliders=list(sliders)), f"face_{seed}")


def random_seed() -> int:
    return random.randint(0, SEED_MAX)


@user_errors
@gpu
@time_limited("faces")
def grid_image(weights: str | None, start: Any, count: float, variety: float, *sliders: float) -> str:
    """A grid of ``count`` faces from seed ``start`` on (a PNG file)."""
    start = _seed(start)
    grid = _generator(weights).grid(list(range(start, start + int(count))), variety=float(variety),
                                    sliders=list(sliders))
    return served_image(grid, f"grid_{start}")


@user_errors
@gpu
@time_limited("faces")
def interpolation_image(weights: str | None, seed_a: Any, seed_b: Any, t: float, variety: float,
                        *sliders: float) -> str:
    """The face at ``t`` between two seeds (cheap: one forward pass, for the live slider; a PNG file)."""
    face = _generator(weights).interpolate([_seed(seed_a), _seed(seed_b)], float(t), variety=float(variety),
                                           sliders=list(sliders))
    return served_image(face, "between")


@user_errors
@gpu
@time_limited("faces")
def morph_file(weights: str | None, seeds_text: str, fmt: str, frames: float, variety: float, *sliders: float) -> str:
    seeds = parse_seeds(seeds_text or "")
    if len(seeds) < 2:
        raise AnimeGANError("give at least two seeds to morph through, e.g. 1, 7, 42")
    suffix = ".mp4" if str(fmt).lower().startswith("mp4") else ".gif"
    path = output_dir() / f"morph_{'-'.join(map(str, seeds[:6]))}_{uuid.uuid4().hex[:8]}{suffix}"
    return str(_generator(weights).save_morph(seeds, path, frames=int(frames), variety=float(variety),
                                              sliders=list(sliders)))


def refresh_weights() -> Any:
    names = face_weights()
    return gr.update(choices=names, value=names[0] if names else None)


@gpu
def first_faces() -> tuple[str | None, str | None]:
    """Page load: a first face and in-between of the default weights, so the tab never opens empty.

    It runs the network, so it goes through the queue's model slot and the GPU decorator like
    every other face event (the menu itself is refreshed without the queue, by ``refresh_weights``).
    """
    names = face_weights()
    if not names:
        return None, None
    try:
        generator = get_face_generator(names[0])
        return (served_image(generator.face(SEED), f"face_{SEED}"),
                served_image(generator.interpolate([SEED_A, SEED_B], T), "between"))
    except AnimeGANError:  # damaged weights: the tab still loads; Generate shows the message
        return None, None


def build_tab() -> LoadHooks:
    """Faces tab components and events."""
    names = face_weights()
    if not names:
        gr.Markdown(f"**No face weights yet.** {no_face_weights_message()[len('no face weights yet: '):]}. "
                    "Then press ↻ to pick them up.", elem_id="faces-none")
    with gr.Row():
        weights = gr.Dropdown(names, value=names[0] if names else None, label="Face weights", scale=4,
                              allow_custom_value=True, info="or type hub:USER/NAME for a face model on the Hub",
                              elem_id="faces-weights")
        refresh = gr.Button("↻", scale=0, min_width=40, elem_id="faces-refresh")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                seed = gr.Number(value=SEED, precision=0, minimum=0, label="Seed", elem_id="faces-seed")
                rand = gr.Button("🎲 Random", elem_id="faces-random")
            variety = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="Variety (lower: safer, more average faces)",
                                elem_id="faces-variety")
            with gr.Accordion("Semantic sliders (automatic directions, strongest first)", open=False):
                sliders = [gr.Slider(-3, 3, value=0, step=0.1, label=f"Direction {k + 1}", elem_id=f"faces-dir{k + 1}")
                           for k in range(SLIDER_COUNT)]
            make = gr.Button("Generate", variant="primary", elem_id="faces-generate")
        face = gr.Image(label="Face", type="pil", format="png", height=320, elem_id="faces-face")
    with gr.Accordion("Grid", open=False):
        with gr.Row():
            grid_start = gr.Number(value=0, precision=0, minimum=0, label="First seed")
            grid_count = gr.Slider(1, 64, value=16, step=1, label="Faces")
            grid_button = gr.Button("Make grid", elem_id="faces-grid-run")
        grid = gr.Image(label="Grid", type="pil", format="png", height=560, elem_id="faces-grid")
    with gr.Accordion("Interpolate and morph", open=True):
        with gr.Row():
            seed_a = gr.Number(value=SEED_A, precision=0, minimum=0, label="Seed A")
            seed_b = gr.Number(value=SEED_B, precision=0, minimum=0, label="Seed B")
        with gr.Row():
            with gr.Column():
                t = gr.Slider(0, 1, value=T, step=0.01, label="A → B (drag: updates live)", elem_id="faces-t")
                morph_seeds = gr.Textbox(value="1, 2, 3", label="Morph through seeds")
                with gr.Row():
                    fmt = gr.Radio(["GIF", "MP4"], value="GIF", label="Format")
                    frames = gr.Slider(8, 240, value=48, step=1, label="Frames")
                morph_button = gr.Button("Make morph", elem_id="faces-morph-run")
                morph_out = gr.File(label="Morph download", elem_id="faces-morph")
            between = gr.Image(label="Between A and B", type="pil", format="png", height=320, elem_id="faces-between")

    common = [variety, *sliders]
    single = [weights, seed, *common]
    # Every event that runs the generator takes the one model slot (**MODEL_EVENT), shared with
    # the Photo and Video tabs, so a slider drag here never runs beside a video on the same GPU.
    make.click(face_image, single, face, **MODEL_EVENT)
    rand.click(random_seed, None, seed, queue=False).then(face_image, single, face, **MODEL_EVENT)
    seed.submit(face_image, single, face, **MODEL_EVENT)
    for s in [variety, *sliders]:
        s.release(face_image, single, face, show_progress="hidden", trigger_mode="always_last", **MODEL_EVENT)
    grid_button.click(grid_image, [weights, grid_start, grid_count, *common], grid, **MODEL_EVENT)
    between_inputs = [weights, seed_a, seed_b, t, *common]
    # One small forward pass per event; always_last drops stale positions while dragging.
    t.input(interpolation_image, between_inputs, between, show_progress="hidden", trigger_mode="always_last",
            **MODEL_EVENT)
    t.release(interpolation_image, between_inputs, between, show_progress="hidden", trigger_mode="always_last",
              **MODEL_EVENT)
    for n in (seed_a, seed_b):
        n.submit(interpolation_image, between_inputs, between, show_progress="hidden", **MODEL_EVENT)
    morph_button.click(morph_file, [weights, morph_seeds, fmt, frames, *common], morph_out, **MODEL_EVENT)
    refresh.click(refresh_weights, None, weights, queue=False)
    return [(refresh_weights, [weights]),
            (first_faces, [face, between], {"queue": True, **MODEL_EVENT})]
