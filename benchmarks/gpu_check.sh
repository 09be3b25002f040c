#!/usr/bin/env bash
# The CUDA paths in one run, for any session lent a GPU: `bash benchmarks/gpu_check.sh`.
# Sized to finish in under 8 minutes on one GPU; each step has its own time limit, and a
# failed step is recorded in the table rather than stopping the rest. Logs and the table go
# to $OUT (default benchmarks/results/gpu-check/); record the table in docs/benchmarks.md.
#
#   DEVICE=cpu bash benchmarks/gpu_check.sh   # the same steps on the CPU (tiny models only):
#                                             # checks the script itself
#
# Steps: the CUDA tests (float32 equals the CPU, bf16/fp16 compute, stores written on the
# GPU); featurize against a plain forward+backward (float32 and bfloat16 compute); stores
# computed in float32, float16 and bfloat16 (float16 on disk), half against float32; the scoring GEMM rate against a bare GEMM; a recorded run and magic
# on it; a FAISS index build and search; with 2 or more GPUs, featurize launched on every GPU
# through accelerate, its store compared with one process's, and `featurize --fsdp`,
# `evaluate retrain --fsdp`, `perturb --fsdp` and `magic --fsdp` sharded over every GPU
# against one unsharded process (on the CPU: over 2 gloo processes).
set -uo pipefail
cd "$(dirname "$0")/.."
. .ci/env
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cuda ]; then SIZES="${SIZES:-tiny,small}" N=20000; else SIZES="${SIZES:-tiny}" N=2000; fi
OUT="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TABLE="$OUT/table.md"
printf '| step | result | seconds |\n|---|---|---|\n' > "$TABLE"
if [ "$DEVICE" = cuda ]; then
    GPUS="$(python -c 'import torch; print(torch.cuda.device_count())')"
    if [ "$GPUS" -lt 1 ]; then echo "no CUDA GPU here; DEVICE=cpu checks the script" >&2; exit 2; fi
    python -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)' > "$OUT/device.txt"
else
    GPUS=0
fi

step() {  # step NAME LIMIT_SECONDS COMMAND...: run it, log it, add a row to the table
    local name="$1" limit="$2"; shift 2
    local start end status
    start="$(date +%s.%N)"
    if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then status="ok"; else status="exit $?"; fi
    end="$(date +%s.%N)"
    printf '| %s | %s | %.1f |\n' "$name" "$status" "$(echo "$end - $start" | bc)" >> "$TABLE"
    echo "$name: $status" >&2
}

# Tiny checkpoints and data, built from configs (nothing is downloaded).
python - "$WORK" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
import builders

root = Path(sys.argv[1])
builders.save_tiny_resnet(root / "resnet", num_labels=10)
builders.save_image_data(root / "images.parquet", 512, num_labels=10, size=32)
EOF

step cuda-tests 240 python -m pytest -q tests/test_cuda.py
step featurize-float32 150 python benchmarks/featurize_speed.py --device "$DEVICE" \
    --sizes "$SIZES" --batches 5
step featurize-bfloat16 150 python benchmarks/featurize_speed.py --device "$DEVICE" \
    --sizes "$SIZES" --batches 5 --dtype bfloat16
for dtype in float32 float16 bfloat16; do  # compute dtypes; the stores hold float16
    step "store-$dtype-compute" 90 attrib featurize --model "$WORK/resnet" \
        --data "$WORK/images.parquet" --out "$WORK/store-$dtype" --dtype "$dtype" \
        --device "$DEVICE" -q
done
step "half-vs-float32" 30 python benchmarks/same_store.py "$WORK/store-float32" \
    "$WORK/store-bfloat16" --tolerance 0.1
step score-gemm 240 python benchmarks/score_speed.py --device "$DEVICE" --n "$N" --scales 1,10 \
    --repeats 2 --methods shampoo,trak-block --store-dtypes int8,float16
step train 90 attrib train --model "$WORK/resnet" --data "$WORK/images.parquet" \
    --out "$WORK/run" --epochs 1 --batch-size 64 --lr 1e-4 --device "$DEVICE" -q
step run-store 90 attrib featurize --model "$WORK/run/model" --data "$WORK/images.parquet" \
    --out "$WORK/run-queries" --max-examples 16 --device "$DEVICE" -q
step magic 150 attrib magic --run "$WORK/run" --queries "$WORK/run-queries" --top 3 \
    --out "$WORK/magic.npy" --device "$DEVICE" -q
step index 120 sh -c "attrib index build '$WORK/store-float32' --method trak-block -q && \
    attrib score --train '$WORK/store-float32' --queries '$WORK/store-float32' \
    --method trak-block --index ivf --top 5 --device '$DEVICE' -q > '$WORK/index.jsonl'"
