"""The Gradio app: one module per tab, each wiring the library API to components.

A tab module defines ``build_tab() -> None`` and is called inside its ``gr.Tab``. Tabs
whose module is absent from this install are left out.
"""
from __future__ import annotations

import importlib

import gradio as gr

TABS = [("Photo", "photo"), ("Video", "video"), ("Faces", "faces"), ("Training", "training")]

INTRO = ("# anime studio\nPhotos and videos to anime with AnimeGAN styles, anime faces from noise, "
         "and a local trainer for your own styles.")


def build_app() -> gr.Blocks:
    """Build the whole app (not launched)."""
    with gr.Blocks(title="anime studio") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            for label, module_name in TABS:
                try:
                    module = importlib.import_module(f"{__name__}.{module_name}")
                except ModuleNotFoundError as exc:
                    if exc.name == f"{__name__}.{module_name}":
                        continue
                    raise
                with gr.Tab(label, id=module_name):
                    module.build_tab()
    return demo


def launch(**kwargs: object) -> None:
    """Build and serve the app. Host and port follow GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    demo = build_app()
    demo.queue(default_concurrency_limit=1)
    options: dict[str, object] = {"max_file_size": "200mb", "show_error": True}
    options.update(kwargs)
    demo.launch(**options)  # type: ignore[arg-type]
