"""Training-step throughput (tiles/s) and peak memory of geoseg models: arch × norm × precision × layout.

For every configuration in the matrix arch × norm × precision {fp32, bf16} × channels_last {off, on}
× compile {off, on} (``--compile off,on``; off by default) the script builds
``build_model(arch, encoder, bands, classes, norm)`` with smp's default decoder sizes and no
weights, then times full training steps on one fixed random batch:

    zero_grad → forward under ``torch.autocast(bf16)`` (bf16 rows only) → cross-entropy → backward → SGD step

- Input: raw ``torch.randn(batch, bands, size, size)`` (no band statistics, so the model's first
  layer is the identity); target: random int64 class indices; optimiser: ``SGD(lr=1e-3)``.
- ``--warmup`` steps are not timed, then ``--steps`` steps are timed with ``time.perf_counter()``
  (after ``torch.cuda.synchronize()`` on CUDA). tiles/s = batch · steps / seconds; ms/step is the
  mean time of one step over the timed steps.
- channels_last: the model and the input are both converted to ``torch.channels_last``.
- compile: ``torch.compile(model)`` (default mode); its compilation happens in the warm-up steps.
- TFLOP/s: the FLOPs of one eager step (convolutions and matmuls, forward + backward, counted once
  with ``torch.utils.flop_counter.FlopCounterMode``) × timed steps / seconds. Compare it with the
  device's dense bf16 peak for the achieved fraction.
- Every configuration runs in its own child process (this script with a hidden ``--one`` flag), so
  no state (allocator caches, autotuning, memory peaks) leaks between rows. Peak memory is
  - on CPU: the child's peak resident set size (``VmHWM`` on Linux), i.e. the *whole* process: Python,
    torch and the libraries included, not only the tensors of the step;
  - on CUDA: ``torch.cuda.max_memory_allocated()`` over the timed steps (tensors only, not the
    caching allocator's reserve nor the CUDA context).
- fp32 rows use torch's defaults for the backends (on CUDA, cuDNN convolutions may use TF32).
- A configuration that fails (an op without bf16 support, out of memory, ...) gets its error in its
  row instead of numbers; the others still run.
- ``syncbatchnorm`` is left out: it needs a process group, and on one process it is BatchNorm.

The first line printed is a header with the date, the machine, torch, the thread count and the
exact command; then the Markdown table, ready to paste into BENCHMARKS.md. A progress bar over the
configurations goes to stderr.

    python scripts/bench_model.py --archs unet --norms batchnorm,groupnorm --batch 2 --size 64 --steps 1
    python scripts/bench_model.py --threads 2 --output outputs/bench_model_cpu.md   # full matrix on CPU
    python scripts/bench_model.py --device cuda --batch 16 --size 256
    python scripts/bench_model.py --archs unet --encoder resnet34 --norms batchnorm,groupnorm \
        --size 512 --batch 2 --compile off,on        # the issue-7 matrix
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from geoseg.engine.log import peak_memory_mb
from geoseg.io import atomic_write_text

ARCHS = ("unet", "fpn", "deeplabv3plus", "unetplusplus")
NORMS = ("batchnorm", "groupnorm", "instancenorm", "layernorm", "frozenbatchnorm", "identity")
PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("off", "on")
COLUMNS = ("arch", "norm", "precision", "channels_last", "compile", "batch", "tiles/s", "ms/step", "TFLOP/s")


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: str, bf16: bool
) -> None:
    """One training step: zero_grad, forward (autocast to bf16 if asked), cross-entropy, backward, step."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()


def sync(device: str) -> None:
    """Wait for queued CUDA work, so the clock reads finished steps."""
    if device == "cuda":
        torch.cuda.synchronize()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configuration, run its warm-up and timed steps, return seconds and peak memory."""
    from geoseg.models.build import build_model
    from geoseg.models.norms import norm_preset

    device, bf16 = spec["device"], spec["precision"] == "bf16"
    torch.manual_seed(0)
    model = build_model(
        spec["arch"],
        spec["encoder"],
        spec["bands"],
        spec["classes"],
        norm_preset(spec["norm"]),
        decoder=None,
    ).to(device)
    model.train()
    x = torch.randn(spec["batch"], spec["bands"], spec["size"], spec["size"], device=device)
    y = torch.randint(0, spec["classes"], (spec["batch"], spec["size"], spec["size"]), device=device)
    if spec["channels_last"] == "on":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    flops = step_flops(model, opt, x, y, device, bf16)
    if spec.get("compile") == "on":
        model = torch.compile(model)
    for _ in range(spec["warmup"]):
        train_step(model, opt, x, y, device, bf16)
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        train_step(model, opt, x, y, device, bf16)
    sync(device)
    seconds = time.perf_counter() - start
    peak = peak_memory_mb(torch.device(device))
    return {"seconds": seconds, "peak_mib": peak, "flops": flops}


def step_flops(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: str, bf16: bool
) -> float:
    """FLOPs of one eager training step (forward + backward), counted by ``FlopCounterMode``.

    It counts matrix multiplies and convolutions (2 FLOPs per multiply-add), not elementwise ops or
    norms, which is the usual convention for "achieved TFLOP/s" against a card's tensor-core peak.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, opt, x, y, device, bf16)
    return float(counter.get_total_flops())


