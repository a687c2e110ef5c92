#!/usr/bin/env bash
# Issue 17's GPU runs as a few full device commands (one GPU; each stage well inside a 10-minute call).
#
#   bash experiments/device.sh seed0        # dense start (seed 0); Base continued + VersatileFFN / 4-Loop with the
#                                           # dense-preserving start; step-0 gaps of the paper's start; 4x-steps rows
#   bash experiments/device.sh seed1        # the same dense-preserving rows for seed 1, then the difficulty experiment
#
# On a device machine whose copy of the tree has no current .git, pass the commit: VERSATILEFFN_COMMIT=<hash> bash ...
#
# Needs the prepared corpus (`versatileffn prepare-data ... --tokenizer olmo`, see results/README.md) in $DATA
# (default .device_data/corpus). Every record is mirrored as soon as it is written and the whole set re-packed into
# $OUT/records-<stage>.tgz after each step, so a call cut off at its time limit still returns what finished.
# A failed step does not stop the later ones (their records are independent).
set -uo pipefail
stage=${1:?usage: experiments/device.sh seed0|seed1}
OUT=${OUT:-/tmp/device-out}
DATA=${DATA:-.device_data/corpus}
work=${WORK:-/tmp/rp}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$work/mirror" "$work/logs"

pack() {  # atomic: a call killed mid-write keeps the previous archive
    tar -czf "$OUT/.records.tgz" -C "$work" mirror logs && mv "$OUT/.records.tgz" "$OUT/records-$stage.tgz"
}

reproduce() {  # seed, then reproduce.py arguments
    local seed=$1; shift
    python3 experiments/reproduce.py --seed "$seed" --eval-limit 0 --data "$DATA" --out "$work" \
        --mirror "$work/mirror/seed$seed" "$@" 2>&1 | tee -a "$work/logs/$stage.log"
    pack
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$work/logs/$stage.log"
case "$stage" in
    seed0)
        reproduce 0 --runs versatile-dp,loop4-dp,dp-base
        reproduce 0 --step0-only --runs versatile,loop4
        reproduce 0 --runs base-4x,versatile-4x,loop4-4x
        ;;
    seed1)
        reproduce 1 --runs versatile-dp,loop4-dp,dp-base
        reproduce 1 --step0-only --runs versatile,loop4
        python3 experiments/difficulty.py --out "$work/mirror/difficulty" 2>&1 | tee -a "$work/logs/$stage.log"
        pack
        ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
ls -R "$work/mirror" | tail -40
