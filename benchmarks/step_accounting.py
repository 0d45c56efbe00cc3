"""Where one CPU training step's (or inference's) time goes, JAX against the PyTorch twin, category
by category (issue 10, item 3).

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

--infer profiles batch-1 inference of one --crop² image instead (eval mode, the all-ones valid
mask as speed.py's infer_512) and adds a second table: the time of each part of the network (the
stem, each stage, each upsampling layer and fusion, the head), which both models name alike. JAX's
operations are sorted by the part their metadata's source path names; PyTorch's by the part whose
forward they ran in (a profiler range around each part, opened and closed by module hooks).

  python benchmarks/step_accounting.py [--crop 256 --steps 2 --threads 1]
  python benchmarks/step_accounting.py --infer --crop 512 --steps 10
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
# The network's parts, as both models name their top-level modules (stem_bn is the stem's, head_bn
# and head_out the head's); TOP: what runs outside them (padding, the valid masks, the crop).
PARTS = ("stem", "stage1", "stage2", "bottleneck", "up2", "fuse2", "upstage2", "up1", "fuse1",
         "upstage1", "head")
TOP = "outside the parts (padding, masks, crop)"
PART_PATH = re.compile(r"EAAUNet\)*/(" + "|".join(PARTS) + r")(?:_\w+)?(?:/|$)")
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


def network_part(path: str) -> str:
  """The part of the network a source path (``jit(f)/EAAUNet/stage1/ResidualBlock_0/...``, or
  ``EAAUNet/<module name>`` for the twin) lies in; TOP where it names none."""
  m = PART_PATH.search(path)
  return m.group(1) if m else TOP


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
  if spec.get("infer"):
    fun, state, batch = profile_step.compiled_inference(spec["crop"])
    compiled = fun.lower(state, batch).compile()  # run as compiled: its HLO is the one traced

    def run(state):
      jax.block_until_ready(compiled(state, batch))
      return state
  else:
    fun, state, batch = profile_step.compiled_step(spec["crop"])
    compiled = fun.lower(state, batch).compile()

    def run(state):
      state, metrics = compiled(state, batch, fun.key)  # train.TrainStep: its key bound
      jax.block_until_ready((state, metrics))
      return state

  instructions = hlo_instructions(compiled.as_text())
  rows, parts, unknown = collections.Counter(), collections.Counter(), 0.0
  with tempfile.TemporaryDirectory() as trace_dir:
    walls = profile_step.trace_calls(run, state, spec["steps"], trace_dir)
    for _, name, seconds in profile_step.op_events(trace_dir):
      if name not in instructions:  # not in the compiled module: counted, sorted as the rest
        unknown += seconds
      op_name, window = instructions.get(name, ("", ()))
      rows[jax_category(name, op_name, window)] += seconds
      parts[network_part(op_name)] += seconds
  return {"rows": rows, "parts": parts, "walls": walls, "unmatched_s": unknown}


PART_RANGE = "part:EAAUNet/"  # the profiler ranges torch_inference_call opens around each part


def torch_worker(spec: dict) -> dict:
  from torch import profiler  # pylint: disable=g-import-not-at-top
  call = torch_inference_call(spec) if spec.get("infer") else speed.torch_train_call(spec)
  timed(call, 2, 0)  # the untimed calls, outside the profile
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
    walls = timed(call, 0, spec["steps"])["times"]
  rows, parts = collections.Counter(), collections.Counter()
  for ev in prof.events():
    if ev.name.startswith(PART_RANGE):  # a part's range: its own time is Python's, no operation's
      continue
    rows[torch_category(ev.name)] += ev.self_cpu_time_total / 1e6
    parts[enclosing_part(ev)] += ev.self_cpu_time_total / 1e6
  return {"rows": rows, "parts": parts, "walls": walls}


def enclosing_part(ev) -> str:
  """The part of the network whose PART_RANGE a profiler event ran in; TOP outside every one."""
  parent = ev.cpu_parent
  while parent is not None and not parent.name.startswith(PART_RANGE):
    parent = parent.cpu_parent
  return TOP if parent is None else network_part(parent.name)


def torch_inference_call(spec: dict):
  """A no-argument function running the twin's batch-1 inference on one --crop² image, each of
  its top-level modules inside a profiler range named PART_RANGE + its name."""
  import torch  # pylint: disable=g-import-not-at-top
  _, net, device = speed.torch_net(spec)
  net.eval()
  x = speed.nchw(speed.batch_arrays(1, spec["crop"], spec["crop"])[0], device)
  open_ranges = []
  for name, module in net.named_children():
    module.register_forward_pre_hook(
        lambda m, a, name=name: open_ranges.append(
            torch.profiler.record_function(PART_RANGE + name).__enter__()))
    module.register_forward_hook(lambda m, a, o: open_ranges.pop().__exit__(None, None, None))

  def call():
    with torch.inference_mode():
      net(x)
    speed.torch_sync(device)

  return call


def worker(framework: str, spec: dict) -> None:
  os.sched_setaffinity(0, spec["cpus"])
  result = (jax_worker if framework == "jax" else torch_worker)(spec)
  print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the driver
def table(results: dict, steps: int, key: str = "rows", unit: str = "s/step") -> list:
  """Markdown lines: time a call per row of results[framework][key] for each framework (``unit``:
  s/step, or ms/call for inference) and JAX's over PyTorch's."""
  scale = 1e3 if unit.startswith("ms") else 1.0
  per = {f: add_totals(collections.Counter(r[key])) for f, r in results.items()}
  names = ROWS if key == "rows" else PARTS + (TOP,)
  title = "where the step's operation time goes" if key == "rows" else "part of the network"
  lines = [f"| {title} | JAX {unit} | PyTorch {unit} | JAX/PyTorch |", "|---|---:|---:|---:|"]

  def line(label, j, t):
    cells = [("-" if v is None else f"{scale * v / steps:.3f}") for v in (j, t)]
    ratio = f"{j / t:.2f}" if j is not None and t else "-"
    return f"| {label} | {cells[0]} | {cells[1]} | {ratio} |"

  for row in names:
    lines.append(line(row.strip(), *(per[f].get(row) for f in ("jax", "torch"))))
  totals = {f: sum(v for k, v in per[f].items() if k not in SUBROWS) for f in per}
  lines.append(line("all operations", totals["jax"], totals["torch"]))
  walls = {f: steps * statistics.median(r["walls"]) for f, r in results.items()}
  lines.append(line("wall time of a profiled call (median)", walls["jax"], walls["torch"]))
  return lines


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--crop", type=int, default=256)
  ap.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 untimed)")
  ap.add_argument("--threads", type=int, default=1)
  ap.add_argument("--infer", action="store_true",
                  help="profile batch-1 inference of one --crop² image instead of a train step")
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
          "malloc": "default", "device": "cpu", "dtype": "float32", "kind": "accounting",
          "infer": args.infer}
  results = {}
  for framework in speed.FRAMEWORKS:
    results[framework] = speed.run_one(framework, spec, args.timeout, script=__file__)
    if "failed" in results[framework]:
      sys.exit(f"the {framework} worker failed: {results[framework]['failed']}")
    if results[framework].get("unmatched_s"):
      print(f"{results[framework]['unmatched_s']:.3f} s of JAX's operations matched no "
            "instruction of the compiled step (sorted as the rest)")
  what = (f"batch-1 inference of one {args.crop} x {args.crop} image" if args.infer else
          f"train step, batch {speed.BATCH}, {args.crop} x {args.crop} crops")
  unit = "ms/call" if args.infer else "s/step"
  print(f"configs/sirst.py's {what}, {len(cpus)} thread(s) each (cores {cpus}); {args.steps} "
        f"profiled calls after 2 untimed, {unit}")
  print("\n".join(table(results, args.steps, unit=unit)))
  if args.infer:
    print()
    print("\n".join(table(results, args.steps, key="parts", unit=unit)))


if __name__ == "__main__":
  main()
