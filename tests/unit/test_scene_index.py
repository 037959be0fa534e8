"""The scene index: start-up inspection cached per scene, reused for unchanged files (issue 20)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import geoseg.data.build as build
from conftest import write_tif
from geoseg.data.build import build_split, load_scenes, train_stats
from geoseg.data.stats import compute_stats


def _archive(root, count=4):
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        img = rng.integers(1, 999, (2, 64, 64), dtype=np.uint16)
        img[:, :10, :] = 0  # some nodata: the coarse mask matters
        write_tif(root / "images" / f"s{i}.tif", img, nodata=0)
        write_tif(root / "labels" / f"s{i}.tif", (rng.random((1, 64, 64)) > 0.9).astype(np.uint8), nodata=255)


def _cfg(root, cache, index=True):
    return {"root": str(root), "demo": None,
            "splits": {"train": {"images": "images/*.tif", "labels": "labels/{stem}.tif"}},
            "classes": [{"code": 0, "name": "a"}, {"code": 1, "name": "b"}], "ignore_index": 255,
            "chip_size": 16, "max_nodata_fraction": 0.5, "chips_per_epoch": 32, "batch_size": 4,
            "num_workers": 0, "stats_path": None, "cache_dir": str(cache), "index": index}  # fmt: skip


@pytest.fixture
def inspections(monkeypatch):
    """The scenes inspect_scene really opened, in order."""
    seen = []
    real = build.inspect_scene

    def counting(images, label, **kwargs):
        seen.append(os.path.basename(images if isinstance(images, str) else images[0]))
        return real(images, label, **kwargs)

    monkeypatch.setattr(build, "inspect_scene", counting)
    return seen


def test_a_second_start_reads_the_index_and_a_touched_file_rebuilds_only_its_entry(tmp_path, inspections):
    _archive(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", tmp_path / "cache")
    first = load_scenes(cfg, "train")
    assert len(inspections) == 4 and (tmp_path / "cache" / "scene-index.json").exists()
    inspections.clear()
    again = load_scenes(cfg, "train")
    assert inspections == [] and again == first  # every field, from the index
    label = tmp_path / "data" / "labels" / "s2.tif"
    write_tif(label, np.ones((1, 64, 64), np.uint8), nodata=255)  # a label redrawn under the same name
    third = load_scenes(cfg, "train")
    assert inspections == ["s2.tif"] and third[2].label_values == (1,)
    assert third[:2] == first[:2] and third[3] == first[3]


def test_chips_are_identical_with_and_without_a_cached_index(tmp_path):
    _archive(tmp_path / "data")
    batches = []
    for index in (False, True, True):  # no index; index built; index read (with its coarse masks)
        cfg = _cfg(tmp_path / "data", tmp_path / "cache", index=index)
        scenes = load_scenes(cfg, "train")
        stats = train_stats(cfg, progress=False, scenes=scenes)
        split = build_split(cfg, "train", stats, None, seed=0, scenes=scenes)
        batches.append(next(iter(split.loader)))
    for other in batches[1:]:
        assert (other["image"] == batches[0]["image"]).all() and (other["mask"] == batches[0]["mask"]).all()


def test_a_damaged_index_is_rebuilt_with_a_warning(tmp_path, inspections, caplog):
    _archive(tmp_path / "data", count=2)
    cfg = _cfg(tmp_path / "data", tmp_path / "cache")
    first = load_scenes(cfg, "train")
    (tmp_path / "cache" / "scene-index.json").write_text("{not json")
    inspections.clear()
    assert load_scenes(cfg, "train") == first and len(inspections) == 2
    assert "scene index" in caplog.text and "rebuilding it" in caplog.text


def _index_rank(rank: int, port: int, cfg: dict, out: str) -> None:
    """One gloo rank loading the scenes as `geoseg train` does (rank 0 first); saves what it inspected."""
    import json

    import torch.distributed as dist

    from geoseg.engine.distributed import DistInfo, main_process_first

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    seen = []
    real = build.inspect_scene
    build.inspect_scene = lambda images, label, **kw: seen.append(images) or real(images, label, **kw)
    try:
        with main_process_first(DistInfo(rank=rank, world_size=2)):
            scenes = load_scenes(cfg, "train")
        stats = train_stats(cfg, progress=False, scenes=scenes, rank=rank, world_size=2)  # a shard each
        result = {"seen": seen, "count": len(scenes), "stats": [stats.mean, stats.std, stats.p2, stats.p98]}
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_ranks_build_one_index_and_merge_their_statistics_shards(tmp_path):
    import json

    import torch.multiprocessing as mp

    from conftest import free_port

    _archive(tmp_path / "data", count=3)
    cfg = _cfg(tmp_path / "data", tmp_path / "cache")
    mp.spawn(_index_rank, args=(free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["seen"]) == 3 and ranks[1]["seen"] == []  # rank 1 read what rank 0 wrote
    assert ranks[0]["count"] == ranks[1]["count"] == 3
    single = compute_stats(load_scenes(cfg, "train"), progress=False)  # one process, all scenes
    for got in (ranks[0]["stats"], ranks[1]["stats"]):
        np.testing.assert_allclose(got[0], single.mean, rtol=1e-12)
        np.testing.assert_allclose(got[1], single.std, rtol=1e-12)
        assert got[2:] == [single.p2, single.p98]  # the same sample, shard by shard
    assert len(list((tmp_path / "cache").glob("stats-*.json"))) == 1  # written once, by rank 0


@pytest.mark.usefixtures("release_hydra_logging")
def test_geoseg_index_builds_what_train_then_reads(tmp_path, inspections):
    from geoseg.cli import main

    _archive(tmp_path / "data", count=2)
    cfg = _cfg(tmp_path / "data", tmp_path / "cache")
    main(["index", f"data.root={cfg['root']}", "data.demo=null", f"data.cache_dir={cfg['cache_dir']}",
          "data.splits.train.images=images/*.tif", "data.splits.train.labels='labels/{stem}.tif'",
          "data.splits.val=null", "splits=[train]", "data.chip_size=16",
          "data.classes=[{code: 0, name: a}, {code: 1, name: b}]", "progress=false"])  # fmt: skip
    assert len(inspections) == 2
    inspections.clear()
    load_scenes(cfg, "train")
    assert inspections == []
