"""The released ACM-U-Net (and ALCNet) weights, imported into our Flax nets, on SIRST idx_320 test.

  python benchmarks/acm_weights_check.py [--sirst DIR] [--weights FILE] [--protocols acm native]
  python benchmarks/acm_weights_check.py --model alcnet --protocols acm \
      --weights <open-alcnet>/params/BottomUpLocal_r_1_b_4_0.7614.params

Images are read as ACM's data loader read them (``Image.open(p).convert('RGB')``: 159 SIRST images
have slightly unequal channels, so this is not our grey image repeated), resized per channel to
512 x 512 (PIL bilinear, mask nearest) under the ``acm`` protocol or kept as stored (``native``),
/255 and normalised with the ImageNet mean/std; BatchNorm uses the running statistics. Metrics:
``eaau_jax.metrics`` (IoU = sum inter / sum union over the split, logit > 0; nIoU; Pd/Fa).
Measured (2-core CPU): ACM-U-Net acm IoU 0.7435 (9881 / 13289), nIoU 0.7235, Pd 0.961, Fa 7.4e-6
(../shared/docs/protocol.md's figures exactly); native IoU 0.6966 (2675 / 3840), nIoU 0.6750,
Pd 0.912, Fa 27.5e-6. 82 of the 96 test images have a side that is not a multiple of 4, where the
released MXNet U-Net cannot run (its decoder sizes do not match the skips); ours crops the
upsampled map to the skip, padding the input to a multiple of 4 instead gives 0.7001 / 0.6731 /
0.902 / 26.2e-6, and protocol.md's PyTorch port (0.6944 / 0.6679 / 0.902 / 29.2e-6) did yet
another thing: native figures of this net depend on that choice. ALCNet's released weights
(acm): IoU 0.7406 (9982 / 13478), nIoU 0.7200, Pd 0.961, Fa 15.3e-6, the counts of the
predictions open-alcnet ships (its file name says 0.7614).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from PIL import Image  # noqa: E402

from eaau_jax import baselines, imageio, input_pipeline, metrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIRST = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "sirst"))
ACM_WEIGHTS = os.path.normpath(os.path.join(
    ROOT, "..", "shared", "weights", "acm",
    "0.7442-ResUNet_AsymBi_DENTIST_Puma1_GPU_0-IoU-288-best.params"))


def split_ids(sirst: str, split: str = "idx_320/test.txt") -> list[str]:
  with open(os.path.join(sirst, split)) as f:
    return [line.strip() for line in f if line.strip()]


def load_example(sirst: str, image_id: str, protocol: str, base_size: int = 512):
  """(normalised float32 (H, W, 3), {0,1} uint8 (H, W, 1)) as ACM's ``testval`` loader made them."""
  rgb = np.asarray(Image.open(os.path.join(sirst, "images", f"{image_id}.png")).convert("RGB"))
  mask = imageio.read_mask(os.path.join(sirst, "masks", f"{image_id}_pixels0.png"))
  rgb, mask = input_pipeline.eval_transform(rgb, mask, protocol, base_size)
  return baselines.imagenet_normalize(rgb), mask


def evaluate(model, variables, sirst: str, ids: list[str], protocol: str, batch: int = 8) -> dict:
  """IoU, nIoU, Pd, Fa of ``model`` over ``ids``. Under ``acm`` every image is 512 x 512, so one
  jitted batch shape; under ``native`` each image runs alone at its own size (eagerly: 93 of the
  96 test images have distinct sizes, and padding would change the nets' global pooling)."""
  forward = lambda x: model.apply(variables, x, train=False)
  if protocol == "acm":
    forward = jax.jit(forward)
  else:
    batch = 1
  seg, pdfa = metrics.SegmentationMetrics.empty(), metrics.PdFa()
  for start in range(0, len(ids), batch):
    pairs = [load_example(sirst, i, protocol) for i in ids[start:start + batch]]
    x = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    n = len(pairs)
    if protocol == "acm" and n < batch:  # keep the one compiled shape; padding images weigh 0
      x = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)])
      masks = np.concatenate([masks, np.zeros((batch - n,) + masks.shape[1:], masks.dtype)])
    weight = (np.arange(len(x)) < n).astype(np.float32)
    logits = np.asarray(forward(jnp.asarray(x)))
    m = metrics.SegmentationMetrics.from_model_output(jnp.asarray(logits[:n]),
                                                      jnp.asarray(masks[:n]))
    seg = seg.merge(jax.tree_util.tree_map(np.asarray, m))
    pdfa = pdfa.merge(metrics.PdFa.from_model_output(logits, masks, image_weight=weight))
  out = seg.compute()
  pf = pdfa.compute()
  return {"iou": float(out["iou"]), "niou": float(out["niou"]), "pd": pf["pd"], "fa": pf["fa"],
          "inter": int(seg.tp), "union": int(seg.tp + seg.fp + seg.fn), "images": len(ids)}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sirst", default=SIRST)
  ap.add_argument("--weights", default=ACM_WEIGHTS)
  ap.add_argument("--model", default="acm_unet", choices=sorted(baselines.BASELINES))
  ap.add_argument("--split", default="idx_320/test.txt")
  ap.add_argument("--protocols", nargs="+", default=["acm", "native"])
  ap.add_argument("--batch", type=int, default=8)
  args = ap.parse_args(argv)
  model = baselines.BASELINES[args.model]()
  variables = baselines.load_released(model, args.weights)
  ids = split_ids(args.sirst, args.split)
  print(f"{args.model} <- {os.path.basename(args.weights)}; {args.split}: {len(ids)} images; "
        f"device {jax.devices()[0].device_kind}")
  for protocol in args.protocols:
    t = time.time()
    r = evaluate(model, variables, args.sirst, ids, protocol, args.batch)
    print(f"{protocol:>6}: IoU {r['iou']:.4f} ({r['inter']} / {r['union']})  nIoU {r['niou']:.4f}  "
          f"Pd {r['pd']:.3f}  Fa {r['fa'] * 1e6:.1f}e-6  [{time.time() - t:.0f} s]", flush=True)


if __name__ == "__main__":
  main()
