#!/usr/bin/env bash
# The device side: one `run` call on the GPU machine, from the repository root, with what
# prepare.sh made carried. Everything it measures goes to $OUT (what comes back).
#
#   bash benchmarks/gpu/run.sh SEED [reproduction flags...]
#
# 1. The paper reproduction's seed SEED (configs/sirst.py, SIRST idx_320, best val IoU under `acm`,
#    reported on test; ~6 min on an H200 with its evaluation): $OUT/reproduce.log, the seed's
#    reproduce.json and metrics.jsonl. Merge them into RESULTS.md by hand, naming the machine.
# 2. With .before carried: the train step at 480², the before tree against this one
#    (tree_speed.py, 3 rounds of 30 steps): $OUT/tree_speed.txt.
# Extra flags go to the reproduction (e.g. --config.num_epochs=2 for a dry run on a CPU).
set -uo pipefail
seed=${1:?usage: run.sh SEED [reproduction flags...]}
shift
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# The carried wheels (WHEELS= for a dry run in an environment that has them, e.g. PYTHON=.venv/bin/python).
WHEELS=${WHEELS-.whl}
if [ -n "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi -L 2>/dev/null; lscpu | grep -m1 'Model name'; nproc
  "$PY" -c "import sys, jax, flax; print(sys.version.split()[0], jax.__version__, flax.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

work=/tmp/sirst_reproduce
"$PY" -m eaau_jax.reproduce --config configs/sirst.py --only_seed "$seed" --workdir "$work" \
  --config.dataset.data_dir=.data "$@" > "$OUT/reproduce.log" 2>&1
echo "reproduction exit $?"
tail -n 5 "$OUT/reproduce.log"
cp "$work/seed_$seed/reproduce.json" "$OUT/" 2>/dev/null
cp "$work/seed_$seed/metrics.jsonl" "$OUT/" 2>/dev/null

if [ -d .before ]; then
  "$PY" benchmarks/tree_speed.py --config configs/sirst.py --trees .before . --task train \
    --crop 480 --steps 30 --rounds 3 > "$OUT/tree_speed.txt" 2>&1
  tail -n 8 "$OUT/tree_speed.txt"
fi
ls "$OUT"
