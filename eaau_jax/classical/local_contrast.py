"""Local-contrast detectors: RLCM, MPCM, MGDWE, LIGP (hyper-parameters: design notes, Table 2).

Each is a pure jnp function ``image (H, W) -> score map (H, W)`` (bright targets score high), jit-able
with its keyword hyper-parameters static (``functools.partial``) and vmap-able over equal-sized
images. Cells are square windows; a cell of even size is anchored with one more row/column below and
right of the centre (``_ops.centred``). Borders are mirrored. Where a paper leaves a detail open the
docstring says which reading is implemented; each such detail is a keyword argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from eaau_jax.classical import _ops


# ----------------------------------------------------------------------------- MPCM
def mpcm(image, *, scales=(1, 3, 5, 7, 9), mode: str = _ops.PAD_MODE):
  """Multiscale patch-based contrast measure (Wei, Cui, Gao, Pattern Recognition 2016).

  At scale N: m0 = mean of the N x N cell on the pixel, m1..m8 = means of the 8 adjacent N x N
  cells; d_i = m0 - m_i; the contrast is min over the 4 opposite pairs of d_i * d_{i+4}; the score is
  the max over scales. Choice: the bright-target form, each d clipped at 0 before the product, so a
  dark hole (both d negative, product positive in the paper's symmetric form) scores 0. No
  pre-smoothing (the paper's optional mean filter is left out; N = 1 is the raw pixel contrast).
  """
  x = _ops.as_image(image)
  out = []
  for n in scales:
    c = _ops.centred(n)
    means = _ops.window_reduce(x, n, [(c, c)] + _ops.neighbour_offsets(n), "sum", mode) / (n * n)
    d = jnp.maximum(means[0] - means[1:], 0.0)
    out.append(jnp.min(d[:4] * d[4:], axis=0))
  return jnp.max(jnp.stack(out), axis=0)


# ----------------------------------------------------------------------------- RLCM
def _top_k_cell_mean(x, cell: int, k: int, mode: str):
  """Mean of the k largest values of the cell x cell window with top-left (i, j), every (i, j),
  padded so that cells up to 2 cells away can be sliced; returns (padded map, pad)."""
  p = 3 * cell
  xp = _ops.pad(x, p, mode)
  h, w = xp.shape[0] - cell + 1, xp.shape[1] - cell + 1
  if k == 1:  # mean of the single largest value = a max filter
    return jax.lax.reduce_window(xp, -jnp.inf, jax.lax.max, (cell, cell), (1, 1), "VALID"), p
  stack = jnp.stack([xp[a:a + h, b:b + w] for a in range(cell) for b in range(cell)], axis=-1)
  return jnp.mean(jax.lax.top_k(stack, k)[0], axis=-1), p


def rlcm(image, *, cell: int = 8, step: int = 4, k: int = 1, eps: float = 1.0,
         mode: str = _ops.PAD_MODE):
  """Relative local contrast measure (Han et al., IEEE GRSL 2018), one scale.

  m_T = mean of the k largest grey values of the cell on the pixel, m_i = the same in the 8
  adjacent cells; RLCM = min_i (m_T * m_T / m_i - m_T), the ratio (enhancement) times the difference
  form of the paper. Choices: Table 2's "8x8, step 4, k = 1" read as cell 8 x 8, the sliding window
  evaluated every ``step`` pixels (the grid points (step//2 + step*a, step//2 + step*b)), each value
  filling its step x step block (nearest upsampling; ``step=1`` evaluates every pixel), and K1 = K2 =
  k. ``eps`` (grey levels) keeps the ratio finite next to zero-valued regions.
  """
  x = _ops.as_image(image)
  m, p = _top_k_cell_mean(x, cell, k, mode)
  c = _ops.centred(cell)
  cells = jnp.stack([_ops.shifted(m, p, dy, dx, x.shape)
                     for dy, dx in [(c, c)] + _ops.neighbour_offsets(cell)])
  mt = cells[0]
  score = jnp.min(mt * mt / (cells[1:] + eps) - mt, axis=0)
  if step > 1:
    h, w = x.shape
    grid = score[step // 2::step, step // 2::step]
    score = jnp.repeat(jnp.repeat(grid, step, 0), step, 1)
    score = jnp.pad(score, ((0, max(0, h - score.shape[0])), (0, max(0, w - score.shape[1]))),
                    mode="edge")[:h, :w]
  return score


# ----------------------------------------------------------------------------- MGDWE
def _local_weighted_entropy(x, window: int, levels: int, mode: str):
  """-sum_s (s - m)^2 p_s log p_s over each window x window neighbourhood (s: grey levels of the
  quantised image, p_s their frequency in the window, m the window mean), summed over the window's
  pixels instead of its distinct levels: sum_s f(s) p_s = (1/n) sum_a f(v_a)."""
  q = jnp.round(x * (levels - 1) / 255.0)
  r = window // 2
  qp = _ops.pad(q, r, mode)
  offs = [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]
  vals = jnp.stack([_ops.shifted(qp, r, a, b, x.shape) for a, b in offs])  # (n, H, W)
  n = len(offs)
  m = jnp.mean(vals, axis=0)

  def term(i, ent):  # count of equal levels per window pixel: n compares of (H, W) maps
    v = jax.lax.dynamic_index_in_dim(vals, i, 0, keepdims=False)
    cnt = jnp.sum((vals == v).astype(jnp.float32), axis=0)
    return ent - (v - m) ** 2 * jnp.log(cnt / n)

  # A loop, not n unrolled steps: unrolled (n = 49 at window 7), each image size compiled in
  # ~6.5 s against ~1.7 s rolled, the same run time (SIRST test sizes, loaded 2-core CPU); the
  # sums agree to float32 rounding (tests/test_classical.py).
  return jax.lax.fori_loop(0, n, term, jnp.zeros(x.shape, jnp.float32)) / n


def mgdwe(image, *, r: int = 2, window: int = 7, levels: int = 256, mode: str = _ops.PAD_MODE):
  """Multiscale grey difference weighted by local image entropy (Deng et al., IEEE TAES 2016).

  Grey difference: D = max_{k=1..r} max(m_k - m_out, 0)^2, m_k the mean of the (2k+1) x (2k+1)
  window on the pixel, m_out the mean of the window x window neighbourhood outside the
  (2r+1) x (2r+1) centre. Weight: the local weighted entropy of the window x window neighbourhood,
  -sum_s (s - m)^2 p_s log p_s over its grey levels (``levels`` quantisation of the 0..255 input).
  Score = D * entropy. Choices: inner sizes 2k+1 (k = 1..r) and the outer ring, as read from the
  paper; 8-bit quantisation (SIRST is 8-bit).
  """
  x = _ops.as_image(image)
  big, inner = window, 2 * r + 1
  sum_big = _ops.window_reduce(x, big, [(_ops.centred(big),) * 2], "sum", mode)[0]
  sum_in = _ops.window_reduce(x, inner, [(_ops.centred(inner),) * 2], "sum", mode)[0]
  m_out = (sum_big - sum_in) / float(big * big - inner * inner)
  d = jnp.stack([jnp.maximum(_ops.box_mean(x, 2 * k + 1, mode) - m_out, 0.0) ** 2
                 for k in range(1, r + 1)])
  return jnp.max(d, axis=0) * _local_weighted_entropy(x, window, levels, mode)


# ----------------------------------------------------------------------------- LIGP
def _quadrant(dy: int, dx: int) -> int:
  """The 4 quadrants of non-zero offsets, each half-axis in exactly one."""
  if dy < 0 and dx >= 0:
    return 0
  if dy >= 0 and dx > 0:
    return 1
  if dy > 0 and dx <= 0:
    return 2
  return 3


def ligp(image, *, k: float = 0.2, window: int = 11, mode: str = _ops.PAD_MODE):
  """Local intensity and gradient properties (Zhang et al., Infrared Phys. Technol. 2018).

  Intensity: max(0, I - b), b the mean of the window x window neighbourhood after dropping its
  ceil(k n) brightest values (so the target itself and small bright clutter do not raise the
  background estimate). Gradient: for each of the 4 quadrants of the neighbourhood, the sum over its
  pixels of the positive part of the gradient's component towards the centre (a bright blob's
  gradients all point inwards); the gradient property is the min over quadrants (an edge feeds at
  most two). Score = intensity * gradient. Choices: this reading of k (fraction of brightest pixels
  excluded) and the min over quadrants; central-difference gradients.
  """
  x = _ops.as_image(image)
  r = window // 2
  offs = [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]
  xp = _ops.pad(x, r, mode)
  vals = jnp.stack([_ops.shifted(xp, r, a, b, x.shape) for a, b in offs], axis=-1)  # (H, W, n)
  n = len(offs)
  drop = int(-(-k * n // 1))
  top = jax.lax.top_k(vals, drop)[0] if drop else jnp.zeros(x.shape + (0,))
  background = (jnp.sum(vals, -1) - jnp.sum(top, -1)) / (n - drop)
  intensity = jnp.maximum(x - background, 0.0)
  gy, gx = _ops.gradient(x)
  gyp, gxp = _ops.pad(gy, r, mode), _ops.pad(gx, r, mode)
  quads = [jnp.zeros(x.shape, jnp.float32) for _ in range(4)]
  for a, b in offs:
    if a == 0 and b == 0:
      continue
    norm = (a * a + b * b) ** 0.5  # unit vector from the neighbour (a, b) to the centre: -(a, b)
    inward = -(a * _ops.shifted(gyp, r, a, b, x.shape) + b * _ops.shifted(gxp, r, a, b, x.shape)) / norm
    q = _quadrant(a, b)
    quads[q] = quads[q] + jnp.maximum(inward, 0.0)
  return intensity * jnp.min(jnp.stack(quads), axis=0)
