"""Filter-based detectors: white top-hat and max-median (3 x 3, the paper's Table 2).

Both return ``image - background``, where the background is a morphological opening (top-hat) or
the max of directional medians (max-median). Borders are mirrored (SciPy ``mode="reflect"``), so
both equal their ``scipy.ndimage`` references (tested).
"""

from __future__ import annotations

import jax.numpy as jnp

from eaau_jax.classical import _ops


def grey_erosion(x, size: int = 3, mode: str = _ops.PAD_MODE):
  c = _ops.centred(size)
  return _ops.window_reduce(x, size, [(c, c)], "min", mode)[0]


def grey_dilation(x, size: int = 3, mode: str = _ops.PAD_MODE):
  # SciPy's dilation reflects the structuring element: for an even size its window is anchored one
  # pixel the other way. For the odd sizes used here both are the centred window.
  c = _ops.centred(size)
  return _ops.window_reduce(x, size, [(c, c)], "max", mode)[0]


def top_hat(image, *, size: int = 3, mode: str = _ops.PAD_MODE):
  """White top-hat with a size x size square: image - dilation(erosion(image)).

  Choice: a square (flat) structuring element, as Table 2's "3x3" says; MATLAB demos often use a
  disk, which at radius 1 is the same 3 x 3 cross minus corners (not used).
  """
  x = _ops.as_image(image)
  return x - grey_dilation(grey_erosion(x, size, mode), size, mode)


def _line_offsets(size: int):
  """Pixel offsets of the horizontal, vertical, diagonal and anti-diagonal lines of a size window."""
  r = [d - size // 2 for d in range(size)]
  return [[(0, d) for d in r], [(d, 0) for d in r], [(d, d) for d in r], [(d, -d) for d in r]]


def max_median(image, *, size: int = 3, clip_negative: bool = False, mode: str = _ops.PAD_MODE):
  """Max-median (Deshpande et al. 1999): image - max over 4 directions of the median along the
  line of ``size`` pixels through the pixel (odd ``size``).

  Choice: the raw difference is the score (``clip_negative=True`` clips it at 0); the adaptive
  threshold only looks at its mean and max.
  """
  if size % 2 != 1:
    raise ValueError("max_median needs an odd size")
  x = _ops.as_image(image)
  p = size // 2
  xp = _ops.pad(x, p, mode)
  medians = [jnp.median(jnp.stack([_ops.shifted(xp, p, dy, dx, x.shape) for dy, dx in line]), axis=0)
             for line in _line_offsets(size)]
  g = x - jnp.max(jnp.stack(medians), axis=0)
  return jnp.maximum(g, 0.0) if clip_negative else g
