"""Soak run: memory and file handles of ``geoseg train`` over many steps, sampled from /proc (Linux).

Runs ``geoseg train`` on the demo scenes (generated under ``--root`` when missing) with DataLoader
workers, several epochs of validation and TensorBoard on, and samples every ``--interval`` seconds:
the training step (from ``metrics.jsonl``), the main process's RSS and open file descriptors, and the
summed RSS of its worker processes. It prints a table of the curve and a verdict that compares the
last quarter of the run with its second quarter, and can write every sample as JSON. The slow test
``tests/reliability/test_soak.py`` runs it and asserts the verdict.

    python scripts/bench_soak.py --steps 200 --workers 2 --json outputs/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    """Resident set size of one process, MiB (0 when it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (DataLoader workers and anything they start)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def last_step(metrics: Path) -> int:
    """The step of the last complete ``train`` row of ``metrics.jsonl`` (0 before the first)."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "train":
            return int(row["step"])
    return 0


def soak(
    root: Path, run_dir: Path, steps: int, workers: int, interval: float, extra: list[str]
) -> list[dict]:
    """Train for ``steps`` optimizer steps and return one sample per ``interval`` seconds."""
    args = [sys.executable, "-m", "geoseg", "train", f"hydra.run.dir={run_dir}", f"data.root={root}",
            f"data.demo={root}", f"data.num_workers={workers}", f"trainer.max_steps={steps}",
            "data.chips_per_epoch=256", "data.batch_size=8", "trainer.log_every=1", "trainer.progress=false",
            "trainer.diagnostics.train_max_chips=0", "trainer.device=cpu", *extra]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples, start = [], time.monotonic()
    while proc.poll() is None:
        kids = children(proc.pid)
        samples.append({
            "seconds": round(time.monotonic() - start, 2), "step": last_step(run_dir / "metrics.jsonl"),
            "main_rss_mib": round(rss_mib(proc.pid), 1), "workers": len(kids),
            "workers_rss_mib": round(sum(rss_mib(k) for k in kids), 1), "open_fds": open_fds(proc.pid),
        })  # fmt: skip
        time.sleep(interval)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"geoseg train failed ({proc.returncode}):\n{err}")
    return [s for s in samples if s["main_rss_mib"] > 0]


def verdict(samples: list[dict], steps: int) -> dict:
    """Lowest and highest value in the second and in the last quarter of the steps, and their growth.

    RSS rises and falls with each epoch's validation and checkpoint, so the quarters' troughs (the
    baseline) and peaks are compared; samples after the last step (end-of-run work) are left out.
    """
    out = {}
    for key in ("main_rss_mib", "workers_rss_mib", "open_fds"):
        early = [s[key] for s in samples if 0.25 * steps < s["step"] <= 0.5 * steps]
        late = [s[key] for s in samples if 0.75 * steps < s["step"] < steps]
        if not early or not late:
            raise SystemExit("too few samples: lower --interval or raise --steps")
        out[key] = {"second_quarter": [min(early), max(early)], "last_quarter": [min(late), max(late)],
                    "growth_min": round(min(late) - min(early), 1),
                    "growth_max": round(max(late) - max(early), 1)}  # fmt: skip
    return out


def curve_table(samples: list[dict], steps: int, points: int = 9) -> str:
    """A markdown table of the curve at about ``points`` evenly spaced steps."""
    rows = [
        "| step | seconds | main RSS MiB | workers | workers RSS MiB | open fds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for target in [round(steps * i / (points - 1)) for i in range(points)]:
        s = min((x for x in samples if x["step"] > 0), key=lambda x: (abs(x["step"] - target), x["seconds"]))
        rows.append(f"| {s['step']} | {s['seconds']:.0f} | {s['main_rss_mib']:.0f} | {s['workers']} | "
                    f"{s['workers_rss_mib']:.0f} | {s['open_fds']} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument("--root", type=Path, default=Path("data/demo"), help="demo scenes (generated if missing)")
    p.add_argument("--run-dir", type=Path, default=None, help="the run folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None, help="write the samples and the verdict here")
    p.add_argument("overrides", nargs="*", help="extra `geoseg train` overrides")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = a.run_dir or Path(tmp) / "run"
        samples = soak(a.root.resolve(), run_dir.resolve(), a.steps, a.workers, a.interval, a.overrides)
    result = {
        "steps": a.steps,
        "workers": a.workers,
        "verdict": verdict(samples, a.steps),
        "samples": samples,
    }
    print(f"{time.strftime('%Y-%m-%d')} | {os.cpu_count()} CPUs | `python scripts/bench_soak.py "
          f"--steps {a.steps} --workers {a.workers}`\n")  # fmt: skip
    print(curve_table(samples, a.steps))
    for key, v in result["verdict"].items():
        print(f"{key}: [min, max] {v['second_quarter']} in steps {a.steps // 4}-{a.steps // 2}, "
              f"{v['last_quarter']} in the last quarter: growth {v['growth_min']} (min), "
              f"{v['growth_max']} (max)")  # fmt: skip
    if a.json:
        from geoseg.io import atomic_write_text

        atomic_write_text(a.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
