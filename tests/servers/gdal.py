"""GDAL state for the remote-read tests: config options set and put back, and the /vsicurl/ cache cleared.

GDAL keeps, process-wide, what it learnt about a URL (its size, that it failed, blocks it read): a test
that injects faults must not meet a previous test's cache. rasterio does not expose GDAL's
``VSICurlClearCache``; :func:`clear_vsicurl_cache` calls it through ctypes in the libgdal that rasterio
already loaded (never another copy). Where that is not possible it returns False, and a test uses a URL
GDAL has never seen instead (:meth:`servers.range_http.RangeServer.unique_url`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Mapping
from functools import cache

from rasterio._env import del_gdal_config, get_gdal_config, set_gdal_config


@cache
def _loaded_libgdal() -> ctypes.CDLL | None:
    """rasterio's libgdal, or None: looked up through rasterio's own extension module (the dynamic loader
    searches a library's dependencies for a symbol), never by name, for another copy may be mapped into
    the process too (pyogrio's wheel brings its own libgdal, and /proc/self/maps may list it first)."""
    import rasterio._io

    try:
        lib = ctypes.CDLL(rasterio._io.__file__)  # already loaded: dlopen returns the same handle
    except OSError:
        return None
    return lib if hasattr(lib, "VSICurlClearCache") else None


def clear_vsicurl_cache() -> bool:
    """Forget everything GDAL cached about /vsicurl/, /vsis3/ (and the other network file systems).

    Returns False when the function cannot be reached (then use a fresh URL per test instead).
    """
    lib = _loaded_libgdal()
    if lib is None:
        return False
    lib.VSICurlClearCache.restype = None
    lib.VSICurlClearCache.argtypes = []
    lib.VSICurlClearCache()
    return True


@contextlib.contextmanager
def gdal_config(options: Mapping[str, str | None]) -> Iterator[None]:
    """Set GDAL config options (``None``: unset) for the block, then put back what was there before.

    Not ``rasterio.Env``: that refuses ``AWS_*`` credentials, and an ``Env`` opened for an ``s3://``
    path removes the ``AWS_*`` options it set (from boto3) on exit, global ones included.
    """
    before = {key: get_gdal_config(key, normalize=False) for key in options}
    try:
        for key, value in options.items():
            if value is None:
                del_gdal_config(key)
            else:
                set_gdal_config(key, str(value), normalize=False)
        yield
    finally:
        for key, value in before.items():
            if value is None or os.environ.get(key) == value:  # none, or the environment's: it stays
                del_gdal_config(key)
            else:
                set_gdal_config(key, value, normalize=False)
