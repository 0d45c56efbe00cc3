"""The nine classical detectors: targets found, flat images empty, references, jit + vmap."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from conftest import ROOT
from eaau_jax import classical
from eaau_jax.classical import filters, low_rank, threshold

H, W = 48, 56
TARGET = (slice(22, 25), slice(30, 33))  # 3 x 3
# Small-image settings: the patch models need windows smaller than the 48 x 56 test image.
SMALL = {"ipi": {"patch": 16, "stride": 4}, "ript": {"patch": 16, "stride": 4}}
# RLCM with k = 1 takes each 8 x 8 cell's max: every pixel whose cell holds the target peak scores
# like it, and values fill 4 x 4 blocks (step 4), so its marks spread up to a cell around the target.
MARGIN = {"rlcm": 8}


def clutter_with_target(seed=0, amplitude=60.0):
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[:H, :W]
  img = 80 + 30 * np.sin(xx / 15.0) + 20 * np.cos(yy / 11.0) + rs.randn(H, W)
  # A 3 x 3 blob peaked in the middle, as a point-spread target is: a flat 3 x 3 plateau would be
  # kept whole by a 3 x 3 opening, i.e. invisible to the paper's 3 x 3 top-hat.
  img[TARGET] += amplitude * np.outer([0.6, 1.0, 0.6], [0.6, 1.0, 0.6])
  return img.astype(np.float32)


@functools.lru_cache(maxsize=None)
def batch_scores(name):
  """Scores of [clutter + target, flat] through jit(vmap(detector)) (one compile per detector)."""
  images = np.stack([clutter_with_target(), np.full((H, W), 100.0, np.float32)])
  return np.asarray(classical.compiled(name, **SMALL.get(name, {}))(images))


@pytest.mark.parametrize("name", list(classical.DETECTORS))
def test_finds_target_and_nothing_on_flat(name):
  scores = batch_scores(name)
  assert scores.shape == (2, H, W) and np.all(np.isfinite(scores))
  masks = np.asarray(classical.adaptive_mask(scores))
  target = np.zeros((H, W), bool)
  target[TARGET] = True
  near = ndimage.binary_dilation(target, np.ones((3, 3), bool), iterations=MARGIN.get(name, 2))
  assert (masks[0] & target).any(), f"{name} missed the target"
  assert not (masks[0] & ~near).any(), f"{name} marked clutter: {np.argwhere(masks[0] & ~near)[:5]}"
  assert not masks[1].any(), f"{name} marked a flat image"


@pytest.mark.parametrize("name", list(classical.DETECTORS))
def test_vmap_matches_single_jit(name):
  img = clutter_with_target()
  single = np.asarray(classical.compiled(name, batched=False, **SMALL.get(name, {}))(img))
  # iterative solvers (IPI, RIPT) amplify the batched vs single eigh's float32 rounding a little
  tol = 1e-2 if name in SMALL else 1e-4
  np.testing.assert_allclose(batch_scores(name)[0], single, rtol=tol,
                             atol=tol * (np.abs(single).max() + 1e-6))


def test_top_hat_and_max_median_match_scipy():
  x = np.random.RandomState(1).rand(21, 26).astype(np.float32) * 255
  np.testing.assert_allclose(filters.top_hat(x), ndimage.white_tophat(x, size=3), atol=1e-4)
  lines = [np.zeros((3, 3), bool) for _ in range(4)]
  lines[0][1, :] = lines[1][:, 1] = True
  lines[2][[0, 1, 2], [0, 1, 2]] = lines[3][[0, 1, 2], [2, 1, 0]] = True
  ref = x - np.max([ndimage.median_filter(x, footprint=f, mode="reflect") for f in lines], 0)
  np.testing.assert_allclose(filters.max_median(x), ref, atol=1e-4)


def numpy_ialm(d, lam, tol=1e-7, max_iter=200, rho=1.5):
  """Plain float64 NumPy inexact ALM RPCA (Lin, Chen, Ma 2010) with a full SVD."""
  norm_two = np.linalg.norm(d, 2)
  y = d / max(norm_two, np.abs(d).max() / lam)
  mu, a, e = 1.25 / norm_two, np.zeros_like(d), np.zeros_like(d)
  mu_max = mu * 1e7
  for _ in range(max_iter):
    t = d - a + y / mu
    e = np.sign(t) * np.maximum(np.abs(t) - lam / mu, 0)
    u, s, vt = np.linalg.svd(d - e + y / mu, full_matrices=False)
    a = (u * np.maximum(s - 1 / mu, 0)) @ vt
    z = d - a - e
    y, mu = y + mu * z, min(mu * rho, mu_max)
    if np.linalg.norm(z) / np.linalg.norm(d) < tol:
      break
  return a, e


def test_ipi_split_matches_numpy():
  img = clutter_with_target(seed=3)[:40, :40].copy()
  img[18:21, 18:21] += 60
  _, (d, a, e, it) = jax.jit(functools.partial(low_rank.ipi, patch=12, stride=4,
                                               return_parts=True))(img)
  d, a, e = (np.asarray(v, np.float64) for v in (d, a, e))
  lam = 4.5 / np.sqrt(min(d.shape))
  a_ref, e_ref = numpy_ialm(d, lam)
  assert 0 < int(it) < 100
  assert np.linalg.norm(d - a - e) / np.linalg.norm(d) < 1e-5
  np.testing.assert_allclose(np.linalg.norm(e), np.linalg.norm(e_ref), rtol=0.02)
  assert np.linalg.norm(e - e_ref) / np.linalg.norm(e_ref) < 0.05
  assert np.linalg.norm(a - a_ref) / np.linalg.norm(a_ref) < 1e-3
  big = 0.05 * np.abs(e_ref).max()  # sparsity: the support of the significant entries
  s, s_ref = np.abs(e) > big, np.abs(e_ref) > big
  assert abs(int(s.sum()) - int(s_ref.sum())) <= max(2, 0.05 * s_ref.sum())
  assert (s & s_ref).sum() >= 0.9 * s_ref.sum()


def test_ipi_solve_hook_takes_its_lambda_and_rebuilds_the_same_map():
  """``ipi(solve=...)`` hands the solver ipi's own patch matrix and lambda, and rebuilds the map
  from the E it returns: with the float64 NumPy solve the map equals the float32 one's to the
  solvers' agreement, and an E of ones rebuilds to ones (mean of overlaps), clipped nowhere."""
  img = clutter_with_target(seed=3)[:40, :40].copy()
  img[18:21, 18:21] += 60
  seen = {}

  def reference(d, lam):
    seen["shape"], seen["lam"] = d.shape, lam
    a, e = numpy_ialm(np.asarray(d, np.float64), lam)
    return a, e, -1

  ref = np.asarray(low_rank.ipi(img, patch=12, stride=4, solve=reference))
  assert seen["shape"] == (144, 64) and seen["lam"] == pytest.approx(4.5 / 8)
  ours = np.asarray(low_rank.ipi(img, patch=12, stride=4))
  assert ref.max() > 0 and np.abs(ours - ref).max() < 0.05 * ref.max()
  ones = low_rank.ipi(img, patch=12, stride=4, solve=lambda d, lam: (d, jnp.ones_like(d), 0))
  np.testing.assert_allclose(np.asarray(ones), 1.0, rtol=1e-6)


