#!/usr/bin/env bash
# Issue 9's GPU check, prepared to run in one call on a device machine:
#   1. the test suite on CuPy (light hypothesis profile, per-test timeout);
#   2. sine and ptb for 10 steps on NumPy and on CuPy: the losses must match (rtol 1e-4);
#   3. the benchmarks on CuPy against PyTorch CUDA.
# Everything is tee'd under $OUT. PTB must sit in ./device_data/ptb (an ignored folder).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TINYGRAD_RNN_DATA="$PWD/device_data"
step() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
  || python3 -m pip install -q --no-deps -e . >> "$OUT/install.log" 2>&1

step "1. test suite on cupy"
TINYGRAD_RNN_BACKEND=cupy HYPOTHESIS_PROFILE=gpu timeout "${TEST_TIMEOUT:-200}" \
  python3 -m pytest -q -p no:cacheprovider --timeout 60 -m "not slow" \
  --ignore=tests/test_docs.py --ignore=tests/test_distributed.py \
  > "$OUT/pytest-cupy.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/steps.log"
tail -3 "$OUT/pytest-cupy.log" | tee -a "$OUT/steps.log"

step "2. first 10 losses, numpy vs cupy"
runs=$(mktemp -d)  # fresh folders: a rerun must not compare the last run's losses
for recipe in sine ptb; do
  for b in numpy cupy; do
    timeout 120 tinygrad-rnn --backend "$b" train "$recipe" --max-steps 10 --quiet \
      --out "$runs/check-$recipe-$b" > "$OUT/train-$recipe-$b.log" 2>&1
    echo "train $recipe $b exit $?" | tee -a "$OUT/steps.log"
  done
done
python3 benchmarks/compare_losses.py "$runs/check-sine-numpy" "$runs/check-sine-cupy" \
  "$runs/check-ptb-numpy" "$runs/check-ptb-cupy" 2>&1 | tee "$OUT/losses.txt"

step "3. benchmarks on cupy vs torch cuda"
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/run.py --backend cupy \
  --cases "${BENCH_CASES:-lm-large,lm-small,sine,seq2seq}" --repeats "${BENCH_REPEATS:-3}" \
  > "$OUT/bench-cupy.log" 2>&1
echo "bench exit $?" | tee -a "$OUT/steps.log"
step "done"
