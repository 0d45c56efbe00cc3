"""What the checkpoints at evaluations cost the training loop (issue 10, item 4: the 5-minute run).

configs/sirst.py evaluates every 5 epochs (61 times). Until 2026-11-27 each evaluation saved the
step twice: to checkpoints/ and, as a candidate for the best, to best/, where orbax's ``best_fn``
deleted the worse. On an H200 the paper's run (RESULTS.md, seed 4) spent ~1.0 s of the loop per
evaluation beyond the validation itself: the saves block the loop (0.23 s median for
checkpoints/, 0.48 s for best/) and their background writes slow the next steps. Now an
evaluation saves to best/ only when its val IoU beats the kept one, and checkpoints/ is written
every ``checkpoint_every_steps`` (500) and at the end. This times ``Checkpoints``' saves for the
paper model's train state (b = 3: 383,649 parameters, AdaGrad state, BatchNorm statistics) over
the validation IoUs of a real run (``--curve``, default seed 4's record), both ways:

  * ``before``: checkpoints/ and best/ at every evaluation;
  * ``now``: best/ when the val IoU improves, checkpoints/ at the steps that are multiples of 500.

Between evaluations the loop sleeps ``--gap`` seconds (the steps, during which the background
writes go on). Prints, per policy and round, the loop's blocking seconds per evaluation (median)
and in total, the seconds until the last background write is done (less the gaps), and the number
of saves.

  python benchmarks/checkpoint_cost.py [--rounds 3 --evals 60 --gap 3.6]
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import sirst  # pylint: disable=g-import-not-at-top
from eaau_jax import (  # pylint: disable=g-import-not-at-top
    checkpoints, input_pipeline, models, train)

SEED_4 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results",
                      "sirst_seed_4_h200_reproduce.json")


def run(policy: str, state, meta, curve, workdir: str, gap: float) -> dict:
  """One pass over ``curve`` [(step, val IoU)] with ``policy``, ``gap`` seconds of training
  (sleep: the background writes go on) between evaluations; seconds and saves."""
  ckpt = checkpoints.Checkpoints(workdir, keep=3)
  blocking, saves = [], 0
  t0 = time.perf_counter()
  for step, iou in curve:
    time.sleep(gap)
    t = time.perf_counter()
    if policy == "before" or step % 500 == 0:
      ckpt.save(step, state, meta)
      saves += 1
    if policy == "before":
      ckpt.best_iou = -math.inf  # every evaluated step was saved; orbax deleted the worse
    saves += ckpt.save_best(step, state, meta, {"iou": iou})
    blocking.append(time.perf_counter() - t)
  ckpt.close()  # waits for the background writes
  return {"median": statistics.median(blocking), "blocking": sum(blocking),
          "all_written": time.perf_counter() - t0 - gap * len(curve), "saves": saves}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--evals", type=int, default=60, help="evaluations of the curve used")
  ap.add_argument("--curve", default=SEED_4, help="a reproduce.json record")
  ap.add_argument("--gap", type=float, default=3.6,
                  help="seconds of training between evaluations (sleep; default: 100 steps at the "
                       "H200's 27.9 steps/s)")
  args = ap.parse_args()
  with open(args.curve) as f:
    curve = [(c[0], c[1]) for c in json.load(f)["curve"] if c[0] > 0][:args.evals]
  config = sirst.get_config()
  state = train.create_train_state(config, models.model_from_config(config.model), 6000,
                                   input_pipeline.make_mesh())
  meta = {"config": config.to_dict(), "mean": 119.2, "std": 58.8, "num_params": 383649}
  print(f"{len(curve)} evaluations of {args.curve}; {args.rounds} rounds, policies alternating")
  for r in range(args.rounds):
    for policy in ("before", "now"):
      with tempfile.TemporaryDirectory() as workdir:
        m = run(policy, state, meta, curve, workdir, args.gap)
      print(f"round {r} {policy:8s}: blocking {m['median']:.3f} s per evaluation (median), "
            f"{m['blocking']:.1f} s in all; {m['all_written']:.1f} s until all were written "
            f"(less the gaps); {m['saves']} saves")


if __name__ == "__main__":
  main()
