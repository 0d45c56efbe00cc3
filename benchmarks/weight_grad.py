"""One convolution's weight gradient: XLA's against forms without its layout copies (issue 10).

The profile (benchmarks/profile_step.py) puts 25-35% of the CPU train step in layout copies that
XLA makes for each convolution's weight gradient. This measures whether a `custom_vjp` convolution
computing that gradient another way could win: for the model's largest convolution (batch 8,
256², 16 -> 16 channels, 3 x 3), the gradient with respect to the kernel by
  xla     jax.vjp of lax.conv_general_dilated (XLA's form, with its transposed copies);
  flat    9 dot_generals, one per kernel tap, over the padded input's shifted NHWC view
          contracting N, H, W (a GEMM with a transposed operand, no layout change);
  im2col  one einsum over the 9 shifted views concatenated on channels;
  taps    9 einsums over slices.
Prints each form's error against XLA's (relative) and its median ms over --repeats alternating
runs (compilation excluded).

  python benchmarks/weight_grad.py [--repeats 5]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

N, H, W, C, O = 8, 256, 256, 16, 16
TAPS = [(i, j) for i in range(3) for j in range(3)]


def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla(x, dy):
  _, vjp = jax.vjp(lambda w: conv(x, w), jnp.zeros((3, 3, C, O), x.dtype))
  return vjp(dy)[0]


def _padded(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def flat(x, dy):
  xp, g = _padded(x), dy.reshape(-1, O)
  outs = [jax.lax.dot_general(jax.lax.dynamic_slice(xp, (0, i, j, 0), (N, H, W, C)).reshape(-1, C),
                              g, (((0,), (0,)), ((), ()))) for i, j in TAPS]
  return jnp.stack(outs).reshape(3, 3, C, O)


def im2col(x, dy):
  xp = _padded(x)
  p = jnp.concatenate([xp[:, i:i + H, j:j + W] for i, j in TAPS], -1)
  return jnp.einsum("nhwk,nhwo->ko", p, dy).reshape(3, 3, C, O)


def taps(x, dy):
  xp = _padded(x)
  return jnp.stack([jnp.einsum("nhwc,nhwo->co", xp[:, i:i + H, j:j + W], dy)
                    for i, j in TAPS]).reshape(3, 3, C, O)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((N, H, W, C), np.float32))
  dy = jnp.asarray(rng.random((N, H, W, O), np.float32))
  forms = {f.__name__: jax.jit(f) for f in (xla, flat, im2col, taps)}
  ref = forms["xla"](x, dy)
  times = {k: [] for k in forms}
  for _ in range(args.repeats):  # alternating, so a noisy machine slows every form alike
    for k, f in forms.items():
      t = time.perf_counter()
      jax.block_until_ready(f(x, dy))
      times[k].append(time.perf_counter() - t)
  print(f"{jax.devices()[0].platform}; batch {N}, {H}x{W}, {C} -> {O} channels, 3x3; "
        f"median of {args.repeats} alternating runs")
  for k, f in forms.items():
    err = float(jnp.max(jnp.abs(f(x, dy) - ref)) / jnp.max(jnp.abs(ref)))
    ms = 1e3 * statistics.median(times[k])
    print(f"{k:7s} {ms:8.1f} ms  ({ms / (1e3 * statistics.median(times['xla'])):.2f}x XLA's)  "
          f"error vs XLA {err:.1e}")


if __name__ == "__main__":
  main()
