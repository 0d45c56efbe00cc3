"""A convolution's three passes in the training step, JAX against PyTorch (issue 10, item 3).

The training step runs each 3 x 3 convolution three times: forward, the input's gradient (dgrad)
and the kernel's gradient (wgrad). This times each pass alone, for the model's convolution shapes
at configs/sirst.py's width and the speed benchmark's batch (8 x 256 x 256 crops):

  256² x 16 -> 16   stage1 / upstage1 (12 of the step's convolutions)
  128² x 32 -> 32   stage2 / upstage2 (11)
   64² x 64 -> 64   the bottleneck (5)
  128² x 32 -> 64   up1's transposed conv as computed until 2026-11-27: a 3 x 3 conv to 4 x 16
                    phases (now a 2 x 2 one: models.TransposedConvUpsample)

JAX: lax.conv_general_dilated (NHWC x HWIO) and its jax.vjp, as the model's gradient runs it,
compiled twice: by plain jax.jit (XLA's CPU default: YNNPACK takes the convolutions it can) and by
the project's xla_options.jit (XLA's own convolutions); PyTorch: F.conv2d and
aten.convolution_backward (NCHW) with one output of the backward asked for. Each framework in its
own subprocess, pinned to the same cores, alternating for --rounds rounds; each figure the median
over rounds of a round's median of --calls calls (compilation and one warm-up call excluded).
Prints ms per pass and the JAX/PyTorch speed ratio (> 1: JAX faster) of each JAX form.

  python benchmarks/conv_grads.py [--rounds 3 --calls 5 --threads 2]
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(8, 256, 16, 16), (8, 128, 32, 32), (8, 64, 64, 64), (8, 128, 32, 64)]  # N, H=W, C, O
PASSES = ("forward", "dgrad", "wgrad")


def median_ms(fn, sync, calls: int) -> float:
  sync(fn())  # compile / warm up
  times = []
  for _ in range(calls):
    t = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def jax_passes(n, s, c, o, calls, jit):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.standard_normal((n, s, s, c), np.float32))
  w = jax.numpy.asarray(rng.standard_normal((3, 3, c, o), np.float32))
  dy = jax.numpy.asarray(rng.standard_normal((n, s, s, o), np.float32))

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  fwd = jit(conv)
  dgrad = jit(lambda w, dy: jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0])
  wgrad = jit(lambda x, dy: jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0])
  sync = jax.block_until_ready
  return {"forward": median_ms(lambda: fwd(x, w), sync, calls),
          "dgrad": median_ms(lambda: dgrad(w, dy), sync, calls),
          "wgrad": median_ms(lambda: wgrad(x, dy), sync, calls)}


def torch_passes(n, s, c, o, calls):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.set_flush_denormal(True)  # as benchmarks/speed.py
  g = torch.Generator().manual_seed(0)
  x = torch.randn(n, c, s, s, generator=g)
  w = torch.randn(o, c, 3, 3, generator=g)
  dy = torch.randn(n, o, s, s, generator=g)
  backward = torch.ops.aten.convolution_backward

  def grad(mask):
    with torch.no_grad():
      return backward(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

  with torch.no_grad():
    fwd = median_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1), lambda _: None, calls)
  return {"forward": fwd,
          "dgrad": median_ms(lambda: grad([True, False, False]), lambda _: None, calls),
          "wgrad": median_ms(lambda: grad([False, True, False]), lambda _: None, calls)}


def worker(framework: str, calls: int) -> None:
  """Prints RESULT {form: [{pass: ms} per shape]}."""
  if framework == "torch":
    forms = {"torch": torch_passes}
  else:
    import jax  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from eaau_jax import xla_options  # pylint: disable=g-import-not-at-top
    forms = {"jax_ynnpack": functools.partial(jax_passes, jit=jax.jit),
             "jax": functools.partial(jax_passes, jit=xla_options.jit)}
  result = {k: [run(*shape, calls) for shape in SHAPES] for k, run in forms.items()}
  print("RESULT " + json.dumps(result), flush=True)


def run_worker(framework: str, cpus: list, calls: int) -> dict:
  env = dict(os.environ, OMP_NUM_THREADS=str(len(cpus)), TF_CPP_MIN_LOG_LEVEL="2")
  cmd = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, os.path.abspath(__file__),
         "--worker", framework, "--calls", str(calls)]
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  if out.returncode or not lines:
    raise RuntimeError(f"{framework} worker failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def report(results: dict, cpus: list, rounds: int, calls: int) -> None:
  print(f"threads: {len(cpus)} for both (cores {cpus}); {rounds} alternating round(s), "
        f"median of {calls} calls each; ms per pass, float32")
  print("| convolution (N x H x W x C -> O, 3 x 3) | pass | JAX, YNNPACK ms | JAX, XLA's own "
        "(the project's) ms | PyTorch ms | JAX/PyTorch, YNNPACK | JAX/PyTorch, the project's |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for i, (n, s, c, o) in enumerate(SHAPES):
    for p in PASSES:
      y, j, t = (statistics.median(r[i][p] for r in results[k])
                 for k in ("jax_ynnpack", "jax", "torch"))
      print(f"| {n} x {s} x {s} x {c} -> {o} | {p} | {y:.1f} | {j:.1f} | {t:.1f} | {t / y:.2f} "
            f"| {t / j:.2f} |")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--calls", type=int, default=5)
  ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  ap.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.worker:
    return worker(args.worker, args.calls)
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]
  results = {"jax_ynnpack": [], "jax": [], "torch": []}
  for r in range(args.rounds):
    for framework in (("jax", "torch") if r % 2 == 0 else ("torch", "jax")):
      for form, per_shape in run_worker(framework, cpus, args.calls).items():
        results[form].append(per_shape)
      print(f"round {r + 1}/{args.rounds} {framework} done", file=sys.stderr, flush=True)
  report(results, cpus, args.rounds, args.calls)


if __name__ == "__main__":
  main()
