"""One config's train step (or batch-1 inference, or its start-up) timed in two or more source
trees (issue 10).

A change's before and after: each tree (a checkout, e.g. a `git worktree` of the commit before)
runs the same measurement in a fresh subprocess that imports the project from that tree, the trees
alternating round by round (order rotated each round), and the medians are printed with each tree's
ratio to the first. Works for any config (baselines included), where benchmarks/speed.py measures
configs/sirst.py's EAAU-Net against its PyTorch twin. The worker uses only
train.create_train_state / compile_steps / predict_logits, models.model_from_config,
xla_options.jit and evaluate.restore, so older trees that have them run it too.

  git worktree add /tmp/before HEAD~1
  python benchmarks/tree_speed.py --config configs/acm_unet.py --trees /tmp/before . \\
      --task train --crop 256 --rounds 3

train: images/s of the full optimizer step, batch --batch, --crop x --crop random images.
infer: ms of one --crop x --crop image's logits, as evaluation computes them.
init: seconds to build the initial train state in a fresh process, its compilation included
  (what training pays before its first step).
restore: seconds for evaluate.restore to read a checkpoint of that state in a fresh process (what
  --mode=eval and predict pay before their first image); the first tree writes the checkpoint.
reseed: seconds to build the initial state of seed 1 and compile its train step (--crop, --batch)
  in a fresh process whose JAX persistent compilation cache a process of seed 0 filled just before
  (a fresh cache for each tree and round): what a reproduction's second seed pays before its
  first step (eaau_jax/reproduce.py shares the cache between seeds).
Threads: whatever XLA takes in this process's affinity (run under `taskset` to limit them).
"""

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SETUP_TASKS = ("init", "restore", "reseed")


def load_config(path: str):
  """``path`` (e.g. configs/acm_unet.py) of the tree on sys.path as an ml_collections config."""
  module = os.path.splitext(os.path.normpath(path))[0].replace(os.sep, ".")
  return importlib.import_module(module).get_config()


def worker(args) -> dict:
  """Runs with the tree as its cwd and first on PYTHONPATH; returns the measurement as a dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # This script's sibling (sys.path[0] is its folder), not the measured tree's benchmarks/: it
  # imports the project only when called, so from the measured tree.
  import harness  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from eaau_jax import input_pipeline, models, train, xla_options
  config = load_config(args.config)
  mesh = input_pipeline.make_mesh()
  if args.task in SETUP_TASKS:
    return setup_worker(args, config, mesh)
  state = train.create_train_state(config, models.model_from_config(config.model), 1000, mesh)
  n = args.batch if args.task == "train" else 1
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, args.crop, args.crop, config.input.channels)).astype(np.float32)
  t = (rng.uniform(size=(n, args.crop, args.crop, 1)) > 0.998).astype(np.float32)
  if args.task == "train":
    call = harness.jax_train_call(config, mesh, state, x, t)
  else:
    predict = xla_options.jit(lambda s, b: train.predict_logits(s, *b))
    images = (x, np.ones((1, args.crop, args.crop, 1), np.float32))

    def call():
      jax.block_until_ready(predict(state, images))
  times = harness.timed(call, args.warmup, args.steps)["times"]
  median = statistics.median(times)
  value = args.batch / median if args.task == "train" else 1e3 * median
  return {"value": value, "times": times, "peak_rss_mb": harness.rss_mb()}


def setup_worker(args, config, mesh) -> dict:
  """init and restore (the module docstring), each once in this fresh process; init with --save
  then writes --checkpoint (a workdir) for restore, as training would (step 0, train.py's meta)."""
  import jax  # pylint: disable=g-import-not-at-top
  import harness  # pylint: disable=g-import-not-at-top
  from eaau_jax import checkpoints, evaluate, models, train  # pylint: disable=g-import-not-at-top
  model = models.model_from_config(config.model)
  if args.task == "reseed":
    jax.config.update("jax_compilation_cache_dir", args.cache)
    config.seed = args.seed
  t0 = time.perf_counter()
  if args.task == "restore":
    state = evaluate.restore(args.checkpoint, mesh)[0]
  else:
    state = train.create_train_state(config, model, 1, mesh)
  jax.block_until_ready(state)
  if args.task == "reseed":
    compile_train_step(config, mesh, state, args)
  seconds = time.perf_counter() - t0
  if args.save:
    ckpt = checkpoints.Checkpoints(args.checkpoint, keep=1)
    ckpt.save(0, state, {"config": config.to_dict(), "mean": [0.0], "std": [1.0],
                         "num_params": models.count_params(state.params)})
    ckpt.close()
  return {"value": seconds, "times": [seconds], "peak_rss_mb": harness.rss_mb()}


def compile_train_step(config, mesh, state, args):
  """The run's train step compiled (or read from the persistent cache) for a --batch x --crop
  batch, as its first call would."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, train  # pylint: disable=g-import-not-at-top
  x = np.zeros((args.batch, args.crop, args.crop, config.input.channels), np.float32)
  batch = input_pipeline.to_global(mesh, {"image": x, "mask": x[..., :1]})
  train.compile_steps(config, mesh)[0].lower(state, batch).compile()


def run_tree(tree: str, argv: list, timeout: float) -> dict:
  """The worker in ``tree``: its result, or {"failed": why} with the stderr's tail printed."""
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", *argv]
  path = [os.path.abspath(tree)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), TF_CPP_MIN_LOG_LEVEL="2")
  try:
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout,
                       check=False)
  except subprocess.TimeoutExpired:
    return {"failed": f"timed out after {timeout:.0f} s"}
  lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
  if p.returncode or not lines:
    print(f"{tree}: exit {p.returncode}\n{p.stderr[-3000:]}", file=sys.stderr, flush=True)
    return {"failed": f"exit {p.returncode}"}
  return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default="configs/sirst.py", help="path inside each tree")
  ap.add_argument("--trees", nargs="+", default=["."], help="checkouts; ratios are to the first")
  ap.add_argument("--task", choices=("train", "infer") + SETUP_TASKS, default="train")
  ap.add_argument("--crop", type=int, default=256)
  ap.add_argument("--batch", type=int, default=8, help="train only (inference is batch 1)")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--warmup", type=int, default=2, help="untimed calls (the first compiles)")
  ap.add_argument("--steps", type=int, default=3, help="timed calls per measurement")
  ap.add_argument("--timeout", type=float, default=1800)
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--checkpoint", help=argparse.SUPPRESS)  # restore's, written by the first tree
  ap.add_argument("--save", action="store_true", help=argparse.SUPPRESS)  # init, then write it
  ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # reseed's
  ap.add_argument("--cache", help=argparse.SUPPRESS)  # reseed's compilation cache
  args = ap.parse_args(argv)
  if args.worker:
    print("RESULT " + json.dumps(worker(args)), flush=True)
    return
  if os.path.isabs(args.config) or not args.config.endswith(".py"):
    ap.error(f"--config {args.config}: a config file's path relative to each tree, e.g. "
             "configs/acm_unet.py")
  missing = [t for t in args.trees if not os.path.isfile(os.path.join(t, args.config))]
  if missing:
    ap.error(f"no {args.config} in {', '.join(missing)} (each --trees entry is a checkout)")
  passed = ["--config", args.config, "--task", args.task, "--crop", str(args.crop), "--batch",
            str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps)]
  scratch = tempfile.mkdtemp(prefix="tree_speed_") if args.task == "restore" else None
  try:
    if scratch:  # restore's checkpoint, written once by the first tree
      passed += ["--checkpoint", scratch]
      saved = run_tree(args.trees[0], passed[:3] + ["init", "--save"] + passed[4:], args.timeout)
      if "failed" in saved:
        sys.exit(f"writing the checkpoint to restore failed in {args.trees[0]}: {saved['failed']}")
    report(args, rounds(args, passed))
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


