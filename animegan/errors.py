"""The one exception type the CLI and the UI turn into a plain message."""


class AnimeGANError(Exception):
    """A user-facing failure: bad input, a wrong weights file, a missing folder.

    The message is a single line that names the file or value and what is wrong,
    so the CLI can print it and the UI can show it without a traceback.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when empty), for a one-line error."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