def test_ipi_stops_at_float32_resolution_on_a_bright_background():
  """A bright offset puts the background's singular values far above the clutter's, so the float32
  Gram SVT cannot resolve the split down to 1e-6: the old loop then ran to max_iter with E
  absorbing rounding noise everywhere (22,752 of 25,344 entries); the best iterate is sparse."""
  img = clutter_with_target(seed=0)[:64, :64].copy() + 200.0
  img[30:33, 30:33] += 60
  _, (d, a, e, it) = jax.jit(functools.partial(low_rank.ipi, patch=16, stride=4,
                                               return_parts=True))(img)
  d, e = np.asarray(d, np.float64), np.asarray(e, np.float64)
  _, e_ref = numpy_ialm(d, 4.5 / np.sqrt(min(d.shape)))
  assert int(it) < 60
  big = 0.05 * np.abs(e_ref).max()
  s, s_ref = np.abs(e) > big, np.abs(e_ref) > big
  assert s.sum() < 0.01 * s.size
  assert (s & s_ref).sum() >= 0.9 * s_ref.sum() and s.sum() <= 1.2 * s_ref.sum() + 2


def test_svt_matches_svd():
  m = np.random.RandomState(0).randn(30, 12).astype(np.float32)
  u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
  ref = (u * np.maximum(s - s[3], 0)) @ vt
  for x, r in ((m, ref), (m.T, ref.T)):
    np.testing.assert_allclose(low_rank.svt(jnp.asarray(x), float(s[3])), r, atol=1e-4)


