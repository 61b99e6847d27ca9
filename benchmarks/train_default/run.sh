#!/usr/bin/env bash
# Train the bundled default model for a time budget on this machine.
#
#   bash benchmarks/train_default/run.sh CONFIG MINUTES [RUN_DIR]
#
# 1. `mimi corpus corpus --hours $HOURS --eval-minutes 0` (seed 0: always the same corpus; an
#    existing corpus is kept and only extended);
# 2. `mimi train CONFIG` for MINUTES: a new run in RUN_DIR [runs/default-model], or
#    `--resume RUN_DIR` when it already holds one (stage 2, configs/default-model.toml, resumes
#    stage 1, configs/default-model-stage1.toml). With INIT=SRC set, a new run starts from those
#    weights (`--init`).
# The evaluation clips (corpus/eval/manifest.jsonl) come from `mimi corpus` on a machine with
# festival installed; see mimi/assets/MODEL_CARD.md for the exact sequence used.
set -euo pipefail
config=${1:?usage: run.sh CONFIG MINUTES [RUN_DIR]}
minutes=${2:?usage: run.sh CONFIG MINUTES [RUN_DIR]}
run=${3:-runs/default-model}
hours=${HOURS:-3}
mimi corpus corpus --hours "$hours" --eval-minutes 0 -q
if [ -d "$run/checkpoints" ]; then
    mimi train "$config" --resume "$run" --max-minutes "$minutes" -q
else
    mimi train "$config" --out "$run" --max-minutes "$minutes" -q ${INIT:+--init "$INIT"}
fi
tail -n 2 "$run/train.csv"
cat "$run/eval.csv" 2>/dev/null || true
