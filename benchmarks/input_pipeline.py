"""Training-pipeline throughput (images/s) on this machine: read, augment, normalise, batch.

  python benchmarks/input_pipeline.py [--dataset sirst --crop 480 --batches 16 --repeats 5]
      [--workers 1,2,4] [--processes 0,2] [--mode epoch|run] [--data_dir DIR --manual_dir '']

For each number of grain worker processes (0: threads in this process only) and of prefetch
threads, prints the median images/s over --repeats runs of --batches batches, so one can compare
with the model's step rate (benchmarks/upsampling.py) and see whether the pipeline could starve it.
--mode epoch: each run reads a different epoch through a fresh ``loader.batches(epoch)``, its
start included (how this script measured the thread-pool loader before grain). --mode run: one
iterator over the run, as training reads it; the time to its first batch (worker processes
starting) is printed apart and the runs are consecutive windows after it.
"""

import argparse
import os
import statistics
import sys
import time

from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from configs import sirst  # noqa: E402
from eaau_jax import input_pipeline  # noqa: E402


def _images(batches, n: int) -> int:
  count = 0
  for k, batch in enumerate(batches):
    count += batch["image"].shape[0]
    if k + 1 == n:
      break
  return count


def per_epoch(loader, args) -> list:
  """images/s of a fresh iterator per run (one epoch each), its start included."""
  rates = []
  for epoch in range(args.repeats):
    t0 = time.perf_counter()
    batches = loader.batches(epoch)
    n = _images(batches, args.batches)
    rates.append(n / (time.perf_counter() - t0))
    batches.close()
  return rates


def per_window(loader, args) -> tuple[float, list]:
  """(seconds to the first batch, images/s of consecutive windows) of one run-long iterator."""
  epochs = -(-(args.repeats * args.batches + 1) // loader.steps_per_epoch)
  it = loader.iterator(0, epochs)
  try:
    t0 = time.perf_counter()
    _images(it, 1)
    first = time.perf_counter() - t0
    rates = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      rates.append(_images(it, args.batches) / (time.perf_counter() - t0))
  finally:
    it.close()
  return first, rates


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--dataset", default="sirst", help="sirst (needs --manual_dir) or synthetic")
  ap.add_argument("--manual_dir", default="../shared/datasets/sirst",
                  help="SIRST's folder (built into --data_dir on first use; '' when built)")
  ap.add_argument("--data_dir", default=None, help="TFDS data_dir (default: the config's)")
  ap.add_argument("--crop", type=int, default=480)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--batches", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--workers", default="1,2,4", help="prefetch threads (per worker process)")
  ap.add_argument("--processes", default="0", help="grain worker processes (mp_prefetch)")
  ap.add_argument("--mode", default="epoch", choices=("epoch", "run"))
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)
  config = sirst.get_config()
  config.dataset.name = args.dataset
  config.dataset.manual_dir = args.manual_dir
  if args.data_dir is not None:
    config.dataset.data_dir = args.data_dir
  source = input_pipeline.open_source(config.dataset, "train")
  print(f"{args.dataset}/train ({len(source)} images), crop {args.crop}, batch {args.batch}, "
        f"{args.batches} batches per run, median of {args.repeats} runs, mode {args.mode}")
  for processes in (int(p) for p in args.processes.split(",")):
    for workers in (int(w) for w in args.workers.split(",")):
      loader = input_pipeline.TrainLoader(source, args.batch, args.crop, config.input.base_size,
                                          100.0, 40.0, seed=0, workers=workers,
                                          worker_processes=processes)
      first = ""
      if args.mode == "epoch":
        rates = per_epoch(loader, args)
      else:
        seconds, rates = per_window(loader, args)
        first = f", first batch after {seconds:.1f} s"
      print(f"processes {processes} x workers {workers}: {statistics.median(rates):7.1f} "
            f"images/s (runs: {', '.join(f'{r:.0f}' for r in rates)}){first}", flush=True)


if __name__ == "__main__":
  main()
