"""Host-side cost of one validation pass of the paper's run (issue 10, item 4: the 5-minute run).

configs/sirst.py validates 61 times on SIRST idx_320 val (64 images, `acm` protocol: 512 x 512).
On a GPU the forward pass of those 64 images takes ~0.13 s, but a validation took 1.9 s on the
H100: the rest is the host's. This times the host's parts of ``train.evaluate``, without a model:

  * ``batches``: reading, decoding, resizing and normalising the split into batches
    (``EvalLoader``), the first pass and a later one (a later one is what 60 of the 61 validations
    cost), and a later one of the loader training validates with (``cache=True``: the first
    complete pass is kept, ``config.input.eval_cache_mb``);
  * ``pd_fa``: the target-level Pd/Fa labelling of every image (``metrics.PdFa``) for logits that
    mark the targets plus isolated false pixels at ``--false-rate`` (an early, noisy model: each
    false pixel is a component to label and place).

Medians of ``--repeats`` passes, wall and CPU (process) seconds; on a busy machine the CPU seconds
are the steadier figure.

  python benchmarks/validation_host.py [--repeats 5 --false-rate 5e-4]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from configs import sirst  # pylint: disable=g-import-not-at-top
from eaau_jax import metrics, train  # pylint: disable=g-import-not-at-top


def timed(fn, repeats: int) -> tuple[float, float]:
  """Median (wall s, CPU s) of ``repeats`` calls."""
  walls, cpus = [], []
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    fn()
    walls.append(time.perf_counter() - w)
    cpus.append(time.process_time() - c)
  return statistics.median(walls), statistics.median(cpus)


def noisy_logits(batches: list, false_rate: float, seed: int = 0) -> list:
  """Logits > 0 on every target pixel and on isolated pixels at ``false_rate``."""
  rs = np.random.RandomState(seed)
  return [np.where((b["mask"] > 0) | (rs.rand(*b["mask"].shape) < false_rate), 5.0,
                   -5.0).astype(np.float32) for b in batches]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--false-rate", type=float, default=5e-4)
  ap.add_argument("--sirst", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                  "datasets", "sirst"))
  args = ap.parse_args()
  config = sirst.get_config()
  config.dataset.manual_dir = os.path.abspath(args.sirst)
  _, source, mean, std = train.data_and_stats(config)
  loader = train.make_eval_loader(config, source, mean, std)
  first = timed(lambda: list(loader), 1)
  later = timed(lambda: list(loader), args.repeats)
  kept = train.make_eval_loader(config, source, mean, std, cache=True)
  list(kept)
  cached = timed(lambda: list(kept), args.repeats)
  batches = list(loader)
  logits = noisy_logits(batches, args.false_rate)
  images = sum(int(np.sum(b["weight"])) for b in batches)

  def pd_fa():
    for b, lg in zip(batches, logits):
      metrics.PdFa.from_model_output(lg, b["mask"], b["valid"], image_weight=b["weight"])

  labelled = timed(pd_fa, args.repeats)
  components = sum(metrics.label_components(lg[k, ..., 0] > 0)[1]
                   for lg in logits for k in range(len(lg)))
  print(f"{config.dataset.eval_split} split, {images} images, {loader.protocol} protocol, "
        f"{len(batches)} batches; medians of {args.repeats} (wall s / CPU s):")
  print(f"  batches, first pass:   {first[0]:.3f} / {first[1]:.3f}")
  print(f"  batches, later pass:   {later[0]:.3f} / {later[1]:.3f}")
  print(f"  batches, later pass, cache=True ({config.input.eval_cache_mb} MB allowed): "
        f"{cached[0]:.4f} / {cached[1]:.4f}")
  print(f"  pd_fa ({components} predicted components, false rate {args.false_rate:g}): "
        f"{labelled[0]:.3f} / {labelled[1]:.3f}")


if __name__ == "__main__":
  main()
