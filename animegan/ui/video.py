"""The Video tab: upload a clip, pick a style, start or cancel, watch and download the result."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import AnimeGANError
from ..spaces_gpu import gpu
from ..video import stylize_video
from .common import (MODEL_EVENT, LoadHooks, checked_style, follow_portrait_mode, no_offline_style_note,
                     output_dir, refresh_styles, style_menu, time_limited, upload_path, user_errors)

# The ZeroGPU slot a video asks for (on a Space its time limit ends just before it).
VIDEO_GPU_S = 240

# One cancel flag per browser session: the Cancel button sets the flag of that session's run,
# which the library checks between batches (Gradio cannot stop a running worker thread itself).
# On ZeroGPU the run happens in another process, where only Gradio's `cancels=` reaches it.
_CANCEL: dict[str, threading.Event] = {}
_CANCEL_LOCK = threading.Lock()


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _new_cancel_flag(session: str) -> threading.Event:
    with _CANCEL_LOCK:
        flag = _CANCEL[session] = threading.Event()
    return flag


def cancel_video(request: gr.Request) -> None:
    """Ask this session's running video job to stop after its current batch."""
    with _CANCEL_LOCK:
        flag = _CANCEL.get(_session(request))
    if flag is not None:
        flag.set()


def _eta(started: float, done: int, total: int) -> str:
    if done <= 0 or total <= done:
        return ""
    left = (time.monotonic() - started) / done * (total - done)
    return f", about {int(left // 60)}:{int(left % 60):02d} left"


@user_errors
@gpu(duration=VIDEO_GPU_S)
@time_limited("video", gpu_duration=VIDEO_GPU_S)
def run_video(video: Any, style: str | None, portrait: bool, keep_colors: bool, max_side: float,
              start: float | None, end: float | None, request: gr.Request,
              progress: gr.Progress = gr.Progress()) -> tuple[str, str]:
    """Stylize the uploaded video; returns the result twice (player and download)."""
    path = upload_path(video)
    if not path:
        raise AnimeGANError("upload a video first")
    style = checked_style(style)
    session = _session(request)
    flag = _new_cancel_flag(session)
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress((done, total), desc=f"stylizing frames{_eta(started, done, total)}", unit="frames")

    progress(0.0, desc="loading the style and reading the video")
    target = output_dir() / f"{Path(path).stem}_anime_{uuid.uuid4().hex[:8]}.mp4"
    try:
        result = stylize_video(path, target, style, portrait=bool(portrait), keep_colors=bool(keep_colors),
                               max_side=int(max_side or 0) or None, start=float(start) if start else None,
                               end=float(end) if end else None, progress=report, cancel=flag)
    finally:
        with _CANCEL_LOCK:
            if _CANCEL.get(session) is flag:
                del _CANCEL[session]
    for message in result.warnings:
        gr.Warning(message)
    return str(result.path), str(result.path)


def build_tab() -> LoadHooks:
    """Video tab components and events."""
    no_offline_style_note("train a style in the Training tab")
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Video", sources=["upload"], include_audio=True, elem_id="video-input")
            style = style_menu("video-style")
            with gr.Accordion("Options", open=False):
                portrait = gr.Checkbox(label="Portrait: a fixed square crop around the face found at the start")
                keep_colors = gr.Checkbox(label="Keep the video's colours")
                max_side = gr.Slider(0, 3840, value=720, step=16,
                                     label="Max side of the result in pixels (0 = the video's own size)",
                                     info="a style that records a working size stylizes each frame at that "
                                          "size, then scales it to this")
                with gr.Row():
                    start = gr.Number(label="Start (s)", value=None, minimum=0, elem_id="video-start")
                    end = gr.Number(label="End (s)", value=None, minimum=0, elem_id="video-end")
            with gr.Row():
                run = gr.Button("Start", variant="primary", elem_id="video-run")
                stop = gr.Button("Cancel", variant="stop", elem_id="video-cancel")
        with gr.Column():
            result = gr.Video(label="Anime video", interactive=False, buttons=["download"], elem_id="video-result")
            download = gr.File(label="Download (MP4)", elem_id="video-download")
    job = run.click(run_video, inputs=[video, style, portrait, keep_colors, max_side, start, end],
                    outputs=[result, download], api_name="video", **MODEL_EVENT)
    # The handler sets the running job's flag; `cancels` also drops a job still waiting in the queue.
    stop.click(cancel_video, inputs=None, outputs=None, cancels=[job], queue=False, api_visibility="private")
    follow_portrait_mode(portrait, style)
    return [(refresh_styles, [style])]
