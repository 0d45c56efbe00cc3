"""Low-rank + sparse detectors: IPI (Gao et al., IEEE TIP 2013) and RIPT (Dai & Wu, IEEE JSTARS 2017).

Both cut the image into patch x patch windows every ``stride`` pixels, split the stack into a
low-rank background and a sparse target, and rebuild the target image by averaging the overlapping
patches. Choice: when (H - patch) is not a multiple of the stride a last window flush with the
bottom/right border is added, so every pixel is covered (Gao's code leaves that strip out); an image
smaller than one patch is mirror-padded up to it and cropped back.

Speed: each iteration's singular value thresholding of an m x n matrix (n <= m) is done through the
n x n Gram matrix: eigh(M^T M) = V diag(s^2) V^T, and SVT(M, tau) = M V diag(max(s - tau, 0) / s) V^T.
That is one Gram product, one small symmetric eigensolve and one product: 48 ms against
``jnp.linalg.svd``'s 96 ms on 2500 x 560 on an idle 2-core CPU (benchmarks/classical.py), and it
batches under vmap. In float32 the Gram squares the
condition number, so singular values below ~3e-4 s_max are noise; they are the ones SVT shrinks most,
and the split agrees with a float64 NumPy SVD solve (tests/test_classical.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from eaau_jax.classical import _ops


# ----------------------------------------------------------------------------- patches
def patch_starts(size: int, patch: int, stride: int) -> list[int]:
  """Window starts along one axis: 0, stride, ..., plus one flush with the end if needed."""
  last = max(size - patch, 0)
  starts = list(range(0, last + 1, stride))
  if starts[-1] != last:
    starts.append(last)
  return starts


def _corners(shape, patch: int, stride: int) -> np.ndarray:
  """(P, 2) top-left corners of the windows, row-major. Windows are addressed by their corners
  (a gather/scatter of whole (patch, patch) slices), not by a per-pixel index: the per-pixel form
  is P x patch² constants that XLA spent most of a native-size compile constant-folding."""
  rs, cs = patch_starts(shape[0], patch, stride), patch_starts(shape[1], patch, stride)
  return np.array([(r, c) for r in rs for c in cs], np.int32)


_WINDOWS = jax.lax.GatherDimensionNumbers(offset_dims=(1, 2), collapsed_slice_dims=(),
                                          start_index_map=(0, 1))
_SCATTER = jax.lax.ScatterDimensionNumbers(update_window_dims=(1, 2), inserted_window_dims=(),
                                           scatter_dims_to_operand_dims=(0, 1))


def image_to_patches(x, patch: int, stride: int):
  """(H, W) -> (P, patch, patch): the windows in row-major order of their top-left corners."""
  return jax.lax.gather(x, jnp.asarray(_corners(x.shape, patch, stride)), _WINDOWS,
                        (patch, patch), mode="promise_in_bounds")


def patches_to_image(patches, shape, patch: int, stride: int, reduce: str = "mean"):
  """Inverse of ``image_to_patches``: overlapping values averaged (``mean``) or the max taken."""
  corners = _corners(shape, patch, stride)
  if reduce == "max":
    return jax.lax.scatter_max(jnp.full(shape, -jnp.inf, jnp.float32), jnp.asarray(corners),
                               patches, _SCATTER, mode="promise_in_bounds")
  total = jax.lax.scatter_add(jnp.zeros(shape, jnp.float32), jnp.asarray(corners), patches,
                              _SCATTER, mode="promise_in_bounds")
  count = np.zeros(shape, np.float32)
  for r, c in corners:
    count[r:r + patch, c:c + patch] += 1.0
  return total / count


def _fit(x, patch: int):
  """Mirror-pad an image smaller than one patch; returns (image, (H, W) to crop back to)."""
  h, w = x.shape
  ph, pw = max(patch - h, 0), max(patch - w, 0)
  if ph or pw:
    x = jnp.pad(x, ((0, ph), (0, pw)), mode="symmetric" if max(ph, pw) <= min(h, w) else "edge")
  return x, (h, w)


def _below_rounding(t, x, rel: float = 1e-5):
  """Zero target values below float32 rounding of the image (|t| < rel * max|x|): on a flat image
  the split leaves ~1e-6 relative noise, which the adaptive threshold would otherwise segment."""
  return jnp.where(jnp.abs(t) < rel * jnp.max(jnp.abs(x)), 0.0, t)


# ----------------------------------------------------------------------------- SVT
def svt(m, tau):
  """Singular value thresholding: U diag(max(s - tau, 0)) V^T of m, through the smaller Gram."""
  if m.shape[0] < m.shape[1]:
    return svt(m.T, tau).T
  w, v = jnp.linalg.eigh(jnp.matmul(m.T, m, precision=jax.lax.Precision.HIGHEST))
  s = jnp.sqrt(jnp.maximum(w, 0.0))
  f = jnp.where(s > tau, (s - tau) / jnp.where(s > 0, s, 1.0), 0.0)
  return jnp.matmul(m, (v * f) @ v.T, precision=jax.lax.Precision.HIGHEST)


def spectral_norm(m):
  small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
  # eigh, not eigvalsh: on this CPU eigvalsh of a 416^2 matrix measured 100 ms against eigh's 22.
  return jnp.sqrt(jnp.maximum(jnp.linalg.eigh(small)[0][-1], 0.0))


def soft(x, t):
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


# ----------------------------------------------------------------------------- IPI
def rpca_ialm(d, lam, *, tol: float = 1e-7, max_iter: int = 100, rho: float = 1.5,
              float_floor: float = 1e-6, patience: int = 3):
  """Robust PCA min ||A||_* + lam ||E||_1 s.t. D = A + E by the inexact augmented Lagrange
  multiplier method (Lin, Chen, Ma 2010; their defaults mu0 = 1.25 / ||D||_2, rho = 1.5,
  mu_max = 1e7 mu0). Stops when ||D - A - E||_F / ||D||_F < max(tol, float_floor), after max_iter
  iterations, or when, with 1/mu below the float32 Gram's resolution sqrt(eps) ||D||_2, the
  residual has not improved for ``patience`` iterations; returns the
  iterate with the smallest residual.

  Choices, for float32: the Gram-matrix SVT resolves singular values only down to ~3e-4 s_max, so
  once the threshold 1/mu falls below that the residual stops falling (at ~1e-6 on some SIRST
  images, ~7e-4 on others) and then grows as mu -> mu_max amplifies rounding, E filling with
  noise (measured: 1.1 M of 1.15 M entries non-zero after 100 iterations on one test image).
  ``float_floor`` and the stall rule stop there. Against a float64 SVD solve at tol 1e-7 on two
  SIRST test images, the adaptive-threshold masks were equal (4 px) and within one pixel (2 px vs
  1 px). Returns (A, E, the best iterate's iteration)."""
  norm_two = spectral_norm(d)
  norm_f = jnp.maximum(jnp.linalg.norm(d), 1e-12)
  y0 = d / jnp.maximum(jnp.maximum(norm_two, jnp.max(jnp.abs(d)) / lam), 1e-12)
  mu0 = 1.25 / jnp.maximum(norm_two, 1e-12)
  resolution = float(np.sqrt(np.finfo(np.float32).eps)) * norm_two

  def body(state):
    (a, e, y, mu, it), best, stall = state
    e = soft(d - a + y / mu, lam / mu)
    a = svt(d - e + y / mu, 1.0 / mu)
    z = d - a - e
    r = jnp.linalg.norm(z) / norm_f
    better = r < best[2]
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old), (a, e, r, it + 1), best)
    # Stalls count only once the SVT threshold 1/mu is below the Gram's resolution: before that
    # the residual may sit flat for a few iterations while mu grows, as in exact arithmetic.
    at_floor = 1.0 / mu < resolution
    return ((a, e, y + mu * z, jnp.minimum(mu * rho, mu0 * 1e7), it + 1), best,
            jnp.where(better | ~at_floor, 0, stall + 1))

  def cond(state):
    (*_, it), best, stall = state
    return (it < max_iter) & (best[2] >= max(tol, float_floor)) & (stall < patience)

  zero = jnp.zeros_like(d)
  init = ((zero, zero, y0, mu0, jnp.int32(0)), (zero, zero, jnp.float32(jnp.inf), jnp.int32(0)),
          jnp.int32(0))
  _, (a, e, _, it), _ = jax.lax.while_loop(cond, body, init)
  return a, e, it


