"""Does bfloat16 compute cost accuracy? Seed-paired float32 / bfloat16 training runs (issue 10).

The issue keeps bf16 compute (config.compute_dtype = "bfloat16": float32 params, optimizer state,
BatchNorm statistics and loss) only with unchanged accuracy on the synthetic run. Each (seed,
training dtype) trains a config (default: configs/synthetic.py, the embedded default) with
``main.py``, which keeps its best checkpoint on val, and evaluates that checkpoint on the test
split twice with ``main.py --mode eval``: computing in float32 and in bfloat16. So a loss is placed
on the training or on the inference, and a GPU run could train in bf16 yet validate and test in
float32. ``--set KEY=VALUE`` reaches main.py as ``--config.KEY=VALUE``; each process's output is
in its run folder (train.log, eval_<dtype>.log).

A seed gives both dtypes the same initial params (float32 in both) and the same batches, so each
seed is a pair: the table prints the per-seed difference and its mean, beside each dtype's mean.
But two runs of one seed drift apart from any difference in rounding (training is chaotic), so
``--control`` adds a third arm: float32 with a change that moves only float rounding (e.g. the
transposed conv in its other exact form); its distance from float32 is what "unchanged" can mean.
Finished runs are kept (``<workdir>/<arm>/seed_<s>/``: trained.json, precision.json): the same
command resumes. ``--test-set KEY=VALUE`` evaluates the trained runs again with an override for
the test only (e.g. a larger synthetic test split: the generator's examples are a function of
the index, so 480 images include the default 48), into precision_<override>.json.

  python benchmarks/precision_accuracy.py --seeds 0,1,2 --workdir /tmp/precision \\
      --set num_epochs=16 --control model.upsampling=transpose_3x3
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # runs from a clean clone without installing the project

DTYPES = ("float32", "bfloat16")
MAIN = os.path.join(ROOT, "main.py")


def main_py(args, mode: str, run_dir: str, dtype: str, overrides: list, log: str, *extra):
  """Runs ``main.py --mode MODE`` on ``args.config`` computing in ``dtype``, with ``--config.KEY=
  VALUE`` for each override (parsed by config_flags, as for any main.py run), its output in
  ``log``; a failure raises with the log's tail."""
  cmd = [sys.executable, MAIN, f"--mode={mode}", f"--config={args.config}",
         f"--workdir={run_dir}", f"--config.compute_dtype={dtype}", *extra]
  cmd += [f"--config.{o}" for o in overrides]
  with open(log, "w") as f:
    done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
  if done.returncode:
    with open(log) as f:
      tail = "".join(f.readlines()[-15:])
    raise SystemExit(f"{' '.join(cmd)}\nfailed (exit {done.returncode}); end of {log}:\n{tail}")


def eval_tag(test_set: list) -> str:
  """The suffix naming a set of test-only overrides in file names ("" for none)."""
  return "".join("_" + re.sub(r"[^\w.-]+", "-", o) for o in test_set)


def train(args, seed: int, dtype: str, overrides: list, run_dir: str) -> dict:
  """Trains one (seed, training dtype) in ``run_dir`` through main.py unless ``trained.json``
  says it did; returns that record. A run trained otherwise (another config, dtype or overrides)
  is refused, not reused; one stopped by SIGTERM is not recorded (main.py resumes it next time).
  ``train_seconds``: the last training process's wall time, start-up included."""
  from eaau_jax import reproduce, summary  # pylint: disable=g-import-not-at-top
  path = os.path.join(run_dir, "trained.json")
  how = {"config": args.config, "train_dtype": dtype, "overrides": overrides}
  if not os.path.exists(path):
    print(f"training seed {seed}, {dtype} -> {run_dir}", flush=True)
    os.makedirs(run_dir, exist_ok=True)
    for name in os.listdir(run_dir):  # test records of an earlier training are not this one's
      if name.startswith("precision") and name.endswith(".json"):
        os.remove(os.path.join(run_dir, name))
    t0 = time.time()
    log = os.path.join(run_dir, "train.log")
    main_py(args, "train", run_dir, dtype, overrides, log)
    with open(log) as f:
      if summary.PREEMPTED in f.read():  # main.py's clean stop (exit 0): saved, not finished
        raise SystemExit(f"{run_dir}: training was stopped by SIGTERM (see {log}); the same "
                         "command resumes it")
    with open(path, "w") as f:
      json.dump({"seed": seed, **how, "train_seconds": time.time() - t0,
                 "curve": reproduce.validation_curve(run_dir)}, f, indent=1)
  with open(path) as f:
    record = json.load(f)
  trained_as = {k: record.get(k) for k in how}
  if trained_as != how:
    raise SystemExit(f"{run_dir} was trained as {trained_as}, not {how}: use another --workdir")
  return record


