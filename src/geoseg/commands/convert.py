"""``geoseg convert input=... output=FOLDER``: rewrite scenes as tiled GeoTIFFs that train fastest.

A folder is searched recursively and its tree is mirrored under ``output``; outputs that exist are
skipped (``existing=skip``, the default), so an interrupted conversion picks up where it stopped.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from geoseg.config import flag, is_whole
from geoseg.data.convert import convert_file, output_profile
from geoseg.data.rasters import open_raster
from geoseg.errors import GeosegError
from geoseg.output_policy import check_existing, check_folder_output, claim_output

log = logging.getLogger(__name__)
SUFFIXES = (".tif", ".tiff")


def pairs(spec: str, output: str) -> list[tuple[str, str]]:
    """(source, target) for every GeoTIFF of ``spec``: a folder's tree mirrored, a glob's files by name;
    one file to ``output`` itself when that is a new ``.tif`` name (``input=a.tif output=b.tif``)."""
    if os.path.isfile(spec) and output.lower().endswith(SUFFIXES) and not os.path.isdir(output):
        out = [(spec, output)]
    elif os.path.isdir(spec):
        found = sorted(glob.glob(os.path.join(glob.escape(spec), "**", "*"), recursive=True))
        sources = [p for p in found if p.lower().endswith(SUFFIXES) and os.path.isfile(p)]
        out = [(p, os.path.join(output, os.path.relpath(p, spec))) for p in sources]
    else:
        if output.lower().endswith(SUFFIXES) and not os.path.isdir(output):
            raise GeosegError(f"convert: output='{output}' names a file but input='{spec}' is not one file; "
                              "name a folder for the converted files")  # fmt: skip
        sources = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        sources = [p for p in sources if os.path.isfile(p)]
        out = [(p, os.path.join(output, os.path.basename(p))) for p in sources]
        names = [t for _, t in out]
        if len(set(names)) < len(names):
            raise GeosegError(
                f"convert: input='{spec}' holds two files of one name; pass their folder instead"
            )
    if not out:
        raise GeosegError(f"convert: no GeoTIFF under input='{spec}'; pass a folder, a file or a quoted glob")
    for source, target in out:
        if os.path.abspath(source) == os.path.abspath(target):
            raise GeosegError(f"convert: output= would overwrite '{source}'; choose another output folder")
    return out


def whole_number(value: Any, option: str) -> int:
    """``value`` as an int, or a one-line error naming ``option``."""
    if not is_whole(value):
        raise GeosegError(f"{option}={value!r} must be a whole number of pixels, e.g. {option}=512")
    return value


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    if not cfg.get("input") or not cfg.get("output"):
        raise GeosegError(
            "missing input= or output=; usage: geoseg convert input=FOLDER|FILE|'GLOB' output=FOLDER"
        )
    existing = check_existing(cfg.existing)
    block, compress = whole_number(cfg.block, "block"), str(cfg.compress).lower()
    found = pairs(str(cfg.input), str(cfg.output))
    if not (len(found) == 1 and found[0][1] == str(cfg.output)):
        check_folder_output(str(cfg.output))
    sources = [source for source, _ in found]
    todo = []
    for source, target in found:
        if not claim_output(target, "converted", existing, sources):
            continue
        with open_raster(source, "scene", "input=") as src:
            output_profile(src, block, compress)  # options and every file checked before anything is written
            todo.append((source, target, src.height))
    skipped = len(found) - len(todo)
    bar = tqdm(total=sum(h for *_, h in todo), unit="row", desc="convert",
               disable=not (flag(cfg, "progress", True) and sys.stderr.isatty()))  # fmt: skip
    results = []
    for k, (source, target, _) in enumerate(todo, 1):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        result = convert_file(source, target, block, compress, flag(cfg, "overviews", True), bar.update)
        log.info("%d/%d %s -> %s (%.1f -> %.1f MB)", k, len(todo), source, target,
                 result["bytes_in"] / 1e6, result["bytes_out"] / 1e6)  # fmt: skip
        results.append(result)
    bar.close()
    log.info("converted %d file(s), skipped %d that exist, into %s", len(results), skipped, cfg.output)
    return results
