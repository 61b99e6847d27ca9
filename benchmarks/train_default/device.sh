#!/usr/bin/env bash
# Train the bundled default model on a lent GPU machine across several calls of at most
# 10 minutes each, without moving checkpoints between machines.
#
#   device.sh start SECONDS   set up, build the corpus, measure the step time, launch the run
#                             (a detached process) so that it ends after about SECONDS
#   device.sh snapshot UNTIL  wait until UNTIL seconds after $CALL_START (epoch seconds; the
#                             call's start), then copy the latest EMA weights (float16) and the
#                             logs to $OUT
#   device.sh finish UNTIL    wait for the run to end, warm the discriminator up against the
#                             final generator for $DISC_SECONDS (75), copy everything to $OUT
#
# Run from the repository root. Needs what benchmarks/train_default/README.md lists under
# "On the lent GPU machine" (.whl/, .carry/synth.tar.xz, .carry/eval/). Work happens in
# /tmp/w; the run is /tmp/w/runs/stage1. Files back are at most 16 MB each: the float16
# weights (21 MB) come back in two parts (`cat ema.part* > ema.safetensors`).
set -euo pipefail
repo=$(pwd)
work=/tmp/w
run=$work/runs/stage1
config=${CONFIG:-configs/medium-stage1.toml}
export PYTHONUNBUFFERED=1

environment() {
    if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site; fi
    export PATH=/tmp/synth/bin:$PATH LD_LIBRARY_PATH=/tmp/synth/lib ESPEAK_DATA_PATH=/tmp/synth
}

setup() {
    if [ -n "${SKIP_SETUP:-}" ]; then cd $work; return; fi  # a machine already set up (or a local dry run)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    python3 -m pip install -q --no-deps --no-build-isolation -e .
    mkdir -p /tmp/synth && tar -C /tmp/synth -xJf .carry/synth.tar.xz
    environment
    mkdir -p $work/corpus && cp -r configs $work/ && rm -rf $work/corpus/eval && cp -r .carry/eval $work/corpus/eval
    cd $work
    local t0=$SECONDS
    export PYTHONPATH=/tmp/site
    mimi corpus corpus --hours "${HOURS:-3}" --eval-minutes 0 -q
    echo "corpus: $((SECONDS - t0)) s"
}

# Median seconds per step of a short run of the stage-1 config (log every 10 steps).
probe() {
    sed -e 's/^log_every = .*/log_every = 10/' -e 's/^eval_every = .*/eval_every = 100000/' \
        -e 's/^checkpoint_every = .*/checkpoint_every = 100000/' $config > configs/probe.toml
    rm -rf runs/probe
    mimi train configs/probe.toml --out runs/probe --max-minutes "${PROBE_MINUTES:-0.75}" -q > /dev/null
    python3 - runs/probe/train.csv <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(statistics.median(float(r["seconds"]) for r in (rows[2:] or rows)))
EOF
}

start() {
    local seconds=${1:?seconds}
    setup
    local per_step
    per_step=$(probe)
    local steps
    steps=$(python3 -c "print(int(($seconds - 40) / $per_step))")
    echo "probe: $per_step s/step -> steps = $steps for $seconds s"
    sed -e "s/^steps = .*/steps = $steps/" $config > configs/stage1-run.toml
    rm -rf $run
    setsid nohup mimi train configs/stage1-run.toml --out $run --max-minutes "$(python3 -c "print(($seconds + 60) / 60)")" \
        -q > $work/stage1.log 2>&1 < /dev/null &
    echo "launched (pid $!)"
}

wait_until() {
    local until=${1:?until}
    local now
    while now=$(date +%s); [ $((now - CALL_START)) -lt "$until" ]; do
        if [ -n "${2:-}" ] && [ -f $run/final/model.safetensors ] && ! pgrep -f "stage1-run.toml" > /dev/null; then
            return 0
        fi
        sleep 5
    done
}

send_weights() {  # $1: a Kyutai-layout file; float16, split in parts of 16 MB
    mimi convert "$1" $work/ema16.safetensors --layout kyutai --dtype float16 > /dev/null
    split -b 16000000 -d $work/ema16.safetensors "$OUT/ema.part"
}

snapshot() {
    wait_until "${1:?until}"
    cd $work
    tail -n 3 $run/train.csv; cat $run/eval.csv 2>/dev/null || true; tail -n 5 $work/stage1.log
    cp $run/train.csv $run/eval.csv "$OUT/" 2>/dev/null || true
    local latest
    latest=$(ls -d $run/checkpoints/step_* 2>/dev/null | sort | tail -n 1 || true)
    if [ -n "$latest" ]; then
        echo "snapshot: $latest"
        send_weights "$latest/ema.safetensors"
    fi
}

finish() {
    wait_until "${1:?until}" done
    cd $work
    environment
    tail -n 3 $run/train.csv; cat $run/eval.csv; tail -n 5 $work/stage1.log
    cp $run/train.csv $run/eval.csv $run/config.resolved.json "$OUT/"
    sed -e 's/^batch_size = .*/batch_size = 64/' -e 's/^num_workers = .*/num_workers = 12/' \
        -e 's/^checkpoint_every = .*/checkpoint_every = 100000/' \
        configs/default-model-disc.toml > configs/disc-run.toml
    rm -rf runs/disc
    mimi train configs/disc-run.toml --out runs/disc --init $run/final/model.safetensors \
        --max-minutes "$(python3 -c "print(${DISC_SECONDS:-75} / 60)")" -q
    tail -n 2 runs/disc/train.csv
    cp runs/disc/train.csv "$OUT/disc_train.csv"
    cp runs/disc/final/discriminator.safetensors "$OUT/"
    send_weights $run/final/model.safetensors
}

command=${1:?usage: device.sh start SECONDS | snapshot UNTIL | finish UNTIL}
shift
case $command in
    start) start "$@" ;;
    snapshot) environment; snapshot "$@" ;;
    finish) finish "$@" ;;
    *) echo "unknown command $command" >&2; exit 2 ;;
esac
