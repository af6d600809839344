"""The one exception type the CLI and the UI turn into a plain message."""


class AnimeGANError(Exception):
    """A user-facing failure: bad input, a wrong weights file, a missing folder.

    The message is a single line that names the file or value and what is wrong,
    so the CLI can print it and the UI can show it without a traceback.
    """
