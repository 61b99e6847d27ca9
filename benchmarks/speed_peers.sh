#!/usr/bin/env bash
# Speed vs peers on CPU, fp32 and bf16, released architecture with random weights (speed does not
# depend on the weights), through `mimi bench speed` run inside the peers venv so that Kyutai's
# `moshi` and `transformers` are timed on the same weights, interleaved. Writes
# benchmarks/results/bench_speed_cpu_{fp32,bf16}/ (Markdown + JSON).
#
#   bash benchmarks/peers/setup.sh && bash benchmarks/speed_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv-peers/bin/python
WEIGHTS=${WEIGHTS:-/tmp/mimi-released-random.safetensors}
if [ ! -f "$WEIGHTS" ]; then
    "$PY" -c "import sys; sys.path.insert(0, '.'); import mimi; from tests.helpers import make_model; \
mimi.save(make_model(mimi.MimiConfig.released(), num_codebooks=8), '$WEIGHTS')"
fi
for dtype in float32 bfloat16; do
    tag=$([ "$dtype" = float32 ] && echo fp32 || echo bf16)
    "$PY" -m mimi_cli.main bench speed --model "$WEIGHTS" --device cpu --dtype "$dtype" \
        --batch-sizes 1,8 --seconds 10 --repeats 5 --out "benchmarks/results/bench_speed_cpu_$tag"
done
