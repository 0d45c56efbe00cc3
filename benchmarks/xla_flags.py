"""Screen XLA flags on the JAX side of benchmarks/speed.py (issue 10, item 3).

Runs one speed.py task (default infer_512: batch-1 inference of a 512 x 512 image) in a fresh
subprocess per flag set, the sets alternating round by round (their order rotated each round),
and prints each set's median and its ratio to the baseline's (no extra flags, always run). A
flag set that XLA rejects is reported as failed, not fatal. On a loaded machine only large
ratios mean anything; a quiet one is needed for figures to quote.

  python benchmarks/xla_flags.py --rounds 3 --set=--xla_cpu_enable_fast_math=true \\
      --set="--xla_cpu_use_xnnpack=true --xla_cpu_enable_fast_math=true"
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import speed  # pylint: disable=g-import-not-at-top


def run_set(flags: str, spec: dict, timeout: float) -> dict:
  """speed.py's JAX worker for ``spec`` with ``flags`` appended to XLA_FLAGS."""
  saved = os.environ.get("XLA_FLAGS")
  os.environ["XLA_FLAGS"] = " ".join(f for f in (saved or "", flags) if f).strip()
  try:
    return speed.run_one("jax", spec, timeout)
  finally:
    if saved is None:
      os.environ.pop("XLA_FLAGS")
    else:
      os.environ["XLA_FLAGS"] = saved


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--set", action="append", default=[],
                  help="a flag set, one string (write --set=--xla_...); repeat for more")
  ap.add_argument("--task", default="infer_512", choices=list(speed.LABELS))
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
  ap.add_argument("--threads", type=int, default=None, help="cores (default: all this may use)")
  ap.add_argument("--timeout", type=float, default=1800)
  ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                  help="JAX's backend for the task (cuda: XLA GPU flags, e.g. on a lent H200)")
  args = ap.parse_args()
  flag_sets = [""] + args.set
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]
  o = dict(speed.MODES["full"], infer_steps=args.steps, train_steps=args.steps, native_passes=1)
  sizes, note = speed.test_sizes(None) if args.task == "infer_native" else ([], "")
  spec = {**speed.task_specs(o, sizes, cpus)[args.task], "task": args.task, "dtype": "float32",
          "device": args.device}
  label, faster_is_higher = speed.LABELS[args.task]
  print(f"{label}; {args.device}; {len(cpus)} thread(s); {args.rounds} round(s) {note}",
        flush=True)
  values = {f: [] for f in flag_sets}
  for r in range(args.rounds):
    k = r % len(flag_sets)
    for flags in flag_sets[k:] + flag_sets[:k]:
      res = run_set(flags, spec, args.timeout)
      if "failed" not in res:
        values[flags].append(res["value"])
      print(f"round {r + 1} [{flags or 'default'}]: {speed.describe(res)}", flush=True)
  base = statistics.median(values[""]) if values[""] else None
  print("\n| XLA_FLAGS | median | per round | speed vs default |")
  print("|---|---:|---|---:|")
  for flags, v in values.items():
    if not v:
      print(f"| `{flags or 'default'}` | failed | - | - |")
      continue
    med = statistics.median(v)
    ratio = "-" if base is None else f"{(med / base if faster_is_higher else base / med):.2f}"
    print(f"| `{flags or 'default'}` | {med:.3g} | {', '.join(f'{x:.3g}' for x in v)} | {ratio} |")


if __name__ == "__main__":
  main()
