"""How much IPI's and RIPT's float32 score maps depend on how they are solved (issue 9).

For SIRST test images under the acm protocol (resized to --size, grey 0..255), solves each image
three ways and compares the score maps and the paper's adaptive-threshold masks:
- ``batched``: all the chosen images in one vmapped call (classical.compiled(name, batched=True));
- ``alone``: one image per call, unbatched (what ``compare`` now does for these detectors);
- ``float64`` (IPI only, --float64): a plain NumPy inexact ALM with a full float64 SVD
  (tests/test_classical.py's reference solver) on the same patch matrix.
Prints, per image and pair: max |difference| / max score, mask pixels, pixels that differ, IoU
against the ground truth. Needs the SIRST build (tfds_sirst); a 512 x 512 image costs ~30 s (IPI)
or ~60 s (RIPT) per solve on a 2-core CPU, float64 a few minutes.

  python benchmarks/low_rank_consistency.py --detector ipi --images 0,1,2,3 [--float64]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import sirst  # pylint: disable=g-import-not-at-top
from eaau_jax import classical, input_pipeline  # pylint: disable=g-import-not-at-top
from eaau_jax.classical import low_rank  # pylint: disable=g-import-not-at-top


def acm_images(indices, size: int):
  """(images (K, size, size) in 0..255, ground-truth masks) as compare's acm loader gives them."""
  cfg = sirst.get_config()
  cfg.dataset.color = "grey"
  loader = input_pipeline.EvalLoader(input_pipeline.open_source(cfg.dataset, "test"), 1, 0.0, 1.0,
                                     1, 1, 0, 1, "acm", size)
  pairs = [loader.prepare(loader.source[i]) for i in indices]
  return np.stack([p[0][..., 0] for p in pairs]), np.stack([p[1][..., 0] > 0 for p in pairs])


def float64_solve(d, lam):
  """ipi's ``solve`` hook: the float64 NumPy inexact ALM (tests' reference) on the same matrix."""
  from test_classical import numpy_ialm  # pylint: disable=g-import-not-at-top
  a, e = numpy_ialm(np.asarray(d, np.float64), lam)
  return a, e, -1


def ipi_float64(image):
  """IPI's score map, its sparse part from the float64 solve (ipi's patches, lambda, rebuild)."""
  return np.asarray(low_rank.ipi(jnp.asarray(image, jnp.float32), solve=float64_solve))


def compare_maps(name_a, a, name_b, b, gt) -> str:
  ma, mb = (np.asarray(classical.adaptive_mask(s)) for s in (a, b))
  iou = lambda m: (m & gt).sum() / max((m | gt).sum(), 1)
  apart = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
  return (f"{name_a} vs {name_b}: max|diff|/max {apart:.3g}; "
          f"mask px {ma.sum()} / {mb.sum()}, {(ma != mb).sum()} differ; "
          f"IoU {iou(ma):.3f} / {iou(mb):.3f}")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--detector", choices=classical.BATCH_SENSITIVE, default="ipi")
  ap.add_argument("--images", default="0,1,2,3", help="test-split indices")
  ap.add_argument("--size", type=int, default=512, help="the acm base size")
  ap.add_argument("--float64", action="store_true", help="IPI only: also the float64 NumPy solve")
  args = ap.parse_args()
  indices = [int(i) for i in args.images.split(",")]
  images, gts = acm_images(indices, args.size)
  t0 = time.perf_counter()
  batched = np.asarray(classical.compiled(args.detector, batched=True)(jnp.asarray(images)))
  print(f"{args.detector}, {len(indices)} images at {args.size}^2: batched "
        f"{time.perf_counter() - t0:.1f} s (compile included)", flush=True)
  alone_fn = classical.compiled(args.detector, batched=False)
  for k, i in enumerate(indices):
    t0 = time.perf_counter()
    alone = np.asarray(alone_fn(jnp.asarray(images[k])))
    print(f"image {i} ({time.perf_counter() - t0:.1f} s alone): "
          + compare_maps("batched", batched[k], "alone", alone, gts[k]), flush=True)
    if args.float64 and args.detector == "ipi":
      t0 = time.perf_counter()
      ref = ipi_float64(images[k])
      print(f"image {i} ({time.perf_counter() - t0:.0f} s float64): "
            + compare_maps("alone", alone, "float64", ref, gts[k]) + "; "
            + compare_maps("batched", batched[k], "float64", ref, gts[k]), flush=True)


if __name__ == "__main__":
  main()
