"""The one exception type for mistakes a user can make (bad files, bad options)."""

from geoseg.url_text import without_secrets  # no URL's token or user info in a printed error


class GeosegError(Exception):
    """An input or configuration problem with a one-line, user-facing message.

    The CLI prints ``geoseg: error: <message>`` and exits with status 2 instead of a traceback,
    so the message must name the file or option and say how to fix it.
    """


def user_message(err: BaseException) -> str:
    """The one-line message of a :class:`GeosegError`, also when a DataLoader worker raised it.

    torch re-raises a worker's exception as ``GeosegError("Caught GeosegError in DataLoader worker
    process 0. Original Traceback ...")``; the original message is that traceback's last line. A URL in
    it is shown without its query string or user info (a signed URL's token), as geoseg's messages name
    remote files.
    """
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return without_secrets(last.split("GeosegError: ", 1)[-1])
    return without_secrets(text)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unpickling_detail(err: BaseException) -> str:
    """The informative line of torch's multi-line weights-only refusal (what it refused, or why)."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Please file an issue", "Check the documentation"))]
    return useful[0] if useful else first_line(err)
