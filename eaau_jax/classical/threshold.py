"""The paper's adaptive threshold, and the map from a classical score map to metric "logits".

The paper thresholds every classical score map G with T = 0.5 mean(G) + 0.5 max(G). The shared
metrics (``eaau_jax.metrics``) threshold logits at 0 and sweep PR/ROC thresholds over a fixed logit
grid (``CURVE_LOGITS``: -30..30, every 0.01 of probability in between). ``score_to_logits`` maps G
per image to a logit map L that

  * is > 0 exactly where G > T (the operating point is the paper's mask), and
  * is a strictly increasing function of G within the image (the curves rank pixels as G does),

by a piecewise-linear "probability" u (0 at min G, 0.5 at T, 1 at max G) passed through the logit:
    L = 2 atanh((G - T) / (max G - T))   where G > T
    L = 2 atanh((G - T) / (T - min G))   where G <= T
(logit(0.5 + r / 2) = 2 atanh(r)), clipped to +-``clip``. So the grid's probability steps of 0.01
are steps of 2% of (max - T) above T and of (T - min) below it: the PR curve sweeps each image's
threshold from its minimum to its maximum, relative to its own range, which is how the adaptive
threshold itself treats images; scores are not comparable across images in absolute terms (a
classical score has no common scale).

A score map whose range is at float precision (max - mean <= ``rel_eps`` max|G|, e.g. a flat image
filtered with float rounding noise, or IPI's all-zero sparse part of an image it finds no target
in) has no detection: T is then not meaningful, and every pixel gets the lowest logit, -``clip``,
below every curve threshold. (At logit 0 such a map would be predicted whole at every curve
threshold below 0: the PR curve and AP would count each of its pixels as a false alarm.)
"""

from __future__ import annotations

import jax.numpy as jnp

RATIO = 0.5
CLIP = 31.0  # beyond the curve grid's +-30, so the extremes land in the outer bins


def _stats(g, valid):
  """(mean, max, min, max |G|) per image over the valid pixels (all when ``valid`` is None)."""
  ax = (-2, -1)
  if valid is None:
    return jnp.mean(g, ax), jnp.max(g, ax), jnp.min(g, ax), jnp.max(jnp.abs(g), ax)
  v = jnp.asarray(valid) > 0
  mean = jnp.sum(jnp.where(v, g, 0.0), ax) / jnp.maximum(jnp.sum(v, ax), 1)
  return (mean, jnp.max(jnp.where(v, g, -jnp.inf), ax), jnp.min(jnp.where(v, g, jnp.inf), ax),
          jnp.max(jnp.where(v, jnp.abs(g), 0.0), ax))


def adaptive_threshold(g, ratio: float = RATIO, valid=None):
  """T = (1 - ratio) mean(G) + ratio max(G), per image (the last two axes; over ``valid`` pixels
  of a padded map when given)."""
  mean, gmax, _, _ = _stats(g, valid)
  return (1.0 - ratio) * mean + ratio * gmax


def _has_contrast(g, rel_eps, valid=None):
  gmean, gmax, _, gabs = _stats(g, valid)
  return (gmax - gmean) > rel_eps * gabs + 1e-30


def adaptive_mask(g, ratio: float = RATIO, rel_eps: float = 1e-5, valid=None):
  """The paper's mask G > T of a score map (H, W) or a batch (..., H, W)."""
  g = jnp.asarray(g, jnp.float32)
  t = adaptive_threshold(g, ratio, valid)[..., None, None]
  return (g > t) & _has_contrast(g, rel_eps, valid)[..., None, None]


def score_to_logits(g, ratio: float = RATIO, rel_eps: float = 1e-5, clip: float = CLIP,
                    valid=None):
  """Logit-like map of a score map (..., H, W): (L > 0) == adaptive_mask(G), monotone in G.
  ``valid`` (same shape, optional): statistics over those pixels only (a map padded to a common
  shape); the padding's logits are meaningless and must be masked out by the metrics."""
  g = jnp.asarray(g, jnp.float32)
  mean, gmax, gmin, _ = _stats(g, valid)
  t = ((1.0 - ratio) * mean + ratio * gmax)[..., None, None]
  gmax, gmin = gmax[..., None, None], gmin[..., None, None]
  above = g > t
  scale = jnp.where(above, gmax - t, t - gmin)
  r = jnp.where(scale > 0, (g - t) / jnp.where(scale > 0, scale, 1.0), 0.0)
  # r is in [-1, 1]; atanh(r) > 0 for every r > 0 representable, so L > 0 exactly where G > T.
  logits = jnp.clip(2.0 * jnp.arctanh(jnp.clip(r, -1.0, 1.0)), -clip, clip)
  ok = _has_contrast(g, rel_eps, valid)[..., None, None]
  # Without contrast a map ranks its pixels by rounding noise only: no detection at any threshold.
  return jnp.where(ok, logits, -clip)


def gao_threshold(g, k: float = 10.0):
  """Gao et al.'s own IPI segmentation threshold, mean + k std of the target image (not the paper's
  comparison protocol; provided for IPI/RIPT users, Table 2's k = 10)."""
  return jnp.mean(g, axis=(-2, -1)) + k * jnp.std(g, axis=(-2, -1))
