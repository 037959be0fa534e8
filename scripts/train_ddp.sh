#!/usr/bin/env bash
# Data-parallel training with torchrun: one process per GPU (or per CPU worker with trainer.device=cpu),
# every rank writing to one run folder.
#
#   scripts/train_ddp.sh 4 norm=syncbatchnorm data.batch_size=8            # 4 GPUs on this machine
#   RUN_DIR=runs/big NNODES=2 NODE_RANK=0 MASTER_ADDR=node1 scripts/train_ddp.sh 8 ...   # on node 1
#   RUN_DIR=runs/big NNODES=2 NODE_RANK=1 MASTER_ADDR=node1 scripts/train_ddp.sh 8 ...   # on node 2
#
# RUN_DIR (default outputs/train/<date>/<time>-ddp) is passed as hydra.run.dir, so the ranks do not each
# make their own time-stamped folder (Hydra issue #2070). Multi-node runs must set it, on a shared
# filesystem. Resume a run with the same RUN_DIR and trainer.resume=auto.
set -euo pipefail

nproc=${1:?usage: scripts/train_ddp.sh NPROC_PER_NODE [hydra overrides...]}
shift
nnodes=${NNODES:-1}
if [[ "$nnodes" -gt 1 && -z "${RUN_DIR:-}" ]]; then
    echo "train_ddp.sh: set RUN_DIR to one folder on a shared filesystem for a multi-node run" >&2
    exit 2
fi
run_dir=${RUN_DIR:-outputs/train/$(date +%Y-%m-%d/%H-%M-%S)-ddp}

if [[ "$nnodes" -eq 1 ]]; then
    rendezvous=(--standalone)
else
    rendezvous=(--nnodes "$nnodes" --node-rank "${NODE_RANK:?set NODE_RANK}" --rdzv-backend c10d
                --rdzv-endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-geoseg}")
fi
exec torchrun "${rendezvous[@]}" --nproc-per-node "$nproc" -m geoseg train "hydra.run.dir=$run_dir" "$@"
