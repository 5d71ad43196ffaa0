#!/usr/bin/env bash
# `make demo`: the seed's save -> restore -> continue workflow in NumPy and PyTorch, then a look at the files.
set -euo pipefail
PY=${1:-python3}
BIN=$(dirname "$PY")
OUT=demo-output
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

for fw in numpy torch; do
  step "[$fw] Train the seed's regression (y = 0.1x + 0.3) for 25 steps and save"
  "$PY" examples/regression.py train --framework "$fw" --dir "$OUT/$fw" --steps 25

  step "[$fw] A new process restores the latest checkpoint and trains 51 more steps"
  "$PY" examples/regression.py resume --framework "$fw" --dir "$OUT/$fw" --steps 51

  step "[$fw] Exact resume: compare with an uninterrupted 76-step run"
  "$PY" examples/regression.py check --framework "$fw" --dir "$OUT/$fw"
done

step "The files: TensorFlow's checkpoint layout, written without TensorFlow"
ls -l "$OUT/torch"
cat "$OUT/torch/checkpoint"

step "What is inside (ckpt inspect picks the newest and lists the others)"
"$BIN/ckpt" inspect "$OUT/torch" --all
