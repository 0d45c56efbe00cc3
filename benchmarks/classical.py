"""Speed of the nine classical detectors: ms/image on SIRST test images on this host's CPU.

Each detector is compiled once per image shape (compile time excluded) and run --repeats times on
each of the first --images test images at native resolution; the row is the median over all those
runs, next to the paper's CPU seconds (Table 3; MATLAB, the authors' CPU). Also measured: the two
choices made for speed, FKRW's random-walker solve (batched dense vs CG) and the SVD inside IPI/RIPT
(Gram + eigh vs jnp.linalg.svd on a 2500 x 560 patch matrix, a 320 x 240 image's).
The machine is shared: medians vary run to run; rerun on a quiet machine for reportable numbers.

  python benchmarks/classical.py [--root ../shared/datasets/sirst] [--images 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from eaau_jax import classical, imageio  # noqa: E402
from eaau_jax.classical import low_rank  # noqa: E402


def timed(f, x, repeats):
  f = jax.jit(f).lower(jax.ShapeDtypeStruct(x.shape, x.dtype)).compile()
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(x))
    out.append(time.perf_counter() - start)
  return out


def images(root, split, n):
  ids = open(os.path.join(root, split, "test.txt")).read().split()[:n]
  return [imageio.read_pair(os.path.join(root, "images", f"{i}.png"),
                            os.path.join(root, "masks", f"{i}_pixels0.png"))[0][..., 0]
          .astype(np.float32) for i in ids]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--root", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets",
                                                                  "sirst")))
  ap.add_argument("--split", default="idx_320")
  ap.add_argument("--images", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--detectors", default=",".join(classical.DETECTORS))
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "classical_speed"))
  args = ap.parse_args()
  if not os.path.isdir(os.path.join(args.root, args.split)):
    print(f"no SIRST copy at {args.root}; pass --root", file=sys.stderr)
    return 0
  xs = images(args.root, args.split, args.images)
  shapes = sorted({x.shape for x in xs})
  print(f"{jax.devices()[0].platform}, {os.cpu_count()} cores (shared, noisy); {len(xs)} SIRST "
        f"{args.split} test images {shapes[0]}..{shapes[-1]}, {args.repeats} runs each")
  rows, report = [], {"cpu_count": os.cpu_count(), "images": len(xs), "detectors": {}}
  for name in args.detectors.split(","):
    f = functools.partial(classical.DETECTORS[name])
    ts = [t for x in xs for t in timed(f, x, args.repeats)]
    ms, paper = 1e3 * statistics.median(ts), classical.PAPER_TABLE3[name][2]
    report["detectors"][name] = {"ms_median": ms, "paper_s": paper, "runs": len(ts)}
    rows.append(f"| {name} | {ms:.1f} | {1e3 * paper:.0f} | {1e3 * paper / ms:.1f}x |")
    print(rows[-1], flush=True)
  x = xs[0]
  extra = {}
  for solver in ("dense", "cg"):
    f = functools.partial(classical.DETECTORS["fkrw"], solver=solver)
    extra[f"fkrw_{solver}_ms"] = 1e3 * statistics.median(timed(f, x, args.repeats + 2))
  m = jnp.asarray(np.random.RandomState(0).rand(2500, 560).astype(np.float32))
  for label, f in (("svt_gram_eigh", lambda a: low_rank.svt(a, 1.0)),
                   ("svt_full_svd", lambda a: (lambda u, s, vt: (u * jnp.maximum(s - 1.0, 0)) @ vt)(
                       *jnp.linalg.svd(a, full_matrices=False)))):
    extra[f"{label}_ms"] = 1e3 * statistics.median(timed(f, m, args.repeats + 2))
  report["choices"] = extra
  md = ["| detector | ms/image (this CPU, median) | paper s/image as ms (Table 3) | speed-up |",
        "|---|---:|---:|---:|"] + rows
  md.append("\nChoices (ms, median): " + ", ".join(f"{k} {v:.1f}" for k, v in extra.items()))
  text = "\n".join(md)
  print(text)
  with open(args.out + ".md", "w") as fh:
    fh.write(f"{jax.devices()[0].platform}, {os.cpu_count()} cores shared with other jobs: noisy.\n\n"
             + text + "\n")
  with open(args.out + ".json", "w") as fh:
    json.dump(report, fh, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
