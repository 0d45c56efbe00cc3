"""IPI under the acm protocol for several L (lambda = L / sqrt(min(m, n))), issue 9's gap to
Table 3.

Table 2 gives L = 4.5; natively, L = 1 reproduces Table 3's IPI IoU (README, classical section).
This script checks the same at 512 x 512: for every --every-th SIRST idx_320 test image (acm
resize, grey 0..255), one image per call as `compare` solves it, the paper's adaptive-threshold
mask for each L, and prints the split-level IoU (intersections over unions summed), nIoU (mean
per-image IoU), pixel precision and recall. ~30 s per image and L on a 2-core CPU.

  python benchmarks/ipi_lambda.py --L 4.5,1 --every 8
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks.low_rank_consistency import acm_images  # pylint: disable=g-import-not-at-top
from eaau_jax import classical  # pylint: disable=g-import-not-at-top


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--L", default="4.5,1", help="comma-separated values of L")
  ap.add_argument("--every", type=int, default=8, help="every N-th test image (0, N, 2N, ...)")
  ap.add_argument("--count", type=int, default=96, help="test images to draw from")
  ap.add_argument("--size", type=int, default=512, help="the acm base size")
  args = ap.parse_args()
  ls = [float(v) for v in args.L.split(",")]
  indices = list(range(0, args.count, args.every))
  images, gts = acm_images(indices, args.size)
  solve = {L: classical.compiled("ipi", batched=False, L=L) for L in ls}
  counts = {L: np.zeros(4) for L in ls}  # intersection, union, predicted, true pixels
  per_image = {L: [] for L in ls}
  for k, i in enumerate(indices):
    t0 = time.perf_counter()
    for L in ls:
      m = np.asarray(classical.adaptive_mask(solve[L](jnp.asarray(images[k]))))
      c = np.array([(m & gts[k]).sum(), (m | gts[k]).sum(), m.sum(), gts[k].sum()])
      counts[L] += c
      per_image[L].append(c[0] / max(c[1], 1))
    print(f"image {i}: " + ", ".join(f"L={L:g} IoU {per_image[L][-1]:.3f}" for L in ls)
          + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
  print(f"{len(indices)} SIRST idx_320 test images (every {args.every}-th from 0), "
        f"acm {args.size}^2, adaptive threshold T = 0.5 mean + 0.5 max:")
  for L in ls:
    inter, union, pred, true = counts[L]
    print(f"  L = {L:g}: IoU {inter / union:.4f}, nIoU {np.mean(per_image[L]):.4f}, "
          f"P {inter / max(pred, 1):.3f}, R {inter / max(true, 1):.3f}")


if __name__ == "__main__":
  main()
