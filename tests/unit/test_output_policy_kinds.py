"""geoseg/output_policy.py: each output kind knows a file geoseg wrote from a lookalike of the user's."""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
from PIL import Image

from conftest import write_tif
from geoseg.errors import GeosegError
from geoseg.output_policy import (
    CONVERTED_TAG,
    KINDS,
    PNG_METADATA,
    REPORT_MARK,
    check_existing,
    claim_output,
    describe,
)


def test_each_kind_recognises_what_geoseg_writes_and_nothing_else(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"bands": [1], "mean": [1.0], "std": [2.0]}))
    other_json = tmp_path / "mine.json"
    other_json.write_text(json.dumps({"bands": [1]}))
    assert KINDS["stats"].recognise(str(stats)) and not KINDS["stats"].recognise(str(other_json))

    fig = plt.figure()
    plt.savefig(tmp_path / "ours.png", metadata=PNG_METADATA)
    plt.savefig(tmp_path / "plain.png")
    plt.close(fig)
    Image.new("RGB", (4, 4)).save(tmp_path / "pil.png")
    assert KINDS["picture"].recognise(str(tmp_path / "ours.png"))
    assert not any(KINDS["picture"].recognise(str(tmp_path / n)) for n in ("plain.png", "pil.png"))

    converted = write_tif(tmp_path / "c.tif", np.ones((1, 8, 8), np.uint8))
    plain = write_tif(tmp_path / "p.tif", np.ones((1, 8, 8), np.uint8))
    with rasterio.open(converted, "r+") as dst:
        dst.update_tags(**{CONVERTED_TAG: "/data/src.tif"})
    assert KINDS["converted"].recognise(str(converted)) and not KINDS["converted"].recognise(str(plain))
    assert not KINDS["prediction"].recognise(str(plain))

    report, notes = tmp_path / "results.md", tmp_path / "notes.md"
    report.write_text(f"# Sweep report\n\n{REPORT_MARK}\n")
    notes.write_text("# My notes\n")
    assert KINDS["report"].recognise(str(report)) and not KINDS["report"].recognise(str(notes))


def test_describe_names_what_a_path_is(tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"\x80\x02")
    label = write_tif(tmp_path / "label.tif", np.zeros((1, 4, 4), np.uint8))
    (tmp_path / "dir.tif").mkdir()
    assert describe(str(ckpt)) == "a checkpoint"
    assert describe(str(label)) == "a raster"
    assert describe(str(tmp_path / "dir.tif")) == "a folder"


def test_claim_output_refuses_an_input_reached_through_a_link(tmp_path):
    label = write_tif(tmp_path / "label.tif", np.zeros((1, 4, 4), np.uint8))
    os.symlink(label, tmp_path / "link.tif")
    with pytest.raises(GeosegError, match="is one of this command's inputs"):
        claim_output(tmp_path / "link.tif", "prediction", "overwrite", [label])
    assert claim_output(tmp_path / "new.tif", "prediction", "error", [label])
    with pytest.raises(GeosegError, match="is a file, not a folder"):
        claim_output(label / "x.json", "stats", "error")


def test_existing_takes_three_words_only():
    assert [check_existing(v) for v in ("error", "skip", "overwrite")] == ["error", "skip", "overwrite"]
    for bad in ("yes", True, None, "Overwrite"):
        with pytest.raises(GeosegError, match="is not one of error, skip, overwrite"):
            check_existing(bad)