def unit(task: str) -> str:
  return {"train": "images/s", "infer": "ms/image"}.get(task, "s")


def rounds(args, passed: list) -> dict:
  """Each tree's worker results, the trees alternating round by round."""
  results = {t: [] for t in args.trees}
  for r in range(args.rounds):
    order = args.trees[r % len(args.trees):] + args.trees[:r % len(args.trees)]
    for tree in order:
      if args.task == "reseed":  # a fresh cache, filled by seed 0, then seed 1 timed
        cache = tempfile.mkdtemp(prefix="tree_speed_cache_")
        filled = run_tree(tree, passed + ["--cache", cache, "--seed", "0"], args.timeout)
        res = filled if "failed" in filled else run_tree(
            tree, passed + ["--cache", cache, "--seed", "1"], args.timeout)
        shutil.rmtree(cache, ignore_errors=True)
      else:
        res = run_tree(tree, passed, args.timeout)
      results[tree].append(res)
      shown = res.get("failed") or (f"{res['value']:.3f} {unit(args.task)}, "
                                    f"peak RSS {res['peak_rss_mb']:.0f} MB")
      print(f"round {r + 1} {tree}: {shown}", flush=True)
  return results


def report(args, results: dict):
  """Each tree's median and its speed-up over the first tree's (> 1: faster)."""
  if args.task in SETUP_TASKS:
    what = f"{args.task} (seconds, once in a fresh process)"
  else:
    batch = args.batch if args.task == "train" else 1
    what = f"{args.task} at {args.crop} x {args.crop}, batch {batch}"
  print(f"\n{args.config}, {what}; {len(os.sched_getaffinity(0))} cores; median of "
        f"{args.rounds} rounds:")
  medians = {t: statistics.median(v) for t in args.trees
             if (v := [res["value"] for res in results[t] if "value" in res])}
  ref = medians.get(args.trees[0])
  for tree in args.trees:
    if tree not in medians:
      print(f"  {tree}: failed")
      continue
    vals = ", ".join(f"{res['value']:.3f}" for res in results[tree] if "value" in res)
    ratio = None if ref is None else medians[tree] / ref
    speedup = "n/a" if ratio is None else f"{ratio if args.task == 'train' else 1 / ratio:.2f}"
    print(f"  {tree}: {medians[tree]:.3f} {unit(args.task)} (rounds {vals}); speed-up over the "
          f"first tree {speedup}")


if __name__ == "__main__":
  main()
