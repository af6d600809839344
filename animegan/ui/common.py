"""Small pieces every tab uses: turning library errors into messages, style menus."""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import gradio as gr

from ..errors import AnimeGANError
from ..weights import available_styles, describe, offline_styles

F = TypeVar("F", bound=Callable[..., Any])

# One queue slot for the model: photo, video and face work share the CPU/GPU.
MODEL_SLOT = "model"


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


def default_style_value() -> str | None:
    ready = offline_styles()
    names = available_styles()
    return (ready or names or [None])[0]


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
    """A folder under the system temp dir (which Gradio serves) for results offered as downloads."""
    path = Path(tempfile.gettempdir()) / "animegan-outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path
