"""ZeroGPU on Hugging Face Spaces: ``@gpu`` runs a function under ``spaces.GPU`` there, and
is a no-op everywhere else (the ``spaces`` package is only installed on Spaces).

::

    from animegan.spaces_gpu import gpu

    @gpu                    # default duration (60 s on ZeroGPU)
    def run_photo(...): ...

    @gpu(duration=120)      # a longer GPU slot for slow work (video)
    def run_video(...): ...
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@functools.lru_cache(maxsize=1)
def _spaces() -> Any | None:
    try:
        import spaces  # type: ignore[import-not-found]
    except Exception:  # not on a Space (ImportError), or a broken install: run without it
        return None
    return spaces if hasattr(spaces, "GPU") else None


def on_spaces() -> bool:
    """True when the ``spaces`` package (and its GPU decorator) is importable."""
    return _spaces() is not None


def gpu(fn: F | None = None, *, duration: int | None = None) -> F | Callable[[F], F]:
    """Wrap ``fn`` with ``spaces.GPU`` (optionally ``duration=`` seconds) where available."""

    def wrap(f: F) -> F:
        spaces = _spaces()
        if spaces is None:
            return f
        return spaces.GPU(duration=duration)(f) if duration is not None else spaces.GPU(f)

    return wrap(fn) if fn is not None else wrap
