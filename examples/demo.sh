#!/usr/bin/env bash
# `make demo`: train a PyTorch model, kill it mid-run, resume bit for bit, inspect, convert to safetensors, and show
# the TensorFlow side of the files. Needs only ckpt's core and torch (make demo installs just those).
set -euo pipefail
PY=${1:-python3}
BIN=$(dirname "$PY")
OUT=demo-output
RUN=$OUT/run
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Train an MLP (Adam, dropout, shuffled batches) for 60 steps, saving every 10; the process kills itself at 37"
set +e
"$PY" examples/demo.py train --dir "$RUN" --steps 60 --kill-at 37
rc=$?
set -e
if [ "$rc" -ne 137 ]; then echo "expected the training process to die of SIGKILL (exit 137), got $rc"; exit 1; fi
echo "  exit status $rc: killed by SIGKILL after the step-30 checkpoint"

step "The files: TensorFlow's checkpoint layout, written without TensorFlow"
ls "$RUN"
cat "$RUN/checkpoint"

step "A new process restores the newest checkpoint and trains on to step 60"
"$PY" examples/demo.py resume --dir "$RUN" --steps 60

step "Exact resume: every tensor equals an uninterrupted 60-step run"
"$PY" examples/demo.py check --dir "$RUN" --steps 60

step "ckpt inspect $RUN (the newest checkpoint; --all lists the others too)"
"$BIN/ckpt" inspect "$RUN"

step "Convert the model weights to safetensors, and read them back with safetensors' own reader"
"$BIN/ckpt" convert "$RUN/ckpt-60" "$OUT/model.safetensors" --include 'model/*'
"$PY" examples/demo.py safetensors "$RUN/ckpt-60" "$OUT/model.safetensors"

step "TensorFlow reads these files as its own"
TF_CMD="import tensorflow as tf; r = tf.train.load_checkpoint('$RUN'); print(r.get_tensor('model/3/bias'))"
echo "ckpt's value of model/3/bias:"
"$PY" -c "import ckpt; print(ckpt.Reader('$RUN')['model/3/bias'])"
echo "A TensorFlow user gets the same with:"
echo "  python -c \"$TF_CMD\""
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is None)" 2>/dev/null; then
  echo "TensorFlow is installed here (make test installs it), so here is its answer:"
  TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c "$TF_CMD" 2>"$OUT/tensorflow.log" || { cat "$OUT/tensorflow.log"; exit 1; }
else
  echo "(make demo does not install TensorFlow; make test does, and proves this for every dtype and layout.)"
fi
printf '\nDone. The files are in %s/.\n' "$OUT"