def evaluate_on_test(args, trained: dict, overrides: list, run_dir: str) -> dict:
  """The trained run's best checkpoint evaluated on test computing in each of ``--test-dtypes``
  (main.py --mode eval, with ``args.test_set`` on top of the training overrides): the training
  record with the test metrics, written to ``precision<tag>.json`` and returned."""
  record = {**trained, "test": {}, "test_set": args.test_set}
  for ev in args.test_dtypes:
    out = os.path.join(run_dir, f"eval{eval_tag(args.test_set)}_{ev}")
    main_py(args, "eval", run_dir, ev, overrides + args.test_set, out + ".log", f"--output={out}")
    (report,) = [os.path.join(out, n) for n in os.listdir(out)
                 if n.startswith("eval_") and n.endswith(".json")]
    with open(report) as f:
      report = json.load(f)
    record["test"][ev] = report["metrics"]
    record["checkpoint"], record["protocol"] = report["checkpoint"], report["protocol"]
  with open(os.path.join(run_dir, f"precision{eval_tag(args.test_set)}.json"), "w") as f:
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
  record}, finished ones read back (trained.json checked against this command)."""
  records = {}
  for i, seed in enumerate(args.seeds):
    todo = arms(args)
    for label, dtype, extra in (todo if i % 2 == 0 else todo[::-1]):
      run_dir = os.path.join(os.path.abspath(args.workdir), label, f"seed_{seed}")
      overrides = [f"seed={seed}"] + args.set + extra
      trained = train(args, seed, dtype, overrides, run_dir)
      path = os.path.join(run_dir, f"precision{eval_tag(args.test_set)}.json")
      record = None
      if os.path.exists(path):
        with open(path) as f:
          record = json.load(f)
      if record is None or not set(args.test_dtypes) <= set(record["test"]):
        record = evaluate_on_test(args, trained, overrides, run_dir)
      records[(label, seed)] = record
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
    for ev in [d for d in DTYPES if d in rs[0]["test"]]:
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", "synthetic.py"))
  ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds")
  ap.add_argument("--workdir", help="one folder per (arm, seed); required")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override, given to main.py as --config.KEY=VALUE, e.g. "
                       "num_epochs=16 (repeatable)")
  ap.add_argument("--control", metavar="KEY=VALUE",
                  help="a float32 arm with this override, which changes float rounding only, "
                       "e.g. model.upsampling=transpose_3x3 (the same function, another form)")
  ap.add_argument("--test-set", action="append", default=[], metavar="KEY=VALUE",
                  help="an override for the test evaluations only, e.g. "
                       "dataset.synthetic.num_test=480 (a larger sample from the same generator); "
                       "trained runs are evaluated again, not trained again (repeatable)")
  ap.add_argument("--test-dtypes", default=",".join(DTYPES),
                  help="what the test evaluations compute in, of float32, bfloat16")
  ap.add_argument("--arms", default="float32,bfloat16,control",
                  help="which arms to run and report, of float32, bfloat16, control")
  args = ap.parse_args(argv)
  if not args.workdir:
    ap.error("--workdir is required")
  args.config = os.path.abspath(args.config)  # main.py runs in the checkout's root
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.arms = args.arms.split(",")
  if not arms(args):
    ap.error(f"--arms {','.join(args.arms)}: none of float32, bfloat16, control (control needs "
             "--control)")
  args.test_dtypes = args.test_dtypes.split(",")
  if not set(args.test_dtypes) <= set(DTYPES) or "float32" not in args.test_dtypes:
    ap.error(f"--test-dtypes {','.join(args.test_dtypes)}: float32 and optionally bfloat16")
  t0 = time.time()
  records = run_all(args)
  first = next(iter(records.values()))
  control = f"; control: float32 with {args.control}" if args.control else ""
  tested = f" with {' '.join(args.test_set)}" if args.test_set else ""
  print(f"\n{args.config} {' '.join(args.set)}, seeds {args.seeds}, best-on-val checkpoint, test "
        f"split{tested} ({first['test']['float32']['images']:.0f} images), {first['protocol']} "
        f"protocol, threshold 0 logit{control}; "
        f"{time.time() - t0:.0f} s\n")
  print(table(records, args.seeds, [a[0] for a in arms(args)]))


if __name__ == "__main__":
  main()
