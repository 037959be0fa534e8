"""Opening rasters with one-line errors: missing files, unreadable formats, truncated pixels."""

from __future__ import annotations

import os
import time
import warnings

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from geoseg.data.remote import configure_remote_reads, is_remote, read_cause, shown, with_retries
from geoseg.errors import GeosegError, first_line


def open_raster(
    path: str | os.PathLike, what: str = "raster", options: str = "the data.* options"
) -> rasterio.DatasetReader:
    """Open ``path`` with rasterio, turning GDAL failures into one-line :class:`GeosegError` messages.

    ``options`` names what set the path, for the message when the file is missing.
    """
    path = str(path)
    if is_remote(path):
        return open_remote(path, what)
    if not os.path.exists(path):
        raise GeosegError(f"{what} file not found: '{path}'. Check the path or {options}.")
    if os.path.isdir(path):
        raise GeosegError(
            f"{what} '{path}' is a folder, not a file; rename or move it, or check the path or {options}."
        )
    try:
        with warnings.catch_warnings():  # a missing georeference is checked and reported by the caller
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        reason = first_line(err)
        if "not recognized as being in a supported file format" in reason:
            reason = "GDAL does not recognise its format"
        raise GeosegError(
            f"cannot read {what} '{path}' as a raster ({reason}); check that it is a complete GeoTIFF."
        ) from None


def open_remote(path: str, what: str = "raster") -> rasterio.DatasetReader:
    """Open a URL or GDAL virtual path (see :mod:`geoseg.data.remote`); a failure is one line naming the
    URL without its query string, and the cause (HTTP status, credentials, connection)."""
    configure_remote_reads()
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise GeosegError(f"cannot read {what} '{shown(path)}' ({read_cause(err, started)}).") from None


def unreadable(what: str, path: str) -> GeosegError:
    """The one-line error for a raster whose header opens but whose pixels cannot be read."""
    if is_remote(path):
        return GeosegError(
            f"cannot read the pixels of {what} '{shown(path)}' after retries (a truncated file, or the "
            "connection kept failing); check the file and the network."
        )
    return GeosegError(
        f"{what} '{path}' is truncated or corrupt (GDAL cannot read its pixels); re-download or re-export it."
    )


def check_readable(src: rasterio.DatasetReader, path: str, what: str = "raster") -> None:
    """Read the last block of every band, which a truncated file has lost, or fail with one line.

    GeoTIFF writers put the blocks in raster order (COGs put the full-resolution blocks last), so a
    cut-off file fails here at start-up instead of in the middle of a run; it costs one block per band.
    Bands of different dtypes are read one at a time (rasterio reads one dtype per call). A remote
    file's read is tried again, on a fresh handle, after a dropped connection or a cut-off body
    (:func:`~geoseg.data.remote.with_retries`), as every later read of it is.
    """
    if not is_remote(path):
        try:
            _read_last_block(src)
        except RasterioError:
            raise unreadable(what, path) from None
        return
    handle = [src]  # the caller's, then a fresh one after each failed try

    def reset() -> None:
        """Close a handle this function opened; the next try opens the file afresh."""
        if handle[0] is not src:
            handle[0].close()
        handle[0] = None

    def read() -> None:
        if handle[0] is None:
            handle[0] = open_remote(path, what)
        _read_last_block(handle[0])

    try:
        with_retries(read, reset, path, "the pixels")
    finally:
        if handle[0] is not None and handle[0] is not src:
            handle[0].close()


def _read_last_block(src: rasterio.DatasetReader) -> None:
    """The last block of every band of ``src``."""
    rows, cols = src.block_shapes[0]
    row0, col0 = (src.height - 1) // rows * rows, (src.width - 1) // cols * cols
    window = Window(col0, row0, src.width - col0, src.height - row0)
    if len(set(src.dtypes)) == 1:
        src.read(window=window)
    else:
        for band in range(1, src.count + 1):
            src.read(band, window=window)