def test_ript_unfolding_round_trips():
  t = jnp.asarray(np.random.RandomState(0).rand(4, 5, 6).astype(np.float32))
  for mode, rows in enumerate(t.shape):
    m = low_rank.unfold(t, mode)
    assert m.shape == (rows, t.size // rows)
    np.testing.assert_array_equal(low_rank.fold(m, mode, t.shape), t)
    # row i of the mode-n unfolding holds exactly the slice t[..., i, ...] along that mode
    np.testing.assert_array_equal(np.sort(m[2]), np.sort(np.take(np.asarray(t), 2, axis=mode).ravel()))


_RIPT_BATCH = """
import os
cores = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, cores[:2])  # XLA sizes its CPU thread pool by the affinity: 2 threads
import jax, numpy as np
from eaau_jax.classical import low_rank
x = np.random.RandomState(0).uniform(0, 255, (2, 96, 96)).astype(np.float32)
out = np.asarray(jax.jit(jax.vmap(lambda im: low_rank.ript(im, max_iter=20)))(x))
print(out.shape, bool(np.isfinite(out).all()))
"""


def test_batched_ript_does_not_deadlock_on_two_threads():
  """RIPT's three SVTs per iteration used to run together; under vmap each eigh is a batched
  LAPACK call that waits on XLA's CPU pool for its parts, so with 2 pool threads both waited and
  the run hung at 0% CPU (5 of 5 runs of this case, 2-core machine, jaxlib 0.10.2)."""
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  try:
    out = subprocess.run([sys.executable, "-c", _RIPT_BATCH], capture_output=True, text=True,
                         timeout=120, env=env, check=True).stdout
  except subprocess.TimeoutExpired:
    pytest.fail("jit(vmap(ript)) on 2 threads hung: its SVTs' batched eighs deadlocked the pool")
  assert out.split() == ["(2,", "96,", "96)", "True"]


def test_patches_round_trip_and_cover_the_image():
  x = jnp.asarray(np.random.RandomState(0).rand(37, 45).astype(np.float32))
  p = low_rank.image_to_patches(x, 10, 4)
  assert p.shape == (len(low_rank.patch_starts(37, 10, 4)) * len(low_rank.patch_starts(45, 10, 4)),
                     10, 10)
  np.testing.assert_allclose(low_rank.patches_to_image(p, x.shape, 10, 4), x, rtol=1e-6)


def test_score_to_logits_keeps_mask_and_order():
  rs = np.random.RandomState(0)
  g = np.stack([rs.gamma(0.3, size=(H, W)), clutter_with_target(), np.full((H, W), 3.0),
                np.where(rs.rand(H, W) > 0.99, 5.0, 0.0)]).astype(np.float32)
  logits = np.asarray(threshold.score_to_logits(g))
  masks = np.asarray(threshold.adaptive_mask(g))
  t = 0.5 * g.mean((1, 2)) + 0.5 * g.max((1, 2))
  np.testing.assert_array_equal(masks[:2], g[:2] > t[:2, None, None])
  np.testing.assert_array_equal(logits > 0, masks)
  assert not masks[2].any() and masks[0].any()
  for gi, li in zip(g, logits):
    order = np.argsort(gi.ravel(), kind="stable")
    assert np.all(np.diff(li.ravel()[order]) >= 0)  # monotone in the score
  assert np.abs(logits).max() <= threshold.CLIP


def test_contrast_less_map_detects_nothing_at_any_curve_threshold():
  """IPI returns an all-zero sparse part for an image it finds no target in; such a map must add
  no predicted pixel to any point of the PR curve (at logit 0 it flooded every threshold < 0)."""
  from eaau_jax import metrics
  target = clutter_with_target()
  mask = np.zeros((H, W), np.float32)
  mask[TARGET] = 1.0
  g = np.stack([target, np.zeros((H, W), np.float32), np.full((H, W), 7.0, np.float32)])
  logits = np.asarray(threshold.score_to_logits(g))
  assert np.all(logits[1:] < metrics.CURVE_LOGITS.min())
  masks = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)])[..., None]
  both = metrics.SegmentationMetrics.from_model_output(jnp.asarray(logits[..., None]), masks)
  alone = metrics.SegmentationMetrics.from_model_output(jnp.asarray(logits[:1, ..., None]),
                                                        masks[:1])
  c_both, c_alone = both.curves(), alone.curves()
  np.testing.assert_array_equal(c_both["precision"], c_alone["precision"])
  np.testing.assert_array_equal(c_both["recall"], c_alone["recall"])
  assert both.compute()["ap"] == alone.compute()["ap"]


