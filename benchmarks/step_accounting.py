"""Where one CPU training step's time goes, JAX against the PyTorch twin, category by category
(issue 10, item 3).

speed.py says which framework's step is faster; this says where the difference lies. Each
framework runs configs/sirst.py's train step (batch 8, --crop² crops, the step speed.py times) in
its own subprocess pinned to the same cores, profiles --steps steps after two untimed ones, and
sorts its operation time into the categories below:

  JAX      the trace's operations on XLA's threads (benchmarks/profile_step.py), each an HLO
           instruction of the compiled step, sorted by its kind, its convolution window and the
           source path XLA keeps in its metadata (jax_category);
  PyTorch  torch.profiler's self CPU time of each aten operation (torch_category).

One thread by default: an operation's time is then the CPU time it takes, in both frameworks. With
more threads JAX's trace sums the operations' time on XLA's threads while PyTorch's profiler times
each operation on the thread that launched it, so the two columns would not measure the same
thing. The categories are those both frameworks' operations can be sorted into; XLA fuses a
block's BatchNorm normalisation, ReLU and residual addition into one operation, so they are one
category (PyTorch's residual additions, plain `aten::add`, fall into "the rest").

  python benchmarks/step_accounting.py [--crop 256 --steps 2 --threads 1]
"""

import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import speed  # pylint: disable=g-import-not-at-top
from benchmarks.harness import timed  # pylint: disable=g-import-not-at-top

CONV_FORWARD = "convolutions, forward"
CONV_BACKWARD = "convolutions, backward (input and kernel gradients)"
DGRAD = "  of which the input gradients"
WGRAD = "  of which the kernel gradients"
LAYOUT = "  of which XLA's layout copies for the kernel gradients"
NORM = "BatchNorm, ReLU and the residual blocks' additions"
REST = "the rest (attention, upsampling, loss, optimizer, copies)"
ROWS = (CONV_FORWARD, CONV_BACKWARD, DGRAD, WGRAD, LAYOUT, NORM, REST)
SUBROWS = {DGRAD: CONV_BACKWARD, WGRAD: CONV_BACKWARD, LAYOUT: CONV_BACKWARD}
NORM_PATH = re.compile(r"BatchNorm|_bn/|relu|ResidualBlock_\d+/(add|max|select_n)")


def jax_category(instruction: str, op_name: str, window: tuple) -> str:
  """The row of an HLO instruction of the train step: ``op_name`` is its metadata's source path
  (e.g. ``jit(train_step)/transpose(jvp(EAAUNet))/stage1/ResidualBlock_0/Conv_0/...``), ``window``
  its convolution window's size (empty for other instructions).

  On the CPU XLA computes a kernel gradient as a convolution whose window is the whole
  activation (and keeps no metadata for it), on operands it first transposes
  (``transpose_copy_fusion``: the layout copies); an input gradient as a convolution with the
  kernel's window inside the transposed (``transpose(jvp(...))``) part of the step.
  """
  kind = re.sub(r"\.\d+$", "", instruction)
  if kind.startswith("transpose_copy"):
    return LAYOUT
  if "convolution" in kind or kind.startswith("conv_general_dilated"):
    if window and min(window) > 5:  # no layer of these models has a kernel larger than 4 x 4
      return WGRAD
    return DGRAD if "transpose(" in op_name else CONV_FORWARD
  return NORM if NORM_PATH.search(op_name) else REST


def torch_category(op: str) -> str:
  """The row of a PyTorch (aten) operation; its backward's convolution is one operation for
  both gradients."""
  if "convolution_backward" in op:
    return CONV_BACKWARD
  if "convolution" in op or "conv2d" in op or "conv_transpose" in op:
    return CONV_FORWARD
  if any(k in op for k in ("batch_norm", "clamp_min", "relu", "threshold_backward")):
    return NORM
  return REST


def hlo_instructions(hlo_text: str) -> dict:
  """{name: (op_name, window)} for every instruction of the compiled module (names are unique in
  it; the trace's operations are the entry computation's and those of its conditionals' branches)."""
  found = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w\-.]+) = (.*)$", hlo_text, re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(2))
    size = re.search(r"window=\{size=([\dx]+)", m.group(2))
    found[m.group(1)] = (op.group(1) if op else "",
                         tuple(int(v) for v in size.group(1).split("x")) if size else ())
  return found


def add_totals(per_row: collections.Counter) -> dict:
  """Seconds per row with the backward's total the sum of its parts where they were measured."""
  out = dict(per_row)
  parts = [out[r] for r in SUBROWS if r in out]
  if parts:
    out[CONV_BACKWARD] = out.get(CONV_BACKWARD, 0.0) + sum(parts)
  return out


