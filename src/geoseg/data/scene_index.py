"""A scene index: what start-up inspection learns per scene, cached so later starts skip it.

Inspecting a scene opens every file, checks grids, CRS, bands and nodata, and reads the whole label to
list its codes; the chip sampler then reads a coarse validity mask. For an archive of 10,000 scenes
that is most of a start-up. The index keeps, per scene, the inspected :class:`Scene` and its coarse
masks in one JSON file in ``data.cache_dir``, under a key of everything the inspection depends on:
the options (bands, nodata, classes, chip size, region, files, grid, rule) and each file's path, size
and modification time. A changed or new file gets a new entry; the others are reused. Under DDP rank
0 builds it (the others wait in ``main_process_first``) and the others read it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from geoseg.data.stack import Grid, SceneFile
from geoseg.data.vector_labels import VectorOptions
from geoseg.errors import GeosegError
from geoseg.io import atomic_write_text

log = logging.getLogger(__name__)

VERSION = 2


def file_record(path: str | None) -> list[Any]:
    """Path, size and modification time of a file (the path alone for what is not a local file)."""
    if path is None:
        return [None]
    try:
        st = os.stat(path)
    except OSError:
        return [path]
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def entry_key(options: Mapping[str, Any], images: Sequence[str], label: str | None) -> str:
    """The index key of one scene: the inspection options and its files' records."""
    record = [dict(options), [file_record(p) for p in images], file_record(label)]
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


def scene_to_json(scene: Any) -> dict[str, Any]:
    return asdict(scene)


def scene_from_json(data: Mapping[str, Any]) -> Any:
    """A :class:`Scene` from :func:`scene_to_json`'s output (lists back to tuples, nested records)."""
    from geoseg.data.scenes import Scene

    def grid(value: Any) -> Grid | None:
        return None if value is None else Grid(value["crs"], tuple(value["transform"]), value["height"],
                                               value["width"])  # fmt: skip

    values = dict(data)
    for name in ("bands", "region", "label_values", "block", "band_names"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    values["files"] = tuple(
        SceneFile(**{**f, "bands": tuple(f["bands"]), "nodata": tuple(f["nodata"]), "grid": grid(f["grid"])})
        for f in values.get("files") or ()
    )
    values["grid"] = grid(values.get("grid"))
    values["dates"], values["date_mask"] = (), None  # series scenes are not indexed
    if values.get("vector") is not None:
        values["vector"] = VectorOptions(**values["vector"])
    known = {f.name for f in fields(Scene)}
    return Scene(**{k: v for k, v in values.items() if k in known})


class SceneIndex:
    """Entries loaded from ``path`` (none when it is missing or unreadable), written back by ``save``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.crs: list[str] = []  # each CRS (WKT, ~1 KB) once; entries hold its position
        self.used: set[str] = set()
        self.changed = False
        self.hits = 0
        self.foreign = False  # the path holds a file geoseg did not write: it is never replaced
        try:
            with open(path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError, UnicodeDecodeError) as err:  # a damaged index: a cache, rebuilt
            log.warning("scene index '%s' is unreadable (%s); rebuilding it", path, err)
            return
        if not (isinstance(data, dict) and "version" in data and "entries" in data):
            self.foreign = True  # another program's JSON of that name: never replaced
            log.warning("'%s' is not a geoseg scene index; going on without one and leaving that file alone "
                        "(set data.cache_dir to another folder)", path)  # fmt: skip
        elif data.get("version") == VERSION:
            self.entries, self.crs = dict(data.get("entries") or {}), list(data.get("crs") or [])

    def scene(self, key: str) -> Any | None:
        """The cached scene of ``key``, or ``None``."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.used.add(key)
        try:
            scene = scene_from_json(_map_crs(entry["scene"], lambda i: self.crs[i]))
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        self.hits += 1
        return scene

    def put(self, key: str, scene: Any) -> None:
        self.entries[key] = {"scene": _map_crs(scene_to_json(scene), self._crs_id)}
        self.used.add(key)
        self.changed = True

    def _crs_id(self, wkt: str) -> int:
        if wkt not in self.crs:
            self.crs.append(wkt)
        return self.crs.index(wkt)

    def mask(self, key: str, name: str) -> np.ndarray | None:
        """A cached coarse mask of scene ``key`` (``name``: what it was computed for)."""
        stored = (self.entries.get(key) or {}).get("masks", {}).get(name)
        if stored is None:
            return None
        raw = np.frombuffer(base64.b64decode(stored["data"]), dtype=stored["dtype"])
        return raw.reshape(stored["shape"]).copy()

    def put_mask(self, key: str, name: str, mask: np.ndarray) -> None:
        if key not in self.entries:
            return
        data = base64.b64encode(np.ascontiguousarray(mask).tobytes()).decode()  # ~1 byte per 64x64-px cell
        stored = {"dtype": str(mask.dtype), "shape": list(mask.shape), "data": data}
        self.entries[key].setdefault("masks", {})[name] = stored
        self.changed = True

    def save(self) -> None:
        """Write the index (entries of files no longer listed are kept: another split may use them).

        It is a cache: when it cannot be written (full disk, read-only folder) the run goes on without
        it, with a warning."""
        if not self.changed or self.foreign:
            return
        text = json.dumps({"version": VERSION, "crs": self.crs, "entries": self.entries})
        try:
            atomic_write_text(self.path, text, "scene index")
        except GeosegError as err:
            log.warning("%s; going on without the scene index (set data.cache_dir elsewhere)", err)
        self.changed = False


def _map_crs(value: Any, convert: Any) -> Any:
    """``value`` with every grid's ``crs`` passed through ``convert`` (WKT <-> position in the table)."""
    if isinstance(value, dict):
        return {
            k: (convert(v) if k == "crs" and v is not None else _map_crs(v, convert))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):  # asdict keeps tuples
        return [_map_crs(v, convert) for v in value]
    return value


def cached_array(
    index: SceneIndex | None, key: str | None, name: str, compute: Callable[[], np.ndarray], dtype: Any
) -> np.ndarray:
    """The array ``name`` of scene ``key`` from ``index``; else ``compute()``, stored there as ``dtype``."""
    if index is None or key is None:
        return compute()
    stored = index.mask(key, name)
    if stored is not None:
        return stored
    value = compute()
    index.put_mask(key, name, value.astype(dtype))
    return value
