"""The one exception type for mistakes a user can make (bad files, bad options)."""


class GeosegError(Exception):
    """An input or configuration problem with a one-line, user-facing message.

    The CLI prints ``geoseg: error: <message>`` and exits with status 2 instead of a traceback,
    so the message must name the file or option and say how to fix it.
    """