def ipi(image, *, patch: int = 50, stride: int = 10, L: float = 4.5, tol: float = 1e-7,
        max_iter: int = 100, nonneg: bool = True, return_parts: bool = False, solve=None):
  """Infrared patch-image model: score = the sparse (target) part of the patch-image, rebuilt by
  averaging overlaps.

  D (patch^2 x P) stacks the vectorised windows as columns; lambda = L / sqrt(min(m, n)) with
  Table 2's L = 4.5 and tolerance eps = 1e-7. Choices: solved by inexact ALM (the paper's reference
  code uses APG with continuation, which needs ~3x more SVDs for the same split); the target part is
  clipped at 0 (``nonneg``: targets are brighter than their background). Table 2's threshold factor
  k = 10 belongs to Gao's own segmentation (mean + k std of the target image, ``threshold.gao``);
  the paper's comparison uses the adaptive threshold instead. ``return_parts`` also returns
  (D, A, E, iterations) for tests. ``solve(D, lam) -> (A, E, iterations)`` replaces the float32
  inexact ALM (default ``rpca_ialm`` with ``tol`` and ``max_iter``), e.g. by a float64 reference
  solve called eagerly, so that the patch matrix and the rebuild stay this function's.
  """
  x, (h, w) = _fit(_ops.as_image(image), patch)
  p = image_to_patches(x, patch, stride)
  d = p.reshape(p.shape[0], -1).T
  lam = L / float(np.sqrt(min(d.shape)))
  if solve is None:
    solve = functools.partial(rpca_ialm, tol=tol, max_iter=max_iter)
  a, e, it = solve(d, lam)
  t = patches_to_image(jnp.asarray(e, d.dtype).T.reshape(p.shape), x.shape, patch, stride)[:h, :w]
  t = _below_rounding(jnp.maximum(t, 0.0) if nonneg else t, x)
  return (t, (d, a, e, it)) if return_parts else t


