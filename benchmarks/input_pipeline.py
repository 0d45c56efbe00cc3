"""Training-pipeline throughput (images/s) on this machine: read, augment, normalise, batch.

  python benchmarks/input_pipeline.py [--dataset sirst --crop 480 --batches 16 --repeats 5]

Prints the median over --repeats runs of --batches batches (each run a different epoch), for each
number of worker threads, so one can compare with the model's step rate (benchmarks/upsampling.py)
and see whether the pipeline could starve it.
"""

import argparse
import statistics
import time

from absl import logging

from configs import sirst
from eaau_jax import input_pipeline


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--dataset", default="sirst", help="sirst (needs --manual_dir) or synthetic")
  ap.add_argument("--manual_dir", default="../shared/datasets/sirst")
  ap.add_argument("--crop", type=int, default=480)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--batches", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--workers", default="1,2,4")
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)
  config = sirst.get_config()
  config.dataset.name = args.dataset
  config.dataset.manual_dir = args.manual_dir
  source = input_pipeline.open_source(config.dataset, "train")
  print(f"{args.dataset}/train ({len(source)} images), crop {args.crop}, batch {args.batch}, "
        f"{args.batches} batches per run, median of {args.repeats} runs")
  for workers in (int(w) for w in args.workers.split(",")):
    loader = input_pipeline.TrainLoader(source, args.batch, args.crop, config.input.base_size,
                                        100.0, 40.0, seed=0, workers=workers)
    rates = []
    for epoch in range(args.repeats):
      t0 = time.perf_counter()
      n = 0
      for k, batch in enumerate(loader.batches(epoch)):
        n += batch["image"].shape[0]
        if k + 1 == args.batches:
          break
      rates.append(n / (time.perf_counter() - t0))
    print(f"workers {workers}: {statistics.median(rates):7.1f} images/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
  main()