def _unrolled_local_weighted_entropy(x, window, levels, mode):
  """MGDWE's weight as first written: the n window pixels' terms unrolled in Python (n = 49 at
  window 7: ~6.5 s to compile per native SIRST size, ~1.7 s as the loop now in local_contrast)."""
  from eaau_jax.classical import _ops
  q = jnp.round(x * (levels - 1) / 255.0)
  r = window // 2
  qp = _ops.pad(q, r, mode)
  offs = [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]
  vals = jnp.stack([_ops.shifted(qp, r, a, b, x.shape) for a, b in offs])
  n = len(offs)
  m = jnp.mean(vals, axis=0)
  ent = jnp.zeros(x.shape, jnp.float32)
  for i in range(n):
    cnt = jnp.sum((vals == vals[i]).astype(jnp.float32), axis=0)
    ent = ent - (vals[i] - m) ** 2 * jnp.log(cnt / n)
  return ent / n


@pytest.mark.parametrize("window", [7, 9])
def test_mgdwe_rolled_entropy_equals_the_unrolled_one(window):
  """The loop over window pixels scores as the unrolled sum did, to float32 rounding (the terms
  are the same; XLA fuses the two programs differently), with the same adaptive masks; and the
  traced program no longer grows with the window."""
  from eaau_jax.classical import local_contrast
  rs = np.random.RandomState(4)
  images = np.stack([clutter_with_target(seed=2),
                     np.round(rs.rand(H, W) * 6) * 40.0,  # few grey levels: many equal counts
                     np.full((H, W), 100.0, np.float32)]).astype(np.float32)
  new = jax.jit(jax.vmap(functools.partial(local_contrast.mgdwe, window=window)))(images)

  def old_mgdwe(x):  # local_contrast.mgdwe as first written
    from eaau_jax.classical import _ops
    big, inner = window, 5
    sum_big = _ops.window_reduce(x, big, [(_ops.centred(big),) * 2], "sum")[0]
    sum_in = _ops.window_reduce(x, inner, [(_ops.centred(inner),) * 2], "sum")[0]
    m_out = (sum_big - sum_in) / float(big * big - inner * inner)
    d = jnp.stack([jnp.maximum(_ops.box_mean(x, 2 * k + 1) - m_out, 0.0) ** 2 for k in (1, 2)])
    ent_old = _unrolled_local_weighted_entropy(x, window, 256, "symmetric")
    return (jnp.max(d, axis=0) * ent_old,
            local_contrast._local_weighted_entropy(x, window, 256, "symmetric"), ent_old)

  old, ent_new, ent_old = jax.jit(jax.vmap(old_mgdwe))(images)
  np.testing.assert_allclose(ent_new, ent_old, rtol=2e-6, atol=1e-6 * np.abs(ent_old).max())
  np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-6 * np.abs(old).max())
  np.testing.assert_array_equal(classical.adaptive_mask(new), classical.adaptive_mask(old))
  eqns = len(jax.make_jaxpr(local_contrast.mgdwe)(images[0]).jaxpr.eqns)
  assert eqns < 120, eqns  # unrolled: ~6 per window pixel (300+ at window 7)
