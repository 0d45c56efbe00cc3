"""Time of one native-protocol evaluation pass over a SIRST split (default val of idx_427, 85
images), for the b = 3 paper model at random init: median of --repeats passes after a first one
that compiles every bucket shape. Metrics are computed as in training (train.evaluate).

  python benchmarks/eval_speed.py [--split val --repeats 3 --pad-multiple 128]

Written to compare evaluation before and after the padding mask (README "Protocols"); it runs
against the older tree too (it only uses make_eval_loader / compile_steps / evaluate).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.getcwd())  # the tree it is run from

import jax  # pylint: disable=g-import-not-at-top

from configs import sirst  # pylint: disable=g-import-not-at-top
from eaau_jax import input_pipeline, models, train  # pylint: disable=g-import-not-at-top


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--split", default="val")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--pad-multiple", type=int, default=128)
  ap.add_argument("--split-folder", default="idx_427", help="(trees that have the idx_320 split)")
  ap.add_argument("--sirst", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                  "datasets", "sirst"))
  args = ap.parse_args()
  config = sirst.get_config()
  config.dataset.manual_dir = os.path.abspath(args.sirst)
  config.input.eval_pad_multiple = args.pad_multiple
  if "eval" in config:  # the tree has protocols and the idx_320 split
    config.eval.protocol = "native"
    config.dataset.split_folder = args.split_folder
  mesh = input_pipeline.make_mesh()
  source = input_pipeline.open_source(config.dataset, args.split)
  loader = train.make_eval_loader(config, source, 119.0, 59.0)
  state = train.create_train_state(config, models.model_from_config(config.model), 1, mesh)
  _, p_eval = train.compile_steps(config, mesh)
  times = []
  for _ in range(args.repeats + 1):
    t0 = time.perf_counter()
    train.evaluate(state, loader, p_eval, mesh)
    times.append(time.perf_counter() - t0)
  print(f"{os.getcwd()}: {len(source)} images ({config.dataset.get('split_folder', 'idx_427')} "
        f"{args.split}), pad multiple {args.pad_multiple}: first pass (compiles) {times[0]:.1f} s, "
        f"then median {statistics.median(times[1:]):.1f} s of {args.repeats}")


if __name__ == "__main__":
  main()
