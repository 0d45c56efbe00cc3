"""One convolution's weight gradient: XLA's against forms without its layout copies (issue 10).

The profile (benchmarks/profile_step.py) puts 25-35% of the CPU train step in layout copies that
XLA makes for each convolution's weight gradient. This measures whether a `custom_vjp` convolution
computing that gradient another way could win: for one 3 x 3 convolution (default the model's
largest: batch 8, 256², 16 -> 16 channels; --shape N,H,W,C,O for another), the gradient with
respect to the kernel by
  xla     jax.vjp of lax.conv_general_dilated (XLA's form, with its transposed copies);
  flat    9 dot_generals, one per kernel tap, over the padded input's shifted NHWC view
          contracting N, H, W (a GEMM with a transposed operand, no layout change);
  im2col  one einsum over the 9 shifted views concatenated on channels;
  taps    9 einsums over slices;
  tiles   input and output gradient on one flattened padded grid, where each tap is a contiguous
          row shift of the input: per tap one batched GEMM over tiles of --tile rows, summed (no
          im2col, no 4-D shifted view; the form a convolution's own kernel would stream).
Every form compiles as the project's steps do (xla_options.jit: XLA's own convolutions on the
CPU); before 2026-11-27 this script used plain jax.jit (YNNPACK's). Prints each form's error
against XLA's (relative) and its median ms over --repeats alternating runs (compilation excluded).

  python benchmarks/weight_grad.py [--repeats 5 --shape 8,128,128,32,32 --tile 4096]
"""

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from eaau_jax import xla_options  # pylint: disable=g-import-not-at-top

TAPS = [(i, j) for i in range(3) for j in range(3)]


def conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla(x, dy):
  _, vjp = jax.vjp(lambda w: conv(x, w), jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype))
  return vjp(dy)[0]


def _padded(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def flat(x, dy):
  n, h, w, c = x.shape
  xp, g = _padded(x), dy.reshape(-1, dy.shape[-1])
  outs = [jax.lax.dot_general(jax.lax.dynamic_slice(xp, (0, i, j, 0), (n, h, w, c)).reshape(-1, c),
                              g, (((0,), (0,)), ((), ()))) for i, j in TAPS]
  return jnp.stack(outs).reshape(3, 3, c, dy.shape[-1])


def im2col(x, dy):
  _, h, w, c = x.shape
  xp = _padded(x)
  p = jnp.concatenate([xp[:, i:i + h, j:j + w] for i, j in TAPS], -1)
  return jnp.einsum("nhwk,nhwo->ko", p, dy).reshape(3, 3, c, dy.shape[-1])


def taps(x, dy):
  _, h, w, c = x.shape
  xp = _padded(x)
  return jnp.stack([jnp.einsum("nhwc,nhwo->co", xp[:, i:i + h, j:j + w], dy)
                    for i, j in TAPS]).reshape(3, 3, c, dy.shape[-1])


def tiles(x, dy, tile=4096):
  """Pixel (n, h, w) of the padded grid is row p = (n (H + 2) + h)(W + 2) + w of a (rows, C)
  array, so tap (i, j) reads row p + i (W + 2) + j: a contiguous shift. The output gradient sits
  on the same grid (zero in the padding), so the sum over p never pairs pixels of two images."""
  n, h, w, c = x.shape
  o = dy.shape[-1]
  rows = n * (h + 2) * (w + 2)
  blocks = -(-rows // tile)
  shift = 2 * (w + 2) + 2  # the largest tap's
  xf = jnp.pad(_padded(x).reshape(rows, c), ((0, blocks * tile - rows + shift), (0, 0)))
  g = jnp.pad(dy, ((0, 0), (0, 2), (0, 2), (0, 0))).reshape(rows, o)
  g = jnp.pad(g, ((0, blocks * tile - rows), (0, 0))).reshape(blocks, tile, o)
  outs = []
  for i, j in TAPS:
    s = i * (w + 2) + j
    xs = jax.lax.slice_in_dim(xf, s, s + blocks * tile).reshape(blocks, tile, c)
    outs.append(jax.lax.dot_general(xs, g, (((1,), (1,)), ((0,), (0,)))).sum(0))
  return jnp.stack(outs).reshape(3, 3, c, o)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--shape", default="8,256,256,16,16", help="N,H,W,C_in,C_out")
  ap.add_argument("--tile", type=int, default=4096, help="rows per GEMM of the tiles form")
  args = ap.parse_args()
  n, h, w, c, o = (int(v) for v in args.shape.split(","))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((n, h, w, c), np.float32))
  dy = jnp.asarray(rng.random((n, h, w, o), np.float32))
  fns = {"xla": xla, "flat": flat, "im2col": im2col, "taps": taps,
         "tiles": functools.partial(tiles, tile=args.tile)}
  forms = {k: xla_options.jit(f) for k, f in fns.items()}
  ref = forms["xla"](x, dy)
  times = {k: [] for k in forms}
  for _ in range(args.repeats):  # alternating, so a noisy machine slows every form alike
    for k, f in forms.items():
      t = time.perf_counter()
      jax.block_until_ready(f(x, dy))
      times[k].append(time.perf_counter() - t)
  print(f"{jax.devices()[0].platform}; batch {n}, {h}x{w}, {c} -> {o} channels, 3x3; "
        f"median of {args.repeats} alternating runs")
  for k, f in forms.items():
    err = float(jnp.max(jnp.abs(f(x, dy) - ref)) / jnp.max(jnp.abs(ref)))
    ms = 1e3 * statistics.median(times[k])
    print(f"{k:7s} {ms:8.1f} ms  ({ms / (1e3 * statistics.median(times['xla'])):.2f}x XLA's)  "
          f"error vs XLA {err:.1e}")


if __name__ == "__main__":
  main()