if [ "$GPUS" -ge 2 ]; then
    step multi-gpu 150 sh -c "accelerate launch --num_processes $GPUS \$(which attrib) featurize \
        --model '$WORK/resnet' --data '$WORK/images.parquet' --out '$WORK/store-multi' \
        --store-dtype float16 --device cuda -q && python benchmarks/same_store.py \
        '$WORK/store-float32' '$WORK/store-multi'"
else
    printf '| multi-gpu | skipped: %s GPU | - |\n' "$GPUS" >> "$TABLE"
fi
# FSDP: the model sharded over the processes (NCCL over 2+ GPUs; gloo over 2 CPU processes),
# its store against the unsharded one (float32 on disk: they must be equal).
if [ "$GPUS" -ge 2 ] || [ "$DEVICE" = cpu ]; then
    NPROC=$([ "$GPUS" -ge 2 ] && echo "$GPUS" || echo 2)
    step fsdp 150 sh -c "attrib featurize --model '$WORK/resnet' --data '$WORK/images.parquet' \
        --out '$WORK/store-unsharded' --store-dtype float32 --device '$DEVICE' -q && \
        torchrun --nproc-per-node $NPROC --no-python -- attrib featurize --model '$WORK/resnet' \
        --data '$WORK/images.parquet' --out '$WORK/store-fsdp' --store-dtype float32 --fsdp \
        --device '$DEVICE' -q && python benchmarks/same_store.py '$WORK/store-unsharded' \
        '$WORK/store-fsdp' --tolerance 1e-6"
    # Ground truth with each retrained model sharded, against one unsharded process.
    step retrain-fsdp 150 sh -c "attrib featurize --model '$WORK/resnet' \
        --data '$WORK/images.parquet' --out '$WORK/queries' --max-examples 8 \
        --device '$DEVICE' -q && attrib evaluate retrain --train '$WORK/store-unsharded' \
        --queries '$WORK/queries' --subsets 2 --epochs 1 --out '$WORK/gt-one.npz' \
        --device '$DEVICE' -q && torchrun --nproc-per-node $NPROC --no-python -- attrib \
        evaluate retrain --train '$WORK/store-unsharded' --queries '$WORK/queries' --subsets 2 \
        --epochs 1 --out '$WORK/gt-fsdp.npz' --fsdp --device '$DEVICE' -q && \
        python benchmarks/same_truth.py '$WORK/gt-one.npz' '$WORK/gt-fsdp.npz' --tolerance 1e-5"
    # Daunce's perturbed copies, each sharded, against one unsharded process's.
    step perturb-fsdp 150 sh -c "attrib perturb --train '$WORK/store-unsharded' \
        --out '$WORK/copies-one' --copies 2 --batch-size 16 --device '$DEVICE' -q && \
        torchrun --nproc-per-node $NPROC --no-python -- attrib perturb \
        --train '$WORK/store-unsharded' --out '$WORK/copies-fsdp' --copies 2 --batch-size 16 \
        --fsdp --device '$DEVICE' -q && python benchmarks/same_store.py \
        '$WORK/copies-one/train' '$WORK/copies-fsdp/train' --tolerance 1e-5"
    # Magic with the run's weights, state and adjoints sharded, against one unsharded process
    # on one thread as each launched one (on 2 threads the CPU run's scores differ by 2e-2 of
    # the largest from one thread's, sharded or not: the replay's convolutions round
    # otherwise).
    step magic-fsdp 150 sh -c "OMP_NUM_THREADS=1 attrib magic --run '$WORK/run' \
        --queries '$WORK/run-queries' --top 3 --out '$WORK/magic-one.npy' \
        --cache '$WORK/magic-one-cache' --device '$DEVICE' -q && \
        torchrun --nproc-per-node $NPROC --no-python -- attrib magic \
        --run '$WORK/run' --queries '$WORK/run-queries' --top 3 --out '$WORK/magic-fsdp.npy' \
        --cache '$WORK/magic-fsdp-cache' --fsdp --device '$DEVICE' -q && python \
        benchmarks/same_truth.py '$WORK/magic-one.npy' '$WORK/magic-fsdp.npy' --tolerance 1e-4"
else
    printf '| fsdp | skipped: %s GPU | - |\n' "$GPUS" >> "$TABLE"
    printf '| retrain-fsdp | skipped: %s GPU | - |\n' "$GPUS" >> "$TABLE"
    printf '| perturb-fsdp | skipped: %s GPU | - |\n' "$GPUS" >> "$TABLE"
    printf '| magic-fsdp | skipped: %s GPU | - |\n' "$GPUS" >> "$TABLE"
fi
cat "$TABLE"
