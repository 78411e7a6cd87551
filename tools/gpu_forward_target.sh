#!/usr/bin/env bash
# The forward-target run (tools/gpu_forward_target.py: compile, canary, interleaved timing of attnlib's
# Hopper forward candidates against SDPA-cuDNN with and without requires_grad, and SDPA-flash) in one
# device call of about 5 minutes. Needs torch and triton installed; attnlib comes from this checkout.
# Writes $OUT/forward-target.json and $OUT/forward-target.log. DRY_RUN=1: the plan only (any machine).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/attnlib-triton-cache}"  # compile step fills it, timing reads it
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
unset TRITON_INTERPRET
PY="${PYTHON:-python3}"
args=(--out "$OUT/forward-target.json" --budget "${BUDGET:-270}" --rounds "${ROUNDS:-5}")
[ "${DRY_RUN:-0}" = "1" ] && args+=(--dry-run)
timeout "${DEADLINE:-300}" "$PY" tools/gpu_forward_target.py "${args[@]}" 2>&1 | tee "$OUT/forward-target.log"
exit "${PIPESTATUS[0]}"
