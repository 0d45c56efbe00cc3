"""Shared jnp building blocks of the classical detectors: padded shifts and window reductions.

Every detector works on one float32 image (H, W); batches come from ``jax.vmap``. Borders are padded
with ``mode="symmetric"`` (NumPy's name; SciPy's ``mode="reflect"``, MATLAB's ``'symmetric'``) unless a
detector says otherwise, so a window at the border sees a mirror image rather than zeros, which would
make every border pixel look like a bright target.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PAD_MODE = "symmetric"


def as_image(image) -> jax.Array:
  """(H, W) float32; a trailing channel axis of size 1 is dropped."""
  x = jnp.asarray(image, jnp.float32)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2:
    raise ValueError(f"expected one (H, W) image, got shape {x.shape}; vmap for a batch")
  return x


def pad(x, p: int, mode: str = PAD_MODE):
  """Pad both spatial axes by ``p``; mirror modes fall back to ``edge`` when ``p`` exceeds the image."""
  if p <= 0:
    return x
  if mode in ("symmetric", "reflect") and p > min(x.shape):
    mode = "edge"
  return jnp.pad(x, p, mode=mode)


def shifted(xp, p: int, dy: int, dx: int, shape):
  """x[i + dy, j + dx] for every pixel (i, j), from ``xp = pad(x, p)``."""
  h, w = shape
  return xp[p + dy:p + dy + h, p + dx:p + dx + w]


def window_reduce(x, size: int, offsets, op: str = "sum", mode: str = PAD_MODE):
  """Reductions of ``x`` over size x size cells whose top-left corner is (i + dy, j + dx).

  ``offsets`` is a list of (dy, dx); returns an array (len(offsets), H, W). One reduce_window over
  the padded image serves every offset (each offset is then a slice of it).
  """
  p = max([size] + [abs(d) + size for o in offsets for d in o])
  xp = pad(x, p, mode)
  init, fn = {"sum": (0.0, jax.lax.add), "max": (-jnp.inf, jax.lax.max),
              "min": (jnp.inf, jax.lax.min)}[op]
  r = jax.lax.reduce_window(xp, init, fn, (size, size), (1, 1), "VALID")
  return jnp.stack([shifted(r, p, dy, dx, x.shape) for dy, dx in offsets])


def centred(size: int) -> int:
  """Top-left offset of a size x size cell centred on a pixel (even sizes: one more row below)."""
  return -((size - 1) // 2)


def box_mean(x, size: int, mode: str = PAD_MODE):
  c = centred(size)
  return window_reduce(x, size, [(c, c)], "sum", mode)[0] / float(size * size)


def neighbour_offsets(cell: int):
  """Top-left offsets of the 8 cells around a centred cell, clockwise from top-left; pairs i, i+4
  are opposite (MPCM's and RLCM's layout)."""
  c = centred(cell)
  dirs = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
  return [(c + dy * cell, c + dx * cell) for dy, dx in dirs]


def gaussian_kernel(size: int, sigma: float):
  """MATLAB fspecial('gaussian', [size size], sigma), as a (size, size) array summing to 1."""
  r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  g = jnp.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma ** 2))
  return g / jnp.sum(g)


def correlate(x, kernel, mode: str = PAD_MODE):
  """Same-size 2-D correlation (MATLAB imfilter) of x with an odd-sized kernel."""
  k = kernel.shape[0]
  p = k // 2
  xp = pad(x, p, mode)
  out = jax.lax.conv_general_dilated(xp[None, None], jnp.asarray(kernel, jnp.float32)[None, None],
                                     (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST)
  return out[0, 0]


def gradient(x):
  """np.gradient / MATLAB gradient: central differences inside, one-sided at the borders.
  Returns (gy, gx)."""
  def along(a, axis):
    a = jnp.moveaxis(a, axis, 0)
    inner = (a[2:] - a[:-2]) / 2.0
    g = jnp.concatenate([a[1:2] - a[:1], inner, a[-1:] - a[-2:-1]], axis=0)
    return jnp.moveaxis(g, 0, axis)
  return along(x, 0), along(x, 1)
