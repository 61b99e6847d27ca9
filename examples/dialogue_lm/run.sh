#!/usr/bin/env bash
# The dialogue-LM demonstration, end to end on CPU (see README.md):
#   synthetic two-speaker dialogues -> Mimi tokens -> aligned text -> tiny LM -> loss plot
#   -> greedy and sampled continuations decoded with Mimi, with their text streams.
#
# Usage (from the repository root):
#   examples/dialogue_lm/run.sh                      # bundled Mimi (mimi/assets/mimi-default.safetensors)
#   MIMI_MODEL=path/to/mimi.safetensors examples/dialogue_lm/run.sh
#   MIMI_MODEL=tiny COUNT=6 STEPS=40 examples/dialogue_lm/run.sh   # pipeline check with a random tiny Mimi
#
# Settings (environment): WORK (intermediate files, default /tmp/dialogue_lm), OUT (artifacts,
# default examples/dialogue_lm/results), COUNT dialogues (96), STEPS (300), MAX_MINUTES (8),
# BATCH (8), WINDOW frames (64), PRESET (tiny), VOCAB (1000), FRAMES generated (75), SEED (0),
# THREADS (1: torch threads; more only on an idle machine).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${WORK:-/tmp/dialogue_lm}"
OUT="${OUT:-$HERE/results}"
COUNT="${COUNT:-96}"
STEPS="${STEPS:-300}"
MAX_MINUTES="${MAX_MINUTES:-8}"
BATCH="${BATCH:-8}"
WINDOW="${WINDOW:-64}"
PRESET="${PRESET:-tiny}"
VOCAB="${VOCAB:-1000}"
FRAMES="${FRAMES:-75}"
SEED="${SEED:-0}"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS"
PIPE="python $HERE/pipeline.py"
mkdir -p "$WORK" "$OUT"

echo "== 1. dialogues ($COUNT, seed $SEED) -> $WORK/dialogues"
$PIPE dialogues "$WORK/dialogues" --count "$COUNT" --seed "$SEED"

MODEL_ARGS=()
if [[ "${MIMI_MODEL:-}" == "tiny" ]]; then
  echo "== (check only) a random tiny Mimi with k-means codebooks -> $WORK/tiny-mimi.safetensors"
  $PIPE tiny-mimi "$WORK/dialogues" "$WORK/tiny-mimi.safetensors" --seed "$SEED"
  MODEL_ARGS=(--model "$WORK/tiny-mimi.safetensors")
elif [[ -n "${MIMI_MODEL:-}" ]]; then
  MODEL_ARGS=(--model "$MIMI_MODEL")
fi

echo "== 2. Mimi tokens of both channels -> $WORK/tokens"
mimi tokens "$WORK/dialogues/audio" "$WORK/tokens" "${MODEL_ARGS[@]}" --batch-size 8 --quiet

echo "== 3. text tokenizer (SentencePiece, $VOCAB pieces) and the aligned text streams"
$PIPE tokenizer "$WORK/dialogues" "$WORK/tokenizer.model" --vocab-size "$VOCAB" --seed "$SEED"
$PIPE align "$WORK/dialogues" "$WORK/tokenizer.model" "$OUT/aligned_text.txt"

echo "== 4. train the $PRESET LM ($STEPS steps or $MAX_MINUTES min) -> $WORK/run"
rm -rf "$WORK/run"
moshi-lm train --dialogues "$WORK/dialogues" --tokens "$WORK/tokens" --tokenizer "$WORK/tokenizer.model" \
  --out "$WORK/run" --preset "$PRESET" --steps "$STEPS" --batch-size "$BATCH" --window "$WINDOW" \
  --seed "$SEED" --eval-every 25 --checkpoint-every 100 --max-minutes "$MAX_MINUTES" --threads "$THREADS" --quiet
cp "$WORK/run/train.csv" "$WORK/run/eval.csv" "$OUT/"

echo "== 5. loss vs the unigram baseline -> $OUT/loss.png"
$PIPE plot "$WORK/run" "$OUT/loss.png" | tee "$OUT/summary.txt"

echo "== 6. greedy and sampled continuations, decoded with Mimi -> $OUT/samples"
$PIPE generate "$WORK/run" "$WORK/dialogues" "$WORK/tokens" "$OUT/samples" "${MODEL_ARGS[@]}" \
  --frames "$FRAMES" --seed "$SEED"
cat "$OUT/samples/text_streams.txt"
