"""The nine classical detectors on SIRST test through the shared metrics, both protocols.

Each score map goes through ``classical.score_to_logits`` (> 0 exactly on the paper's adaptive mask
T = 0.5 mean + 0.5 max, monotone in the score), then ``metrics.SegmentationMetrics`` (IoU, nIoU,
AP, F-area from the PR curve of the scores) and ``metrics.PdFa``, exactly as the CNN is scored.
ms/image: the median over images of the compiled detector's run (compile excluded), on this host.

  python benchmarks/classical_sirst.py [--root ../shared/datasets/sirst] [--split idx_320]
      [--protocols native,acm] [--detectors tophat,...] [--limit N] [--out benchmarks/results]

Native resolution: images differ in size, so the window-based detectors run on the image
mirror-padded up to the next multiple of --bucket (one compile per bucket) and their score is
cropped back (the same as their own mirrored borders up to the padding depth); IPI and RIPT,
whose patch matrix depends on the whole image, run at the exact size (one compile per shape).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from eaau_jax import classical, imageio, input_pipeline, metrics  # noqa: E402

EXACT_SHAPE = {"ipi", "ript"}


def load(root, split, subset):
  ids = open(os.path.join(root, split, f"{subset}.txt")).read().split()
  return [imageio.read_pair(os.path.join(root, "images", f"{i}.png"),
                            os.path.join(root, "masks", f"{i}_pixels0.png")) for i in ids], ids


class Runner:
  """Compiled detector per input shape, timed without compilation."""

  def __init__(self, name, bucket):
    self.name, self.bucket, self.cache = name, bucket, {}

  def __call__(self, x):
    h, w = x.shape
    if self.name not in EXACT_SHAPE and self.bucket > 1:
      ph, pw = -h % self.bucket, -w % self.bucket
      x = np.pad(x, ((0, ph), (0, pw)), mode="symmetric")
    if x.shape not in self.cache:
      f = classical.compiled(self.name, batched=False)
      self.cache[x.shape] = f.lower(jax.ShapeDtypeStruct(x.shape, np.float32)).compile()
    start = time.perf_counter()
    score = jax.block_until_ready(self.cache[x.shape](x))
    return np.asarray(score)[:h, :w], time.perf_counter() - start


@jax.jit
def _scored(score, valid, mask):
  """Logits of a zero-padded score map and its segmentation counts (one compile per bucket)."""
  logits = classical.score_to_logits(score, valid=valid)[None, ..., None]
  seg = metrics.SegmentationMetrics.from_model_output(logits, mask[None], valid[None, ..., None])
  return logits, seg


def _pad_to(a, shape):
  return np.pad(a, [(0, s - n) for s, n in zip(shape, a.shape)])


def evaluate(name, pairs, protocol, bucket, base_size=512):
  run = Runner(name, bucket)
  seg, pdfa, times = metrics.SegmentationMetrics.empty(), metrics.PdFa(), []
  for image, mask in pairs:
    image, mask = input_pipeline.eval_transform(image, mask, protocol, base_size)
    score, dt = run(image[..., 0].astype(np.float32))
    times.append(dt)
    h, w = score.shape
    shape = (h + (-h % 64), w + (-w % 64))  # metrics on 64-multiples: few shapes to compile
    valid = _pad_to(np.ones((h, w), np.float32), shape)
    m = _pad_to(mask.astype(np.float32), shape + (1,))
    logits, s = _scored(_pad_to(score, shape), valid, m)
    seg = seg.merge(jax.device_get(s))
    logits = np.asarray(logits)[:, :h, :w]
    pdfa = pdfa.merge(metrics.PdFa.from_model_output(logits, mask[None].astype(np.float32)))
  out = seg.compute()
  out.update(pdfa.compute())
  out["ms_per_image"] = 1e3 * statistics.median(times)
  return out


def table(results, protocol):
  rows = ["| detector | IoU | nIoU | Pd | Fa (1e-6) | AP | F-measure | F-area | ms/image | paper IoU / nIoU / s |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for name, r in results.items():
    p = classical.PAPER_TABLE3[name]
    rows.append(f"| {name} | {r['iou']:.3f} | {r['niou']:.3f} | {r['pd']:.3f} | {1e6 * r['fa']:.1f} | "
                f"{r['ap']:.3f} | {r['f_measure']:.3f} | {r['f_area']:.3f} | {r['ms_per_image']:.1f} | "
                f"{p[0]:.3f} / {p[1]:.3f} / {p[2]} |")
  return f"### protocol `{protocol}`\n\n" + "\n".join(rows) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--root", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets",
                                                                  "sirst")))
  ap.add_argument("--split", default="idx_320")
  ap.add_argument("--subset", default="test")
  ap.add_argument("--protocols", default="native,acm")
  ap.add_argument("--detectors", default=",".join(classical.DETECTORS))
  ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
  ap.add_argument("--bucket", type=int, default=32)
  ap.add_argument("--skip", default="", help="protocol:detector pairs to leave out, e.g. acm:ipi "
                  "(IPI/RIPT at 512 x 512 cost ~1 min per image on 2 cores)")
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
  args = ap.parse_args()
  if not os.path.isdir(os.path.join(args.root, args.split)):
    print(f"no SIRST copy at {args.root} (expected {args.split}/{args.subset}.txt there); "
          "pass --root", file=sys.stderr)
    return 0
  pairs, ids = load(args.root, args.split, args.subset)
  if args.limit:
    pairs, ids = pairs[:args.limit], ids[:args.limit]
  report = {"split": args.split, "subset": args.subset, "images": len(ids),
            "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "protocols": {}}
  stem = os.path.join(args.out, f"classical_sirst_{args.split}")
  md = [f"# Classical detectors on SIRST {args.split} {args.subset} ({len(ids)} images)\n",
        "Adaptive threshold T = 0.5 mean + 0.5 max per image; curves from the score maps. ms/image: "
        f"median, compiled, {jax.devices()[0].platform} with {os.cpu_count()} cores, shared and "
        "noisy.\n"]
  for protocol in args.protocols.split(","):
    res = {}
    for name in args.detectors.split(","):
      if f"{protocol}:{name}" in args.skip.split(","):
        continue
      start = time.time()
      res[name] = evaluate(name, pairs, protocol, args.bucket)
      print(f"{protocol:6s} {name:9s} IoU {res[name]['iou']:.3f} nIoU {res[name]['niou']:.3f} "
            f"AP {res[name]['ap']:.3f} {res[name]['ms_per_image']:.1f} ms/img "
            f"({time.time() - start:.0f} s)", flush=True)
      report["protocols"].setdefault(protocol, {})[name] = res[name]
      with open(stem + ".json", "w") as fh:  # written as it goes: partial runs keep their rows
        json.dump(report, fh, indent=1)
    md.append(table(res, protocol))
  with open(stem + ".md", "w") as fh:
    fh.write("\n".join(md))
  print("\n".join(md))
  return 0


if __name__ == "__main__":
  sys.exit(main())
