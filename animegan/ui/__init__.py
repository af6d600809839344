"""The Gradio app: one module per tab, each wiring the library API to components.

A tab module defines ``build_tab()`` and is called inside its ``gr.Tab``; it may return
``(fn, outputs)`` pairs to run on every page load (menus that must show weights made since the
app started), outside the queue; a third item of event options (``{"queue": True, **MODEL_EVENT}``)
sends work that runs a network through the queue's model slot instead. Tabs whose module is
absent from this install are left out.
"""
from __future__ import annotations

import importlib

import gradio as gr

TABS = [("Photo", "photo"), ("Video", "video"), ("Faces", "faces"), ("Training", "training")]

# Face models make 64 or 128 px pictures: shown at that size they are specks, so the face images
# are scaled up to their box on screen (smoothly); their download stays at the true size.
CSS = """
#faces-face img, #faces-between img, #faces-grid img { width: 100%; height: 100%; object-fit: contain; }
"""

INTRO = ("# anime studio\nPhotos and videos to anime with AnimeGAN styles, anime faces from noise, "
         "and a local trainer for your own styles.")


def build_app() -> gr.Blocks:
    """Build the whole app (not launched)."""
    from .common import OUTPUT_MAX_AGE_S

    # delete_cache: Gradio's copies of uploads and results go after OUTPUT_MAX_AGE_S, checked hourly
    age = max(60, int(OUTPUT_MAX_AGE_S))
    with gr.Blocks(title="anime studio", delete_cache=(min(3600, age), age)) as demo:
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
                    load_hooks = module.build_tab() or []
                for fn, outputs, *event in load_hooks:
                    options = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
                    demo.load(fn, None, outputs, **{**options, **(event[0] if event else {})})
    return demo


def configure_queue(demo: gr.Blocks, max_size: int | None = None) -> gr.Blocks:
    """The app's queue: one model slot (see ``common.MODEL_EVENT``) and at most ``max_size`` waiting."""
    from .common import QUEUE_SIZE

    # default_concurrency_limit=1 also covers events that name no limit (the Training tab's).
    return demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE if max_size is None else max_size)


def launch(**kwargs: object) -> gr.Blocks:
    """Build and serve the app. Host and port follow GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.

    Keyword arguments go to ``Blocks.launch`` (with ``prevent_thread_lock=True`` this returns
    the running app, which ``close()`` stops). Uploads are capped at ``common.MAX_FILE_SIZE``,
    per-session state at ``common.SESSION_CAPACITY`` sessions, and files kept on disk at
    ``common.OUTPUT_MAX_AGE_S`` seconds.
    """
    from .common import MAX_FILE_SIZE, SESSION_CAPACITY

    demo = configure_queue(build_app())
    options: dict[str, object] = {"max_file_size": MAX_FILE_SIZE, "show_error": True, "css": CSS,
                                  "state_session_capacity": SESSION_CAPACITY}
    options.update(kwargs)
    demo.launch(**options)  # type: ignore[arg-type]
    return demo
