"""Where the time of one JAX training step (or inference) goes on this CPU (issue 10, item 3).

Compiles the project's train step (train.compile_steps) for configs/sirst.py's model, batch 8
(with --infer: train.predict_logits under xla_options.jit on one --crop x --crop image, as
evaluation runs it), prints XLA's cost analysis (FLOPs, bytes) and the compiled HLO's instruction
counts, then traces --steps steps with jax.profiler and prints each class of XLA operation (the
fusion or op name without its number: ynn_fusion = YNNPACK reductions and dots; convolution = XLA's
own; transpose_copy_fusion = layout copies; ...) with its share of the operation time summed over
XLA's threads. Shares are meaningful on a busy machine too; seconds are not. XLA flags: set
XLA_FLAGS.

  python benchmarks/profile_step.py [--crop 256 --steps 2 --dtype float32 --hlo step.hlo.txt]
  python benchmarks/profile_step.py --infer --crop 512 --steps 10

On a GPU the same command reads the kernels on the device's streams (XLA's fusions by kind,
cuDNN's convolutions by pass); the total is then the GPU's busy time, which the traced steps'
wall time exceeds by the gaps between kernels. --xplane keeps the trace for a closer look.
"""

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from benchmarks.speed import batch_arrays, jax_state  # pylint: disable=g-import-not-at-top
from eaau_jax import input_pipeline, train, xla_options  # pylint: disable=g-import-not-at-top


def compiled_step(crop: int, dtype: str = "float32"):
  """(step, state, batch): a function of (state, batch) -> (state, outputs), as the train step."""
  config, mesh, state = jax_state(dtype)
  x, t = batch_arrays(8, crop, crop)
  batch = input_pipeline.to_global(mesh, {"image": x, "mask": t})
  p_train, _ = train.compile_steps(config, mesh)
  return p_train, state, batch


def compiled_inference(crop: int, dtype: str = "float32"):
  """(predict, state, batch) for batch-1 inference, all pixels valid: predict(state, batch) ->
  logits (the state is not returned: it is unchanged)."""
  _, _, state = jax_state(dtype)
  x, _ = batch_arrays(1, crop, crop)
  batch = (x, jax.numpy.ones_like(x))
  predict = xla_options.jit(lambda s, b: train.predict_logits(s, *b))
  return predict, state, batch


def print_cost(p_train, state, batch, hlo_path=None):
  compiled = p_train.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  print(f"XLA cost analysis: {cost.get('flops', 0) / 1e9:.1f} GFLOP, "
        f"{cost.get('bytes accessed', 0) / 1e9:.1f} GB accessed per step")
  hlo = compiled.as_text()
  entry = hlo[hlo.index("\nENTRY"):]
  names = re.findall(r"^\s*(?:ROOT )?%([\w\-]+?)(?:\.\d+)? = ", entry, re.M)
  print("top-level HLO instructions:", dict(collections.Counter(names).most_common(12)))
  if hlo_path:
    with open(hlo_path, "w") as f:
      f.write(hlo)


def gpu_kernel_class(name: str) -> str:
  """A GPU kernel's class: cuDNN's convolution kernels by pass (their names carry fprop / dgrad /
  wgrad), cuDNN's tensor conversions, XLA's fusions by kind (its kernels are named after them)."""
  for key, label in (("convertTensor", "cudnn convertTensor"), ("wgrad", "conv wgrad (weights)"),
                     ("dgrad", "conv dgrad (inputs)"), ("fprop", "conv fprop"),
                     ("convolve", "conv fprop"), ("Memset", "memset"), ("memcpy", "memcpy")):
    if key in name:
      return label
  return re.sub(r"_\d+$", "", re.sub(r"\.\d+", "", name))[:48]


def xplane_file(trace_dir: str) -> str:
  """The trace jax.profiler wrote under ``trace_dir``."""
  return glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]


def op_events(trace_dir: str):
  """(on_gpu, name, seconds) of every operation in the trace in ``trace_dir``: on the CPU the
  HLO instructions run on XLA's worker threads (their parents and markers left out), on a GPU
  the kernels on the device's streams. Where there is none, prints the trace's lines (an unknown
  trace layout says what it holds rather than nothing)."""
  path = xplane_file(trace_dir)
  seen, found = [], 0
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    gpu = plane.name.startswith("/device:GPU")
    for line in plane.lines:
      seen.append(f"{plane.name}: {line.name}")
      if gpu and line.name.startswith("Stream"):
        for ev in line.events:
          found += 1
          yield True, ev.name, ev.duration_ns / 1e9
      elif "XLAEigen" in line.name:  # XLA's intra-op pool: where the CPU's operations run
        for ev in line.events:
          if not ev.name.startswith(("ThunkExecutor", "end: ")):  # parents and markers
            found += 1
            yield False, ev.name, ev.duration_ns / 1e9
  if not found:
    print("no operation events found; the trace's lines:", sorted(set(seen)))


def op_shares(trace_dir: str) -> collections.Counter:
  """Seconds per operation class, from the trace in ``trace_dir``: on the CPU summed over XLA's
  worker threads (the instruction's name without its number); on a GPU over the kernels of the
  device's streams (gpu_kernel_class)."""
  shares = collections.Counter()
  for gpu, name, seconds in op_events(trace_dir):
    shares[gpu_kernel_class(name) if gpu else re.sub(r"\.\d+", "", name)] += seconds
  return shares


def trace_calls(run, state, calls: int, trace_dir: str) -> list:
  """Runs ``state = run(state)`` twice (compilation, then one more so the traced calls are
  steady), then ``calls`` times under jax.profiler writing to ``trace_dir``; each traced call's
  wall seconds."""
  for _ in range(2):
    state = run(state)
  walls = []
  with jax.profiler.trace(trace_dir):
    for _ in range(calls):
      t0 = time.perf_counter()
      state = run(state)
      walls.append(time.perf_counter() - t0)
  return walls


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--crop", type=int, default=256)
  ap.add_argument("--steps", type=int, default=2)
  ap.add_argument("--dtype", default="float32", help="config.compute_dtype")
  ap.add_argument("--infer", action="store_true", help="profile batch-1 inference instead")
  ap.add_argument("--hlo", help="also write the compiled HLO text here")
  ap.add_argument("--xplane", help="also copy the trace (an .xplane.pb) here")
  args = ap.parse_args()
  p_train, state, batch = (compiled_inference if args.infer else compiled_step)(args.crop,
                                                                                 args.dtype)
  print_cost(p_train, state, batch, args.hlo)

  def run(state):  # one step (the donated state replaced by the new one) or one inference
    out = p_train(state, batch)
    jax.block_until_ready(out)
    return state if args.infer else out[0]

  with tempfile.TemporaryDirectory() as trace_dir:
    for seconds in trace_calls(run, state, args.steps, trace_dir):
      print(f"traced {'inference' if args.infer else 'step'}: {seconds:.2f} s")
    shares = op_shares(trace_dir)
    if args.xplane:
      shutil.copy(xplane_file(trace_dir), args.xplane)
  total = sum(shares.values())
  print(f"operation time (CPU: on XLA's threads; GPU: kernels): {total:.3f} s over {args.steps} "
        "steps")
  for name, seconds in shares.most_common(15):
    print(f"  {name:32s} {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
  main()
