"""Small pieces every tab uses: turning library errors into messages, style menus."""
from __future__ import annotations

import functools
import math
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import gradio as gr
from PIL import Image

from ..batch import save_image
from ..errors import AnimeGANError
from ..limits import time_limit
from ..spaces_gpu import on_spaces
from ..weights import (COMMUNITY_PRESETS, available_styles, default_style, describe, offline_styles,
                       style_for_mode)

F = TypeVar("F", bound=Callable[..., Any])
# What a tab's build_tab() may return: functions to run on each page load, with their outputs
# (and, optionally, the load event's options).
LoadHooks = list[tuple[Any, ...]]


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


# One queue slot for the model: photo, video and face work share the CPU/GPU. Every event that
# runs a network passes **MODEL_EVENT, so a video in one tab and faces in another take turns.
MODEL_SLOT = "model"
MODEL_EVENT: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": MODEL_SLOT}

# What one request may cost. Uploads over MAX_FILE_SIZE are refused by Gradio before they reach
# a handler; QUEUE_SIZE requests may wait (more get Gradio's "queue is full" message); each kind
# of request stops at its time limit (cooperatively, see animegan.limits). Environment overrides
# are for deployments; tests change the dict.
MAX_FILE_SIZE = os.environ.get("ANIMEGAN_MAX_FILE_SIZE") or "200mb"
QUEUE_SIZE = int(_env_number("ANIMEGAN_QUEUE_SIZE", 64))
# Gradio keeps a copy of every component's config per browser/client session (about 0.2 MB for
# this app's ~140 components) and by default up to 10,000 sessions: gigabytes under many
# visitors. The oldest sessions beyond this many are dropped (they fall back to the defaults).
SESSION_CAPACITY = int(_env_number("ANIMEGAN_SESSION_CAPACITY", 200))
# How long results, uploads and Gradio's copies of them are kept on the server's disk.
OUTPUT_MAX_AGE_S = _env_number("ANIMEGAN_OUTPUT_MAX_AGE", 6 * 3600)
TIME_LIMITS_S: dict[str, float] = {
    "photo": _env_number("ANIMEGAN_PHOTO_TIME_LIMIT", 120),
    "video": _env_number("ANIMEGAN_VIDEO_TIME_LIMIT", 1800),
    "faces": _env_number("ANIMEGAN_FACES_TIME_LIMIT", 120),
}
_LIMIT_WHAT = {"photo": "stylizing the photo", "video": "stylizing the video", "faces": "making faces"}


def time_limited(kind: str, gpu_duration: float | None = None) -> Callable[[F], F]:
    """Run the handler under ``TIME_LIMITS_S[kind]`` (read at call time); past it, a plain message.

    ``gpu_duration`` is the ZeroGPU slot the handler's ``@gpu`` asks for: on a Space the limit
    ends a little before it, so the visitor gets this message rather than a killed worker.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            limit = TIME_LIMITS_S.get(kind)
            if gpu_duration is not None and on_spaces():
                limit = min(limit or math.inf, max(1.0, gpu_duration - 10.0))
            with time_limit(limit, _LIMIT_WHAT.get(kind, kind)):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return wrap


def checked_style(value: Any) -> str:
    """A style value sent by a browser or an API client: a listed style or a ``hub:`` id, never a path.

    The Photo dropdown accepts typed values (for hub ids); without this a client could name any
    .pt/.safetensors file on the server, or probe which paths exist from the error messages.
    Weights files of one's own come through the upload component instead.
    """
    text = str(value or "").strip()
    if not text:
        raise AnimeGANError("pick a style")
    if text.startswith("hub:") or text in COMMUNITY_PRESETS or text in available_styles():
        return text
    raise AnimeGANError(f"unknown style {text[:80]!r}: pick one from the list, type hub:USER/NAME, "
                        "or upload a weights file")


def user_errors(fn: F) -> F:
    """Show library errors as a plain message in the page; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except AnimeGANError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except MemoryError:
            raise gr.Error("out of memory: try a smaller 'max side'", print_exception=False) from None
        except Exception as exc:  # last resort: a message, and the log keeps the traceback
            raise gr.Error(f"unexpected error: {type(exc).__name__}: {str(exc)[:200]}") from exc

    return wrapper  # type: ignore[return-value]


def style_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a style dropdown, the offline-ready ones first."""
    ready = offline_styles()
    names = ready + [n for n in available_styles() if n not in ready]
    return [(f"{n} — {describe(n)}", n) for n in names]


def no_offline_style_note(alternatives: str) -> None:
    """A plain note at the top of a tab when no style works without a network yet."""
    if not offline_styles():
        gr.Markdown("**No style is available offline yet.** Community presets download once on first use "
                    f"(needs a network); or {alternatives}.")


def style_menu(elem_id: str) -> gr.Dropdown:
    """The style dropdown of the Photo and Video tabs: listed styles first, a typed hub: id allowed."""
    return gr.Dropdown(style_choices(), value=default_style_value(), label="Style", elem_id=elem_id,
                       allow_custom_value=True, info="or type hub:USER/NAME for a style on the Hugging Face Hub")


def follow_portrait_mode(portrait: gr.Checkbox, style: gr.Dropdown) -> None:
    """Ticking portrait mode moves the menu to the portrait style, unticking moves it back; a style the
    user picked stays."""
    portrait.change(lambda on, current: gr.update(value=style_for_mode(current, bool(on))), [portrait, style],
                    [style], queue=False, show_progress="hidden", api_visibility="private")


def refresh_styles() -> Any:
    """A style menu as it is now: run on each page load, so a style exported while the app runs shows up."""
    return gr.update(choices=style_choices(), value=default_style_value())


def default_style_value() -> str | None:
    """The menu's initial style: the default style, else the first listed (it downloads on first use)."""
    if offline_styles():
        return default_style()
    return (available_styles() or [None])[0]


def upload_path(payload: Any) -> str | None:
    """The server-side path of an upload, given a component's raw (unpreprocessed) payload."""
    if payload is None:
        return None
    if isinstance(payload, (str, os.PathLike)):
        return str(payload)
    if isinstance(payload, dict):
        return payload.get("path")
    return getattr(payload, "path", None)


def output_dir() -> Path:
    """A folder under the system temp dir (which Gradio serves) for results offered as downloads.

    Results older than ``OUTPUT_MAX_AGE_S`` are removed on each call, so a server that runs for
    weeks does not fill its disk (Gradio has copied each one into its own cache by then, which
    the ``delete_cache`` that ``build_app()`` sets prunes on the same schedule).
    """
    path = Path(tempfile.gettempdir()) / "animegan-outputs"
    path.mkdir(parents=True, exist_ok=True)
    prune_older_than(path, OUTPUT_MAX_AGE_S)
    return path


def served_image(image: Image.Image, stem: str) -> str:
    """``image`` saved as a PNG under a new name in ``output_dir()``: the path to give an image output.

    Gradio writes a PIL or array output in place to a path named by its content, so two sessions
    that make the same picture at once (the same photo and style, the same seed, one run's sample
    grid) rewrite one file while it is being served, and a download is cut off ("received 0 bytes,
    expected N"). A file path instead goes through Gradio's copy-and-rename into its cache.
    """
    return str(save_image(image, output_dir() / f"{stem}_{uuid.uuid4().hex[:8]}.png"))


def prune_older_than(folder: Path, age_s: float) -> int:
    """Delete the files in ``folder`` last changed more than ``age_s`` seconds ago; how many went."""
    cutoff, removed = time.time() - age_s, 0
    for entry in os.scandir(folder):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass  # another request removed or is still writing it
    return removed