def run_one(spec_json: str) -> None:
    """Child-process entry: measure one configuration and print the result as one JSON line."""
    spec = json.loads(spec_json)
    warnings.simplefilter("ignore")
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    try:
        result = measure(spec)
    except Exception as err:  # recorded in the table row, not raised
        result = {"error": f"{type(err).__name__}: {err}"}
        if spec["device"] == "cpu":
            result["peak_mib"] = peak_memory_mb(torch.device("cpu"))
    print(json.dumps(result), flush=True)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and parse its JSON line (or its crash)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
    return {"error": f"child exited with {proc.returncode}: {tail[0]}"}


def cell_text(text: str, limit: int = 160) -> str:
    """An error message fit for one Markdown table cell: first line, pipes escaped, shortened."""
    first = text.strip().splitlines()[0] if text.strip() else text
    first = first if len(first) <= limit else first[: limit - 1] + "…"
    return first.replace("|", "\\|")


def table_row(spec: dict[str, Any], result: dict[str, Any]) -> str:
    """One Markdown table row for a configuration and its result."""
    head = [spec["arch"], spec["norm"], spec["precision"], spec["channels_last"], spec.get("compile", "off"),
            str(spec["batch"])]  # fmt: skip
    peak = f"{result['peak_mib']:.0f}" if "peak_mib" in result else "—"
    if "error" in result:
        return "| " + " | ".join([*head, f"error: {cell_text(result['error'])}", "—", "—", peak]) + " |"
    seconds = result["seconds"]
    rate, ms = spec["batch"] * spec["steps"] / seconds, 1000 * seconds / spec["steps"]
    tflops = result["flops"] * spec["steps"] / seconds / 1e12
    return "| " + " | ".join([*head, f"{rate:.1f}", f"{ms:.1f}", f"{tflops:.3g}", peak]) + " |"


def table_header(device: str) -> list[str]:
    """The table's header and alignment lines; the memory column says what it measures."""
    memory = "peak allocated MiB" if device == "cuda" else "peak RSS MiB (whole process)"
    return [
        "| " + " | ".join([*COLUMNS, memory]) + " |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]


def machine_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU model (``platform.processor()`` is often empty on Linux)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def preamble(args: argparse.Namespace) -> list[str]:
    """The header line (date, machine, torch, threads, command) and a line describing the setup."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = "python " + shlex.join(sys.argv)
    header = (
        f"{now} | {args.device}: {machine_name(args.device)} | torch {torch.__version__} | "
        f"{torch.get_num_threads()} CPU threads ({os.cpu_count()} CPUs) | `{command}`"
    )
    setup = (
        f"Setup: {args.encoder} encoder, smp default decoders, no weights; input {args.batch}×{args.bands}×"
        f"{args.size}×{args.size} randn, {args.classes} classes, cross-entropy, SGD lr 1e-3; "
        f"{args.warmup} warm-up + {args.steps} timed steps per row, each row in its own process."
    )
    return [header, "", setup, ""]


def split_choice(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated option value as a list, every item checked against ``allowed``."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{option}: {bad or value!r} not in {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (and the hidden ``--one`` of the child processes)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--norms", default=",".join(NORMS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--channels-last", default=",".join(LAYOUTS), help="off,on (either or both)")
    p.add_argument("--compile", default="off", help="torch.compile the model: off,on (either or both)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="tile side in px (a multiple of 32)")
    p.add_argument("--bands", type=int, default=6)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    p.add_argument("--output", type=Path, default=None, help="also write the header and table here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        return args
    try:
        args.archs = split_choice(args.archs, ARCHS, "--archs")
        args.norms = split_choice(args.norms, NORMS, "--norms")
        args.precisions = split_choice(args.precisions, PRECISIONS, "--precisions")
        args.channels_last = split_choice(args.channels_last, LAYOUTS, "--channels-last")
        args.compile = split_choice(args.compile, LAYOUTS, "--compile")
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    if min(args.batch, args.bands, args.classes, args.steps) < 1 or args.warmup < 0:
        p.error("--batch, --bands, --classes and --steps must be at least 1, --warmup at least 0")
    if args.size < 32 or args.size % 32:
        p.error(f"--size {args.size}: the encoders downsample by 32, so use a multiple of 32")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    return args


def specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One configuration dict per row of the matrix, with everything a child needs."""
    common = {
        "device": args.device, "batch": args.batch, "size": args.size, "bands": args.bands,
        "classes": args.classes, "encoder": args.encoder, "warmup": args.warmup, "steps": args.steps,
        "threads": args.threads,
    }  # fmt: skip
    matrix = itertools.product(args.archs, args.norms, args.precisions, args.channels_last, args.compile)
    return [
        {"arch": a, "norm": n, "precision": p, "channels_last": c, "compile": k, **common}
        for a, n, p, c, k in matrix
    ]


def main(argv: list[str] | None = None) -> None:
    """Run the matrix (one child per configuration) and print, and optionally write, the table."""
    args = parse_args(argv)
    if args.one is not None:
        run_one(args.one)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = preamble(args) + table_header(args.device)
    configs = specs(args)
    for spec in tqdm(configs, desc="configurations", unit="cfg", file=sys.stderr):
        lines.append(table_row(spec, run_child(spec)))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
