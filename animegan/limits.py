"""Per-request time limits, checked between units of work.

::

    with time_limit(120, "stylizing photo.jpg"):
        stylizer(photo)          # raises TimeLimitExceeded at the next tile or batch after 120 s

The limit is cooperative: the stylizer checks it between tiles and batches, the video
pipeline between batches. A request is never abandoned in a background thread: such a
thread would keep the GPU busy after its queue slot was handed to the next request, which
is exactly what the app's single model slot exists to prevent. The price is granularity:
one tile or batch may run past the limit before the check stops the work.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Iterator

from .errors import AnimeGANError


class TimeLimitExceeded(AnimeGANError):
    """The request ran past its time limit; its partial work was dropped."""


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic() value
    seconds: float
    what: str


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("animegan_deadline", default=None)


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "this request") -> Iterator[None]:
    """Within the block, ``check_time()`` raises ``TimeLimitExceeded`` once ``seconds`` have passed.

    ``None`` or a negative number means no limit. Nested limits keep the earlier deadline.
    """
    if seconds is None or seconds < 0:
        yield
        return
    deadline = _Deadline(time.monotonic() + float(seconds), float(seconds), what)
    outer = _DEADLINE.get()
    token = _DEADLINE.set(outer if outer is not None and outer.at <= deadline.at else deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_time() -> None:
    """Raise ``TimeLimitExceeded`` if the current block's time limit has passed."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() >= deadline.at:
        raise TimeLimitExceeded(f"{deadline.what}: stopped at the {deadline.seconds:g} s time limit per request; "
                                "try a smaller 'max side' or a shorter clip")


def time_left() -> float | None:
    """Seconds left before the current block's limit (None when there is no limit)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline.at - time.monotonic())
