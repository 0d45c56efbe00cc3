"""Transposed conv vs sub-pixel conv upsampling in EAAU-Net: jitted forward+backward time.

XLA's transposed convolutions can be slow (jax issue 23783); this measures the whole network with
each upsampler on whatever device JAX sees. Prints the median of --repeats timed runs per variant
and the ratio within this one run.

  python benchmarks/upsampling.py [--batch 8 --size 256 --repeats 7]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from eaau_jax import losses, models


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
  medians = {}
  for kind in ("transpose", "subpixel"):
    model = models.EAAUNet(upsampling=kind)
    v = model.init(jax.random.key(0), x[:1])
    f = step_fn(model)
    jax.block_until_ready(f(v["params"], v["batch_stats"], x, t))  # compile
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(f(v["params"], v["batch_stats"], x, t))
      times.append(time.perf_counter() - t0)
    medians[kind] = statistics.median(times)
    print(f"{kind:10s} params {models.count_params(v['params']):>8,d}  "
          f"fwd+bwd {1e3 * medians[kind]:8.1f} ms  ({args.batch / medians[kind]:.1f} img/s)")
  print(f"transpose / subpixel time ratio: {medians['transpose'] / medians['subpixel']:.2f}")


if __name__ == "__main__":
  main()