# ----------------------------------------------------------------------------- RIPT
def unfold(t, mode: int):
  """Mode-n unfolding: (I_n, product of the other sizes), the other axes in their order."""
  return jnp.moveaxis(t, mode, 0).reshape(t.shape[mode], -1)


def fold(m, mode: int, shape):
  """Inverse of ``unfold``."""
  rest = tuple(s for i, s in enumerate(shape) if i != mode)
  return jnp.moveaxis(m.reshape((shape[mode],) + rest), 0, mode)


def structure_weight(x, h: float, size: int = 3, sigma_pre: float = 1.2, sigma_post: float = 2.0):
  """RIPT's local-structure weight exp(h * mat2gray(lambda1 - lambda2)) of the structure tensor
  (Gaussian pre-smoothing and tensor smoothing as in Dai's reference code): large on edges, so
  edges are pushed into the background."""
  u = _ops.correlate(x, _ops.gaussian_kernel(size, sigma_pre))
  gy, gx = _ops.gradient(u)
  k = _ops.gaussian_kernel(size, sigma_post)
  jxx, jxy, jyy = (_ops.correlate(v, k) for v in (gx * gx, gx * gy, gy * gy))
  diff = jnp.sqrt((jxx - jyy) ** 2 + 4.0 * jxy ** 2)  # lambda1 - lambda2
  lo, hi = jnp.min(diff), jnp.max(diff)
  return jnp.exp(h * (diff - lo) / jnp.maximum(hi - lo, 1e-12))


def _after(x, y):
  """``x``, made to wait for ``y``: its value unchanged (+ 0 * one element of y; XLA does not fold
  a float 0 * y away, NaN * 0 being NaN), but the runtime can start nothing that reads it before y.

  Why: under vmap each SVT's eigh is one batched LAPACK call, which on XLA's CPU runtime
  (jaxlib 0.10) splits its batch over the intra-op thread pool and blocks its own pool thread
  until the parts are done. RIPT's three SVTs are independent, so the runtime starts them
  together; with as many of them as pool threads (2 on a 2-core machine) every thread waits and
  none is left to run the parts: a deadlock (seen: `--mode compare --detectors ript` under the
  acm protocol hung at 0% CPU on the first batch). ``optimization_barrier`` does not order them
  (its control edges do not reach the CPU runtime's schedule); a data edge does."""
  return x + 0.0 * y.reshape(-1)[0]