# ---------------------------------------------------------------- workers
def jax_worker(spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  p_train, state, batch = profile_step.compiled_step(spec["crop"])
  compiled = p_train.lower(state, batch).compile()  # run as compiled: its HLO is the one traced
  instructions = hlo_instructions(compiled.as_text())

  def run(state):
    state, metrics = compiled(state, batch, p_train.key)  # train.TrainStep: its key bound
    jax.block_until_ready((state, metrics))
    return state

  rows, unknown = collections.Counter(), 0.0
  with tempfile.TemporaryDirectory() as trace_dir:
    walls = profile_step.trace_calls(run, state, spec["steps"], trace_dir)
    for _, name, seconds in profile_step.op_events(trace_dir):
      if name not in instructions:  # not in the compiled module: counted, sorted as the rest
        unknown += seconds
      rows[jax_category(name, *instructions.get(name, ("", ())))] += seconds
  return {"rows": rows, "walls": walls, "unmatched_s": unknown}


def torch_worker(spec: dict) -> dict:
  from torch import profiler  # pylint: disable=g-import-not-at-top
  step = speed.torch_train_call(spec)
  timed(step, 2, 0)  # the untimed steps, outside the profile
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
    walls = timed(step, 0, spec["steps"])["times"]
  rows = collections.Counter()
  for ev in prof.key_averages():
    rows[torch_category(ev.key)] += ev.self_cpu_time_total / 1e6
  return {"rows": rows, "walls": walls}


def worker(framework: str, spec: dict) -> None:
  os.sched_setaffinity(0, spec["cpus"])
  result = (jax_worker if framework == "jax" else torch_worker)(spec)
  print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the driver
def table(results: dict, steps: int) -> list:
  """Markdown lines: seconds a step per row for each framework and JAX's over PyTorch's."""
  per = {f: add_totals(collections.Counter(r["rows"])) for f, r in results.items()}
  lines = ["| where the step's operation time goes | JAX s/step | PyTorch s/step | JAX/PyTorch |",
           "|---|---:|---:|---:|"]
  for row in ROWS:
    j, t = (per[f].get(row) for f in ("jax", "torch"))
    cells = [("-" if v is None else f"{v / steps:.3f}") for v in (j, t)]
    ratio = f"{j / t:.2f}" if j is not None and t else "-"
    lines.append(f"| {row.strip()} | {cells[0]} | {cells[1]} | {ratio} |")
  totals = {f: sum(v for k, v in per[f].items() if k not in SUBROWS) for f in per}
  walls = {f: statistics.median(r["walls"]) for f, r in results.items()}
  lines.append(f"| all operations | {totals['jax'] / steps:.3f} | {totals['torch'] / steps:.3f} | "
               f"{totals['jax'] / totals['torch']:.2f} |")
  lines.append(f"| wall time of a profiled step (median) | {walls['jax']:.3f} | "
               f"{walls['torch']:.3f} | {walls['jax'] / walls['torch']:.2f} |")
  return lines


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--crop", type=int, default=256)
  ap.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 untimed)")
  ap.add_argument("--threads", type=int, default=1)
  ap.add_argument("--timeout", type=float, default=1800, help="seconds per framework")
  ap.add_argument("--worker", choices=speed.FRAMEWORKS, help=argparse.SUPPRESS)
  ap.add_argument("--spec", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.worker:
    worker(args.worker, json.loads(args.spec))
    return
  if args.crop < 24:  # jax_category tells a kernel gradient by its window: the 1/4-scale activation
    sys.exit(f"--crop {args.crop}: at least 24, so that every activation is larger than a kernel")
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]
  spec = {"threads": len(cpus), "cpus": cpus, "crop": args.crop, "steps": args.steps,
          "malloc": "default", "device": "cpu", "dtype": "float32", "kind": "accounting"}
  results = {}
  for framework in speed.FRAMEWORKS:
    results[framework] = speed.run_one(framework, spec, args.timeout, script=__file__)
    if "failed" in results[framework]:
      sys.exit(f"the {framework} worker failed: {results[framework]['failed']}")
    if results[framework].get("unmatched_s"):
      print(f"{results[framework]['unmatched_s']:.3f} s of JAX's operations matched no "
            "instruction of the compiled step (sorted as the rest)")
  print(f"configs/sirst.py's train step, batch {speed.BATCH}, {args.crop} x {args.crop} crops, "
        f"{len(cpus)} thread(s) each (cores {cpus}); {args.steps} profiled steps after 2 untimed, "
        "seconds a step")
  print("\n".join(table(results, args.steps)))


if __name__ == "__main__":
  main()
