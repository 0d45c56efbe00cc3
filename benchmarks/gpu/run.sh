#!/usr/bin/env bash
# The device side: one `run` call on the GPU machine, from the repository root, with what
# prepare.sh made carried. Everything it measures goes to $OUT (what comes back).
#
#   bash benchmarks/gpu/run.sh SEED [reproduction flags...]      (SEED -: no reproduction)
#
# 1. The paper reproduction's seed SEED (configs/sirst.py, SIRST idx_320, best val IoU under `acm`,
#    reported on test; ~6 min on an H200 with its evaluation): $OUT/reproduce.log, the seed's
#    reproduce.json and metrics.jsonl. Merge them into RESULTS.md by hand, naming the machine.
# 2. The upsampling layers' forward+backward at 480², batch 8 (benchmarks/upsampling.py: the
#    paper's transposed conv in its 2x2 and 3x3 phase forms, through XLA's ConvTranspose, and
#    sub-pixel): $OUT/upsampling.txt.
# 3. With .before carried: the train step at 480², that tree against .after (if carried) or this
#    one (tree_speed.py, ROUNDS rounds (2) of 30 steps): $OUT/tree_speed.txt.
# 4. Start-up: seconds to build the initial train state in a fresh process, its compilation and the
#    device's first use included (tree_speed.py --task init, 2 rounds): $OUT/init.txt. Seeds 4-6
#    spent 10.5-19.9 s from the start to the model's log line (BENCHMARKS.md, 2026-11-28). And
#    the same on the CPU backend (JAX_PLATFORMS=cpu): $OUT/init_cpu.txt.
# Extra flags go to the reproduction (e.g. --config.num_epochs=2 for a dry run on a CPU). All of it
# takes ~9-10 min on an H200: give the call timeout_s=600 (what is in $OUT when it stops comes
# back), and run the rest with SEED - if it stops in the speed parts.
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
# Each part's end, seconds since the start, also in $OUT/machine.txt: what a session can budget.
part() { echo "$1 done at ${SECONDS} s" | tee -a "$OUT/machine.txt"; }
part setup

if [ "$seed" != - ]; then
  work=/tmp/sirst_reproduce
  "$PY" -m eaau_jax.reproduce --config configs/sirst.py --only_seed "$seed" --workdir "$work" \
    --config.dataset.data_dir=.data "$@" > "$OUT/reproduce.log" 2>&1
  echo "reproduction exit $?"
  tail -n 5 "$OUT/reproduce.log"
  cp "$work/seed_$seed/reproduce.json" "$work/seed_$seed/metrics.jsonl" "$OUT/" 2>/dev/null
  part reproduction
fi

# What the step's upsampling costs on this device (`transpose` is the 3x3 form off the CPU:
# the 2x2 one trained 0.91x as fast on an H200, BENCHMARKS.md 2026-11-28).
"$PY" benchmarks/upsampling.py --size 480 --batch 8 --repeats 7 > "$OUT/upsampling.txt" 2>&1
tail -n 6 "$OUT/upsampling.txt"
part upsampling

if [ -d .before ]; then
  after=.; [ -d .after ] && after=.after
  "$PY" benchmarks/tree_speed.py --config configs/sirst.py --trees .before "$after" --task train \
    --crop 480 --steps 30 --rounds "${ROUNDS:-2}" > "$OUT/tree_speed.txt" 2>&1
  tail -n 8 "$OUT/tree_speed.txt"
  part tree_speed
fi
"$PY" benchmarks/tree_speed.py --config configs/sirst.py --trees . --task init --rounds 2 \
  > "$OUT/init.txt" 2>&1
tail -n 3 "$OUT/init.txt"
# The same on this machine's CPU backend: were the initial state built there (compiled at level 2)
# and put on the GPU, would the start be shorter? (Not bit-equal to the GPU's values, necessarily:
# the random bits are, their conversion to floats may round differently.)
JAX_PLATFORMS=cpu "$PY" benchmarks/tree_speed.py --config configs/sirst.py --trees . --task init \
  --rounds 2 > "$OUT/init_cpu.txt" 2>&1
tail -n 3 "$OUT/init_cpu.txt"
part init
ls "$OUT"
