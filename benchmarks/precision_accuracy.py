"""Does bfloat16 compute cost accuracy? Seed-paired float32 / bfloat16 training runs (issue 10).

The issue keeps bf16 compute (config.compute_dtype = "bfloat16": float32 params, optimizer state,
BatchNorm statistics and loss) only with unchanged accuracy on the synthetic run. Each (seed,
training dtype) trains a config (default: configs/synthetic.py, the embedded default) in a fresh
subprocess, keeps its best checkpoint on val as training does, and evaluates that checkpoint on
the test split twice: computing in float32 and in bfloat16. So a loss is placed on the training or
on the inference, and a GPU run could train in bf16 yet validate and test in float32.

A seed gives both dtypes the same initial params (float32 in both) and the same batches, so each
seed is a pair: the table prints the per-seed difference and its mean, beside each dtype's mean.
But two runs of one seed drift apart from any difference in rounding (training is chaotic), so
``--control`` adds a third arm: float32 with a change that moves only float rounding (e.g. the
transposed conv in its other exact form); its distance from float32 is what "unchanged" can mean.
Finished runs are kept (``<workdir>/<arm>/seed_<s>/precision.json``): the same command resumes.

  python benchmarks/precision_accuracy.py --seeds 0,1,2 --workdir /tmp/precision \\
      --set num_epochs=16 --control model.upsampling=transpose_3x3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # runs from a clean clone without installing the project

DTYPES = ("float32", "bfloat16")


def load_config(path: str, overrides: list):
  """The config file's get_config() with ``key=value`` overrides (values parsed as JSON, else
  strings), e.g. ``num_epochs=16``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("precision_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, _, value = item.partition("=")
    try:
      parsed = json.loads(value)
    except json.JSONDecodeError:
      parsed = value
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise SystemExit(f"--set {item}: the config has no field {key!r}")
    node[leaf] = parsed
  return config


def worker(args) -> dict:
  """Trains one (seed, dtype) in ``args.run_dir`` and evaluates its best checkpoint on test in
  each dtype; writes and returns the record."""
  from eaau_jax import evaluate, reproduce, train  # pylint: disable=g-import-not-at-top
  config = reproduce.seed_config(load_config(args.config, args.set), args.seed)
  config.compute_dtype = args.dtype
  t0 = time.time()
  train.train_and_evaluate(config, args.run_dir)
  record = {"seed": args.seed, "train_dtype": args.dtype, "train_seconds": time.time() - t0,
            "curve": reproduce.validation_curve(args.run_dir), "test": {}}
  protocol = config.eval.protocol
  for dtype in DTYPES:
    config.compute_dtype = dtype
    reports = evaluate.run_eval(args.run_dir, config.dataset.test_split,
                                os.path.join(args.run_dir, f"eval_{dtype}"), config=config,
                                protocols=[protocol])
    record["test"][dtype] = reports[protocol]["metrics"]
    record["checkpoint"] = reports[protocol]["checkpoint"]
  record["protocol"] = protocol
  with open(os.path.join(args.run_dir, "precision.json"), "w") as f:
    json.dump(record, f, indent=1)
  return record


def arms(args) -> list[tuple[str, str, list]]:
  """(label, training dtype, extra config overrides): float32, bfloat16 and, with ``--control``,
  float32 with a change that moves only float rounding: how far two runs of one seed drift apart
  when nothing but rounding differs, the yardstick for "unchanged accuracy"."""
  out = [("float32", "float32", []), ("bfloat16", "bfloat16", [])]
  if args.control:
    out.append(("control", "float32", [args.control]))
  return [a for a in out if a[0] in args.arms]


def run_all(args) -> dict:
  """Each seed's runs in fresh subprocesses (arm order reversed every other seed); {(arm, seed):
  record}, finished ones read back."""
  records = {}
  for i, seed in enumerate(args.seeds):
    todo = arms(args)
    for label, dtype, extra in (todo if i % 2 == 0 else todo[::-1]):
      run_dir = os.path.join(os.path.abspath(args.workdir), label, f"seed_{seed}")
      path = os.path.join(run_dir, "precision.json")
      if not os.path.exists(path):
        print(f"training seed {seed}, {label} -> {run_dir}", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(seed),
               "--dtype", dtype, "--run-dir", run_dir, "--config", args.config]
        cmd += [f"--set={s}" for s in args.set + extra]
        subprocess.run(cmd, check=True, cwd=ROOT)
      with open(path) as f:
        records[(label, seed)] = json.load(f)
  return records


def _mean_sd(values: list) -> str:
  if len(values) < 2:
    return f"{values[0]:.4f}"
  return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(records: dict, seeds: list, labels: list) -> str:
  """Markdown: per arm and test-time dtype, test IoU per seed, mean ± sd, nIoU, val IoU, train
  time; then each arm minus float32 per seed (paired: the same seed), tested in float32."""
  lines = ["| trained | tested in | test IoU per seed | mean ± sd | test nIoU mean ± sd | "
           "best val IoU mean | last val IoU per seed | train s median |",
           "|---|---|---|---|---|---:|---|---:|"]
  for label in labels:
    rs = [records[(label, s)] for s in seeds]
    for ev in DTYPES:
      ious = [r["test"][ev]["iou"] for r in rs]
      nious = [r["test"][ev]["niou"] for r in rs]
      best = statistics.fmean(max(c[1] for c in r["curve"]) for r in rs)
      last = ", ".join(f"{r['curve'][-1][1]:.4f}" for r in rs)
      lines.append(f"| {label} | {ev} | {', '.join(f'{v:.4f}' for v in ious)} | "
                   f"{_mean_sd(ious)} | {_mean_sd(nious)} | {best:.4f} | {last} | "
                   f"{statistics.median(r['train_seconds'] for r in rs):.0f} |")
  if "float32" in labels and len(labels) > 1:
    lines += ["", "| test IoU minus float32's (same seed), tested in float32 | per seed | "
              "mean ± sd | mean absolute |", "|---|---|---|---:|"]
    for label in labels:
      if label != "float32":
        d = [records[(label, s)]["test"]["float32"]["iou"]
             - records[("float32", s)]["test"]["float32"]["iou"] for s in seeds]
        lines.append(f"| {label} | {', '.join(f'{v:+.4f}' for v in d)} | {_mean_sd(d)} | "
                     f"{statistics.fmean(abs(v) for v in d):.4f} |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", "synthetic.py"))
  ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds")
  ap.add_argument("--workdir", help="one folder per (arm, seed); required")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override, e.g. num_epochs=16 (repeatable)")
  ap.add_argument("--control", metavar="KEY=VALUE",
                  help="a float32 arm with this override, which changes float rounding only, "
                       "e.g. model.upsampling=transpose_3x3 (the same function, another form)")
  ap.add_argument("--arms", default="float32,bfloat16,control",
                  help="which arms to run and report, of float32, bfloat16, control")
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
  ap.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
  ap.add_argument("--run-dir", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.worker:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)
    worker(args)
    return
  if not args.workdir:
    ap.error("--workdir is required")
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.arms = args.arms.split(",")
  t0 = time.time()
  records = run_all(args)
  first = next(iter(records.values()))
  control = f"; control: float32 with {args.control}" if args.control else ""
  print(f"\n{args.config} {' '.join(args.set)}, seeds {args.seeds}, best-on-val checkpoint, test "
        f"split, {first['protocol']} protocol, threshold 0 logit{control}; "
        f"{time.time() - t0:.0f} s\n")
  print(table(records, args.seeds, [a[0] for a in arms(args)]))


if __name__ == "__main__":
  main()
