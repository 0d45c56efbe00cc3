"""Several train steps per jitted call (``lax.scan``) against one per call, on the CPU (issue 10).

Why one might: on the CPU what XLA's runtime allocates for a call (the step's temporaries, 2.0 GB
at 256², batch 8, and Eigen's im2col buffers) is mapped afresh through glibc and faulted in again
every call (the page faults of BENCHMARKS.md). K steps in one call might fault some of it in once
per K steps, as TPU codebases' "steps per loop" amortise dispatch. This measures whether that
pays: configs/sirst.py's train step (train.train_step under xla_options.jit, as
train.compile_steps builds it, state donated), on the same random batch each step, for each form
  1          one step per call (the project's loop);
  K          K steps per call by lax.scan (a while loop in the compiled program);
  K/unroll   the same scan unrolled (straight-line code: K copies of the step).
Each form runs in a fresh subprocess (speed.run_one: a worker's failure or --timeout is reported,
not fatal), forms alternating round by round; printed: the median
images/s over --rounds (each round: --calls timed calls after 2 untimed ones), minor page faults
per step, and the warm-up seconds (compilation and the 2 calls). Threads: XLA's by the process's
CPU affinity.

--conv: why the rolled scan is slow. One 3 x 3 convolution's gradients (8 x 64² x 16 -> 16), 4
times in straight-line code against 4 iterations of a scan: the median ms of 5 calls each, and the
dimension labels of every convolution XLA compiled (in straight-line code all three are in the
canonical b01f_01io->b01f, the kernel gradient a convolution of transposed copies; in a while body
both gradients keep non-canonical forms, which XLA's CPU convolution computes far more slowly).

  python benchmarks/steps_per_call.py --crop 256 --forms 1,2/unroll,4/unroll --rounds 2
  python benchmarks/steps_per_call.py --conv
"""

import argparse
import functools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 8


def parse_form(form: str) -> tuple[int, bool]:
  k, _, unroll = form.partition("/")
  if not k.isdigit() or int(k) < 1 or unroll not in ("", "unroll"):
    raise SystemExit(f"--forms: {form!r}; expected K or K/unroll with K >= 1")
  return int(k), unroll == "unroll"


def worker(form: str, spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import harness, speed  # pylint: disable=g-import-not-at-top
  from eaau_jax import train, xla_options  # pylint: disable=g-import-not-at-top
  k, unroll = parse_form(form)
  config, mesh, state = speed.jax_state("float32")
  step = functools.partial(train.train_step, loss_cfg=config.loss)
  x, t = speed.batch_arrays(BATCH, spec["crop"], spec["crop"])
  if k == 1:
    fn, batch = step, {"image": x, "mask": t}
  else:
    def fn(state, batches, key):
      return jax.lax.scan(lambda s, b: step(s, b, key), state, batches, unroll=k if unroll else 1)
    batch = {"image": np.stack([x] * k), "mask": np.stack([t] * k)}
  jitted = xla_options.jit(fn, platform=jax.default_backend(), donate_argnums=0)
  key, batch, holder = train.seed_key(config.seed, mesh), jax.device_put(batch), [state]

  def call():
    holder[0], metrics = jitted(holder[0], batch, key)
    jax.block_until_ready((holder[0], metrics))

  t = harness.timed(call, 2, spec["calls"])
  return {"images_s": BATCH * k / statistics.median(t["times"]), "faults": t["faults"] / k,
          "warmup_s": t["warmup_s"]}


def conv_in_scan() -> None:
  import re  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  from eaau_jax import xla_options  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  xs, w = rng.normal(size=(4, 8, 64, 64, 16)), rng.normal(size=(3, 3, 16, 16)) * 0.1
  xs, w = jax.device_put((xs.astype(np.float32), w.astype(np.float32)))
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  grads = jax.grad(lambda w, x: jax.numpy.sum(conv(x, w) ** 2), argnums=(0, 1))
  forms = {"straight-line": lambda w, xs: [grads(w, x) for x in xs],
           "scan": lambda w, xs: jax.lax.scan(lambda c, x: (c, grads(w, x)), 0, xs)[1]}
  for name, f in forms.items():
    compiled = xla_options.jit(f, platform=jax.default_backend()).lower(w, xs).compile()
    labels = sorted(set(re.findall(r"dim_labels=(\S+?),", compiled.as_text())))

    def run(compiled=compiled):
      jax.block_until_ready(compiled(w, xs))

    t = harness.timed(run, 1, 5)  # one untimed call, then 5 timed
    print(f"{name}: {1e3 * statistics.median(t['times']):.1f} ms; convolutions {labels}",
          flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--crop", type=int, default=256)
  p.add_argument("--forms", default="1,2/unroll,4/unroll", help="comma-separated K or K/unroll")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--calls", type=int, default=3, help="timed calls per round")
  p.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
  p.add_argument("--conv", action="store_true", help="one convolution's gradients in a scan")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--spec", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.conv:
    conv_in_scan()
    return
  if a.worker:
    print("RESULT " + json.dumps(worker(a.worker, json.loads(a.spec))), flush=True)
    return
  forms = a.forms.split(",")
  for f in forms:
    parse_form(f)
  from benchmarks import speed  # pylint: disable=g-import-not-at-top
  # speed.worker_env's keys: this process's cores and environment (GLIBC_TUNABLES included).
  spec = {"kind": "train", "crop": a.crop, "calls": a.calls, "malloc": "default",
          "device": "auto", "threads": len(os.sched_getaffinity(0))}
  got = {f: [] for f in forms}
  for r in range(a.rounds):
    for f in forms[r % len(forms):] + forms[:r % len(forms)]:  # order rotated each round
      res = speed.run_one(f, spec, a.timeout, script=__file__)
      print(f"round {r + 1} form {f}: {res}", flush=True)
      if "failed" not in res:
        got[f].append(res)
  print(f"\nconfigs/sirst.py train step, batch {BATCH}, {a.crop} x {a.crop}, {a.rounds} round(s) "
        f"of {a.calls} timed calls\n\n| steps per call | images/s | rounds | page faults per step "
        "| warm-up s |\n|---|---:|---|---:|---:|")
  for f in forms:
    if not got[f]:  # every round failed: printed above
      continue
    med = {key: statistics.median(m[key] for m in got[f]) for key in got[f][0]}
    rounds = ", ".join(f"{m['images_s']:.3g}" for m in got[f])
    print(f"| {f} | {med['images_s']:.3g} | {rounds} | {med['faults']:.0f} | "
          f"{med['warmup_s']:.1f} |")


if __name__ == "__main__":
  main()
