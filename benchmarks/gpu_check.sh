#!/usr/bin/env bash
# Issue 25's accelerator check, one script (benchmarks/README.md, "GPU check"): the loop
# benchmark at batch 256 and 4096 (MNIST paper model, PyTorch on the same device), the shapes
# default's loop against its step, and the quickstart and the MNIST default end to end with
# wall-clock times. Writes JSON and logs under $OUT (else ./gpu_results). No network: it
# installs only the wheels carried in .whl/ (into /tmp/site) and reads MNIST's IDX files
# from .mnist/ (or $MNIST_DIR). --quick: a small version of every part (checks the script).
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
RESULTS="${OUT:-$PWD/gpu_results}"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
PY="${PYTHON:-python3}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import grain, tensorflow_datasets, ml_collections, tensorboardX" 2> /dev/null \
    && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

MNIST="${MNIST_DIR:-$PWD/.mnist}"
if ! compgen -G "$MNIST/train-images*" > /dev/null; then
  echo "no MNIST IDX files in $MNIST: copy /work/shared/data/mnist/* there (or set MNIST_DIR)"
  exit 1
fi

if (( QUICK )); then
  LOOP_ARGS=(--batch_sizes=256 --step_steps=10 --loop_steps=64 --repeats=1)
  SHAPES_ARGS=(--batch_sizes=32 --step_steps=5 --loop_steps=32 --repeats=1)
  QUICKSTART=(--config=experiments/digits.py:smoke)
  MNIST_RUN=(--config=experiments/mnist.py --config.train.num_steps=64
             --config.train.log_every=32 --config.train.checkpoint_every=64)
else
  LOOP_ARGS=(--batch_sizes=256,4096 --steps_per_call=32 --repeats=1)
  SHAPES_ARGS=(--steps_per_call=32 --loop_steps=640 --repeats=1)
  QUICKSTART=(--config=experiments/digits.py)
  MNIST_RUN=(--config=experiments/mnist.py)
fi

SUMMARY="$RESULTS/gpu_check.json"
echo "{" > "$SUMMARY"
# part NAME SECONDS_LIMIT COMMAND...: runs it with its log under $RESULTS, records its time
# (--quick on a CPU is slower than the full check on a GPU: its limits are 4x)
part() {
  local name="$1" limit=$(( $2 * (1 + 3 * QUICK) ))
  shift 2
  echo "== $name: $*"
  local start rc ms
  start=$(date +%s%N)
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  tail -n 25 "$RESULTS/$name.log"
  printf '  "%s": {"seconds": %d.%03d, "rc": %d},\n' "$name" $((ms / 1000)) $((ms % 1000)) "$rc" \
      >> "$SUMMARY"
  echo "   $name: rc=$rc, $((ms / 1000)).$((ms % 1000 / 100)) s"
}

{ command -v nvidia-smi > /dev/null && nvidia-smi -L; } > "$RESULTS/machine.txt" 2>&1
"$PY" -c "import jax; print(jax.__version__, jax.devices())" >> "$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"

part quickstart 80 "$PY" launch.py "${QUICKSTART[@]}" --workdir="$WORK/digits" \
    --config.data.data_dir="$WORK/tfds"
part mnist_default 100 "$PY" launch.py "${MNIST_RUN[@]}" --workdir="$WORK/mnist" \
    --config.data.manual_dir="$MNIST" --config.data.data_dir="$WORK/tfds"
part loop_mnist 170 "$PY" benchmarks/bench_train_loop.py "${LOOP_ARGS[@]}" \
    --manual_dir="$MNIST" --data_dir="$WORK/tfds" --out="$RESULTS/bench_train_loop_mnist.json"
part loop_shapes 90 "$PY" benchmarks/bench_train_loop.py --config=experiments/shapes.py \
    "${SHAPES_ARGS[@]}" --loops=defaults --data_dir="$WORK/tfds" \
    --out="$RESULTS/bench_train_loop_shapes.json"
for run in digits mnist; do  # the runs' own records: final metrics and logged step times
  for file in final_metrics.json metrics.jsonl; do
    [[ -f "$WORK/$run/$file" ]] && cp "$WORK/$run/$file" "$RESULTS/${run}_$file"
  done
done
echo "  \"quick\": $QUICK" >> "$SUMMARY"
echo "}" >> "$SUMMARY"
cat "$SUMMARY"
rm -rf "$WORK"
