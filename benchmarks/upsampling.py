"""The three upsampling layers of EAAU-Net: jitted forward+backward time of the whole network.

  transpose_2x2  the paper's 4x4 stride-2 transposed conv, computed as a 2x2 conv + depth-to-space
  transpose_3x3  the same as a 3x3 conv (zeros at 5 taps a phase) + depth-to-space
                 (`transpose`, the configs' choice, is the faster of the two on the backend)
  transpose_xla  the same layer through nn.ConvTranspose (XLA's transposed convolution)
  subpixel       a 3x3 conv to 4C + depth-to-space (more parameters, a superset of the layer)

XLA's transposed convolutions can be slow (jax issue 23783). Runs alternate between the variants
(round-robin), so a busy machine slows all alike; prints the median of --repeats timed runs per
variant and the ratios within this one run.

  python benchmarks/upsampling.py [--batch 8 --size 256 --repeats 7]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after the checkout is on the path)
import jax.numpy as jnp  # noqa: E402

from eaau_jax import losses, models  # noqa: E402


def step_fn(model):
  def loss(params, stats, x, t):
    logits, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                            rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    return losses.soft_iou_loss(logits, t)
  return jax.jit(jax.grad(loss))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--repeats", type=int, default=7)
  args = ap.parse_args()
  x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, 1))
  t = (jax.random.uniform(jax.random.key(2), x.shape) > 0.99).astype(jnp.float32)
  print(f"device: {jax.devices()[0].device_kind}; batch {args.batch} x {args.size}^2; "
        f"median of {args.repeats} runs")
  kinds = ("transpose_2x2", "transpose_3x3", "transpose_xla", "subpixel")
  runs, times = {}, {k: [] for k in kinds}
  for kind in kinds:
    model = models.EAAUNet(upsampling=kind)
    v = model.init(jax.random.key(0), x[:1])
    f = step_fn(model)
    jax.block_until_ready(f(v["params"], v["batch_stats"], x, t))  # compile
    runs[kind] = (f, v)
  for _ in range(args.repeats):
    for kind in kinds:
      f, v = runs[kind]
      t0 = time.perf_counter()
      jax.block_until_ready(f(v["params"], v["batch_stats"], x, t))
      times[kind].append(time.perf_counter() - t0)
  medians = {k: statistics.median(times[k]) for k in kinds}
  for kind in kinds:
    print(f"{kind:14s} params {models.count_params(runs[kind][1]['params']):>8,d}  "
          f"fwd+bwd {1e3 * medians[kind]:8.1f} ms  ({args.batch / medians[kind]:.1f} img/s)")
  w = models.transposed_conv_window(jax.default_backend())
  base = f"transpose_{w}x{w}"  # what `transpose` computes on this backend
  for kind in kinds:
    if kind != base:
      print(f"{kind} / {base} time ratio: {medians[kind] / medians[base]:.2f}")


if __name__ == "__main__":
  main()
