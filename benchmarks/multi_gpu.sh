#!/usr/bin/env bash
# The multi-GPU comparison of issue 9 on one node with 2 GPUs: 1 GPU vs 2 GPUs (DDP, FSDP2), dense vs
# VersatileFFN at the paper-354m shape, a stress run with degenerate routing on one rank, and an FSDP2 resume.
#   bash benchmarks/multi_gpu.sh DATA_DIR OUT_DIR [STEPS]
# Several nodes: the same benchmarks/multi_gpu.py (or `versatileffn train`) under
#   torchrun --nnodes=N --nproc_per_node=G --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 ...
set -u
DATA=$1; OUT=$2; STEPS=${3:-10}
# NVLink multicast stays off (shared machines; see the device notes)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:-$PWD}
ONE="python3 benchmarks/multi_gpu.py --data $DATA --steps $STEPS"
TWO="torchrun --standalone --nproc_per_node=2 benchmarks/multi_gpu.py --data $DATA --steps $STEPS"
mkdir -p "$OUT"
run() {  # name, command...: a hung run is killed after 240 s and recorded as such
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout 240 "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" > "$OUT/$name.rc.json"
    tail -n 2 "$OUT/$name.log"
}
for ffn in dense versatile; do
    run "1gpu-$ffn" env CUDA_VISIBLE_DEVICES=0 $ONE --ffn $ffn --out "$OUT/1gpu-$ffn"
    run "2gpu-ddp-$ffn" $TWO --ffn $ffn --parallel ddp --out "$OUT/2gpu-ddp-$ffn"
    run "2gpu-fsdp-$ffn" $TWO --ffn $ffn --parallel fsdp --out "$OUT/2gpu-fsdp-$ffn"
done
run "2gpu-ddp-stress" $TWO --ffn versatile --parallel ddp --stress --out "$OUT/2gpu-ddp-stress"
run "2gpu-fsdp-stress" $TWO --ffn versatile --parallel fsdp --stress --out "$OUT/2gpu-fsdp-stress"
run "2gpu-fsdp-resume" $TWO --ffn versatile --parallel fsdp --resume-at $((STEPS / 2)) --out "$OUT/2gpu-fsdp-resume"