def ript_solve(f, lam, mu, weight_prior, *, eps: float = 0.01, rho: float = 1.5,
               tol: float = 1e-7, max_iter: int = 50):
  """Dai & Wu's reweighted higher-order RPCA: min sum_n ||B_(n)||_* + lam ||W . T||_1, D = B + T,
  one ADMM-style sweep per iteration over the 3 unfoldings (SVT at mu), T the non-negative
  weighted soft threshold, W = prior / (|T| + eps), mu /= rho. Stops when the residual
  ||F - B - T|| / ||F|| < tol, when the number of positive T entries repeats (the paper's extra
  rule), or after max_iter. Returns (B, T, iterations)."""
  n = f.ndim
  norm_f = jnp.maximum(jnp.linalg.norm(f), 1e-12)

  def body(state):
    bs, lams, t, w, mu, it, _, count, _ = state
    bs = []
    for i in range(n):  # one SVT after the other: see ``_after``
      m = unfold(f + mu * lams[i] - t, i)
      bs.append(fold(svt(_after(m, bs[-1]) if bs else m, mu), i, f.shape))
    bs = jnp.stack(bs)
    temp = jnp.sum(bs - f - mu * lams, axis=0)
    t = jnp.maximum(-temp / n - w * mu * lam / n, 0.0)
    w = weight_prior / (jnp.abs(t) + eps)
    lams = lams - (bs + t - f) / mu
    err = jnp.linalg.norm(f - jnp.mean(bs, 0) - t) / norm_f
    new_count = jnp.sum(t > 0)
    return bs, lams, t, w, mu / rho, it + 1, err, new_count, new_count == count

  def cond(state):
    return (state[5] < max_iter) & (state[6] >= tol) & ~state[8]

  init = (jnp.stack([f] * n), jnp.zeros((n,) + f.shape), jnp.zeros_like(f), weight_prior,
          jnp.float32(mu), jnp.int32(0), jnp.float32(jnp.inf), jnp.int32(f.size), jnp.bool_(False))
  bs, _, t, _, _, it, _, _, _ = jax.lax.while_loop(cond, body, init)
  return jnp.mean(bs, 0), t, it


def ript(image, *, patch: int = 50, stride: int = 10, L: float = 0.001, h: float = 0.1,
         eps: float = 0.01, tol: float = 1e-7, k: float = 10.0, rho: float = 1.5,
         max_iter: int = 50, return_parts: bool = False):
  """Reweighted infrared patch-tensor model: score = the target tensor rebuilt by averaging overlaps.

  Patch tensor F (patch, patch, P): the windows as frontal slices. Table 2: lambda = L /
  sqrt(min(I, J, P)), L = 0.001, h = 0.1 (local-structure weight), epsilon = 0.01 (reweighting),
  eps = 1e-7 (tolerance), k = 10. Choices: k read as the coefficient of the initial penalty
  mu = k * std(F) (``muCoef`` in the authors' code), rho = 1.5 as there; the low-rank term is the
  sum of the nuclear norms of the three unfoldings (the paper's model). ``return_parts`` also
  returns (F, B, T, iterations).
  """
  x, (hh, ww) = _fit(_ops.as_image(image), patch)
  f = jnp.moveaxis(image_to_patches(x, patch, stride), 0, -1)
  prior = jnp.moveaxis(image_to_patches(structure_weight(x, h), patch, stride), 0, -1)
  lam = L / float(np.sqrt(min(f.shape)))
  # a flat image has std 0: floor mu so that the first SVT (threshold mu) stays defined.
  mu = jnp.maximum(k * jnp.std(f), 1e-4 * (1.0 + jnp.max(jnp.abs(f))))
  b, t, it = ript_solve(f, lam, mu, prior, eps=eps, tol=tol, max_iter=max_iter)
  out = patches_to_image(jnp.moveaxis(t, -1, 0), x.shape, patch, stride)[:hh, :ww]
  out = _below_rounding(out, x)
  return (out, (f, b, t, it)) if return_parts else out
