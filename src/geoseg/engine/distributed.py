"""Process-group set-up from torchrun or SLURM variables, the device per rank, and small collectives.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Under
``srun`` (one task per GPU) SLURM sets ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NTASKS``; the
master address then defaults to the node that launched the step and the port to one derived from
the job id, so every task agrees without a launcher script.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta

import torch
import torch.distributed as dist

from geoseg.device import pick_device
from geoseg.engine.state import DistInfo
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


def env_ranks(env: Mapping[str, str]) -> tuple[int, int, int, str]:
    """(rank, local_rank, world_size, source) from torchrun's variables, else SLURM's, else one process."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]), "torchrun"
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]), "slurm"
    return 0, 0, 1, "single"


def slurm_rendezvous(env: Mapping[str, str]) -> dict[str, str]:
    """MASTER_ADDR/MASTER_PORT for an ``srun`` step that did not set them."""
    addr = env.get("MASTER_ADDR") or env.get("SLURM_LAUNCH_NODE_IPADDR")
    if not addr:
        raise GeosegError("SLURM run without MASTER_ADDR: export MASTER_ADDR=<first node> in the job script")
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000)
    return {"MASTER_ADDR": addr, "MASTER_PORT": port}


def init_distributed(
    device: str = "auto", timeout_min: float = 30.0, option: str = "trainer.device"
) -> DistInfo:
    """Join the process group when launched by torchrun or srun (nccl on GPU, gloo on CPU)."""
    rank, local_rank, world_size, source = env_ranks(os.environ)
    dev = pick_device(device, local_rank, option)
    if world_size == 1 or (dist.is_available() and dist.is_initialized()):
        return DistInfo(rank, local_rank, world_size, dev)
    if source == "slurm":
        os.environ.update(slurm_rendezvous(os.environ))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=timeout_min),
        device_id=dev if dev.type == "cuda" else None,
    )
    log.info("rank %d/%d (%s, %s backend) on %s", rank, world_size, source, backend, dev)
    return DistInfo(rank, local_rank, world_size, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writing demo data or stats.json), then the others."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op on one process) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (e.g. BatchNorm running statistics) on every rank.

    DDP copies buffers from rank 0 at the start of each forward, so after the last training step the
    ranks differ by one update. Evaluation and checkpoints call this first, so every rank evaluates
    exactly the model rank 0 saves.
    """
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
