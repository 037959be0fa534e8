"""The one exception type for mistakes a user can make (bad files, bad options)."""


class GeosegError(Exception):
    """An input or configuration problem with a one-line, user-facing message.

    The CLI prints ``geoseg: error: <message>`` and exits with status 2 instead of a traceback,
    so the message must name the file or option and say how to fix it.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
