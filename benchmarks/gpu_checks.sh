#!/bin/bash
# Every GPU check of BENCHMARKS.md (and a CIFAR-10 run like the README's), in one run
# of about 10 minutes on one H100, in priority order; each step gets what is left of
# the time budget and writes its log to $OUT (default ./gpu_out), with a summary.txt.
#
#   bash benchmarks/gpu_checks.sh [BUDGET_SECONDS] [CIFAR10_FOLDER_OR_TAR_GZ]
#
# Run it from the repository root on a machine with a GPU, after installing a CUDA
# build of jax and of torch, transformers, pillow, and this package (which brings
# keras); TensorFlow is not needed:
#
#   pip install "jax[cuda13]" torch transformers pillow && pip install -e .
#
# The CIFAR-10 step needs an ImageFolder (DIR/train/<class>/*.jpg) or a .tar.gz of
# one; without it the step is skipped.
set -u
budget=${1:-585}
cifar=${2:-}
out=${OUT:-gpu_out}
mkdir -p "$out"
start=$(date +%s)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

left() { echo $(( budget - ($(date +%s) - start) )); }
step() {  # step NAME MAX_SECONDS COMMAND...
    local name=$1 most=$2; shift 2
    local t; t=$(left); (( t > most )) && t=$most
    if (( t < 20 )); then echo "== $name: skipped, budget spent" | tee -a "$out/summary.txt"; return; fi
    echo "== $name (limit ${t}s): $*" | tee -a "$out/summary.txt"
    local s; s=$(date +%s)
    timeout "$t" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - s ))s" | tee -a "$out/summary.txt"
    grep -E '^\| |^config|RESULT|accuracy|linear probe|fine-tune|pre-training|total' \
        "$out/$name.log" | grep -v '^RESULT' | tee -a "$out/summary.txt"
    tail -n 3 "$out/$name.log" | sed 's/^/   /' | cut -c1-300
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    KERAS_BACKEND=jax python3 -c "import jax, torch, transformers, keras; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, 'transformers', transformers.__version__, 'keras', keras.__version__)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt" | grep -v Warning | head -4

if [[ "$cifar" == *.tar.gz ]]; then
    mkdir -p /tmp/cifar && tar xzf "$cifar" -C /tmp/cifar && cifar=/tmp/cifar
fi

bench="python3 benchmarks/train_step.py --config gpu --repeats 1"
# 1. ViT-B/16, batch 256, bf16: HF, keras_mae on JAX (attention padded for cuDNN flash
#    attention, the default there) and on PyTorch, side by side.
step vit_b16 150 $bench --impls hf jax torch --steps 8 --windows 3
# 2. CIFAR-10: pre-train, probe and fine-tune, pre-trained vs random init (JAX, bf16).
if [[ -n "$cifar" ]]; then
    step cifar10 300 env KERAS_BACKEND=jax python3 examples/pretrain_and_evaluate.py \
        --dataset "folder:$cifar" --preset mae_vit_tiny_patch4 --holdout-per-class 500 \
        --epochs 80 --max-minutes 1.9 --batch-size 512 --base-learning-rate 1e-3 \
        --warmup-epochs 5 --norm-pix-loss --precision mixed_bfloat16 \
        --probe-batch-size 1024 --probe-base-learning-rate 0.1 6.4 --probe-pooling cls mean \
        --finetune-epochs 4 --finetune-batch-size 512 --output-dir /tmp/cifar_out
    cp /tmp/cifar_out/results.json "$out/cifar10_results.json" 2>/dev/null
    cp /tmp/cifar_out/reconstructions.png "$out/cifar10_reconstructions.png" 2>/dev/null
else
    echo "== cifar10: skipped, no CIFAR-10 folder given (second argument)" | tee -a "$out/summary.txt"
fi
# 3. Host time and host waits of the torch step on the GPU (ViT-B depth, tiny widths):
#    whether the host keeps the GPU queued, next to HF.
step host_time 60 env KERAS_BACKEND=torch python3 benchmarks/host_time.py --rounds 4 --steps 20
grep -h '^{' "$out/host_time.log" | tail -n 1 | tee -a "$out/summary.txt"
# 4. JAX without the attention padding that enables cuDNN flash attention (the
#    library pads to 64 by default there): what the padding buys.
step vit_b16_nopad 60 $bench --impls jax --steps 8 --windows 3 --pad-attention none
# 5. Memory: ViT-L/16 at batch 128 and ViT-H/14 at batch 64 in bf16 (JAX); already
#    measured (BENCHMARKS.md), so only with MEMORY=1.
[[ ${MEMORY:-0} == 1 ]] || { echo "total $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"; exit 0; }
step vit_l16_b128 55 $bench --impls jax --steps 3 --windows 1 \
    --preset mae_vit_large_patch16 --batch-size 128
step vit_h14_b64 65 $bench --impls jax --steps 3 --windows 1 \
    --preset mae_vit_huge_patch14 --batch-size 64
echo "total $(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
