"""Soak: 200 training steps with 2 DataLoader workers; memory and open files must not keep growing.

Slow (about a minute on 2 cores): ``pytest -m slow tests/reliability/test_soak.py``. The measurement is
``scripts/bench_soak.py``, whose curve is in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_soak.py"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="samples /proc (Linux)")
def test_200_steps_with_2_workers_do_not_grow_memory_or_open_files(demo_root, tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "200", "--workers", "2", "--interval", "0.25",
         "--root", str(demo_root), "--json", str(out), "data.chip_size=64"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert max(s["workers"] for s in result["samples"]) >= 2, "the DataLoader workers were sampled"
    v = result["verdict"]
    # a leak of one 8x6x64x64 float batch per step would add about 80 MiB over the 100 steps compared
    assert v["main_rss_mib"]["growth_min"] < 25 and v["main_rss_mib"]["growth_max"] < 40, v
    assert v["workers_rss_mib"]["growth_min"] < 25 and v["workers_rss_mib"]["growth_max"] < 40, v
    assert v["open_fds"]["growth_min"] <= 2, v
