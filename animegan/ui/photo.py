"""The Photo tab: drop a photo, pick a style, compare before and after, download."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import AnimeGANError
from ..stylize import StyleOptions, get_stylizer
from ..spaces_gpu import gpu
from .common import (MODEL_EVENT, LoadHooks, checked_style, follow_portrait_mode, no_offline_style_note,
                     refresh_styles, served_image, style_menu, time_limited, upload_path, user_errors)

# The Photo tab's cap for styles that record no working size: a large upload stays quick on a CPU Space.
FALLBACK_SIDE = 1280
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@user_errors
@gpu
@time_limited("photo")
def run_photo(photo: Any, style: str | None, weights_file: Any, portrait: bool, keep_colors: bool,
              max_side: float, progress: gr.Progress = gr.Progress()) -> tuple[tuple[str, str], str]:
    """Stylize the uploaded photo; returns the before/after pair and the full-size file to download, as files."""
    path = upload_path(photo)
    if not path:
        raise AnimeGANError("drop a photo first")
    uploaded = upload_path(weights_file)
    if not uploaded and not style:
        raise AnimeGANError("pick a style, or upload a .safetensors / .pt weights file")
    chosen = uploaded or checked_style(style)
    progress(0.1, desc="loading the style")
    stylizer = get_stylizer(chosen)
    progress(0.3, desc="stylizing")
    options = StyleOptions(portrait=bool(portrait), keep_colors=bool(keep_colors), max_side=int(max_side or 0) or None,
                           fallback_side=FALLBACK_SIDE)
    notes: list[str] = []
    before, after = stylizer.compare(path, options, name=Path(path).name, notes=notes)
    for note in notes:
        gr.Warning(note)
    saved = served_image(after, f"{Path(path).stem}_anime")
    return (served_image(before, f"{Path(path).stem}_before"), saved), saved


def build_tab() -> LoadHooks:
    """Photo tab components and events."""
    no_offline_style_note("upload a weights file, or train a style in the Training tab")
    with gr.Row():
        with gr.Column():
            photo = gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                             elem_id="photo-input")
            style = style_menu("photo-style")
            with gr.Accordion("Options", open=False, elem_id="photo-options"):
                portrait = gr.Checkbox(label="Portrait: crop the largest face and stylize it at 512x512 "
                                       "(with the portrait style unless you pick another)", elem_id="photo-portrait")
                keep_colors = gr.Checkbox(label="Keep the photo's colours")
                max_side = gr.Slider(0, 4096, value=0, step=64,
                                     label=f"Max side for the model (0 = the style's working size, {FALLBACK_SIDE} "
                                           "for styles that record none; the result keeps the photo's size)")
                weights_file = gr.File(label="Or a weights file (.safetensors / .pt)",
                                       file_types=[".safetensors", ".pt", ".pth"], elem_id="photo-weights")
            run = gr.Button("Stylize", variant="primary", elem_id="photo-run")
        with gr.Column():
            result = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="photo-result")
            download = gr.File(label="Download (full size PNG)", elem_id="photo-download")
    examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if examples:
        gr.Examples([[str(p)] for p in examples], inputs=[photo], label="Examples")
    # preprocess=False: the library reads the original upload itself, so EXIF, 16-bit, CMYK and
    # damaged files get its handling and its messages rather than Gradio's.
    run.click(run_photo, inputs=[photo, style, weights_file, portrait, keep_colors, max_side],
              outputs=[result, download], api_name="stylize", preprocess=False,
              **MODEL_EVENT)
    follow_portrait_mode(portrait, style)
    return [(refresh_styles, [style])]
