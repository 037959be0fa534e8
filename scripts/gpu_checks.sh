#!/usr/bin/env bash
# The checks that need a GPU, in priority order, each under its own time limit so that a short lease
# still brings back the first ones. Usage: bash scripts/gpu_checks.sh OUT_DIR
#   1. the CUDA tests (cuDNN BatchNorm train/eval, channels_last, bf16 and fp16 in the real loop, the
#      fp16 GradScaler overflow skip, CUDA RNG state in checkpoints);
#   2. fp16 training on the demo data stopped by SIGTERM mid-epoch, then resumed (GradScaler state);
#   3. the GPU benchmark rows of BENCHMARKS.md (the loader's share of a 512-px step, scene inference,
#      model matrix at batch 8 and 32, compile).
set -uo pipefail
OUT=${1:-outputs/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step GPU
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, rasterio, segmentation_models_pytorch as smp; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'rasterio', rasterio.__version__, \
'smp', smp.__version__)"

step CUDA tests
timeout 150 python -m pytest -q -p no:cacheprovider tests/unit/test_cuda_paths.py \
    tests/reliability/test_nonfinite.py tests/unit/test_engine_units.py -k "cuda or scaler or rng"

step fp16 training stopped by SIGTERM, then resumed
RUN="$OUT/fp16_run"
ARGS=(hydra.run.dir="$RUN" trainer.device=cuda trainer.amp=fp16 trainer.max_epochs=3 trainer.log_every=1
      trainer.progress=false data.root="$OUT/demo" data.demo="$OUT/demo")
setsid python -m geoseg train "${ARGS[@]}" >"$OUT/fp16_first.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do  # until 80 steps are logged (epoch 2 of 3, batch 8 x 64 steps per epoch)
    n=$(grep -c '"kind": "train"' "$RUN/metrics.jsonl" 2>/dev/null)
    [ "${n:-0}" -ge 80 ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
kill -TERM -- -"$PID" 2>/dev/null
wait "$PID"; echo "first run exit status: $? (0 = clean stop)"
grep -E "stopped by|Traceback|error" "$OUT/fp16_first.log" | head -5
timeout 180 python -m geoseg train "${ARGS[@]}" trainer.resume=auto >"$OUT/fp16_resume.log" 2>&1
echo "resumed run exit status: $?"
grep -E "resumed from|non-finite|best val" "$OUT/fp16_resume.log" | head -5
python - "$RUN" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [r for r in rows if r["kind"] == "train"]
summary = json.load(open(f"{sys.argv[1]}/summary.json"))
print("steps logged", [r["step"] for r in train] == list(range(1, len(train) + 1)), len(train),
      "| loss scale first/last", train[0].get("loss_scale"), train[-1].get("loss_scale"),
      "| nonfinite", summary["nonfinite_steps"], "| val mIoU", round(summary["val"]["miou"], 4),
      "| tiles/s", round(summary["tiles_per_s"], 1))
EOF

step "the loader's share of a U-Net/ResNet-34 512-px bf16 step at default workers, 4096^2 deflate COG"
timeout 300 python scripts/bench_train_input.py --cog 4096 --workers auto --steps 30 -- data.chip_size=512 \
    data.batch_size=32 encoder=resnet34 trainer.amp=bf16 trainer.device=cuda | tee "$OUT/train_input_share.md"

step inference on a 10240 x 10240 scene: U-Net/ResNet-18 bf16 and the trivial model, overlap 0 and 64
timeout 240 python scripts/bench_infer.py --sizes 10240 --device cuda --amp bf16 --batch 16 \
    --model unet trivial --modes naive streaming | tee "$OUT/infer.md"

step model matrix, U-Net/ResNet-34, 512 px, batch 8
timeout 150 python scripts/bench_model.py --device cuda --archs unet --encoder resnet34 \
    --norms batchnorm,groupnorm --size 512 --batch 8 --steps 10 --output "$OUT/model_b8.md"
step model matrix, batch 32
timeout 150 python scripts/bench_model.py --device cuda --archs unet --encoder resnet34 \
    --norms batchnorm,groupnorm --size 512 --batch 32 --steps 10 --output "$OUT/model_b32.md"

step torch.compile, bf16 channels_last, batch 32
timeout 150 python scripts/bench_model.py --device cuda --archs unet --encoder resnet34 \
    --norms batchnorm,groupnorm --size 512 --batch 32 --precisions bf16 --channels-last on,off \
    --compile off,on --steps 10 --output "$OUT/model_compile.md"
step done
