"""Soft-IoU loss and the metrics, against hand-worked cases and plain NumPy references."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eaau_jax import losses, metrics

BIG = 30.0  # a logit whose sigmoid is 1 to float32 precision


# ---------------------------------------------------------------- soft-IoU
def test_soft_iou_hand_computed_batch_and_image():
  # image 0: p = [1, 0.5], t = [1, 0] -> inter 1, union 1.5; image 1: p = [0.5, 0.5], t = [1, 1]
  # -> inter 1, union 2. Batch: inter 2, union 3.5.
  logits = jnp.array([[BIG, 0.0], [0.0, 0.0]]).reshape(2, 1, 2, 1)
  masks = jnp.array([[1, 0], [1, 1]], jnp.float32).reshape(2, 1, 2, 1)
  s = 1.0
  batch = losses.soft_iou_loss(logits, masks, reduction="batch", smooth=s)
  image = losses.soft_iou_loss(logits, masks, reduction="image", smooth=s)
  np.testing.assert_allclose(batch, 1 - (2 + s) / (3.5 + s), rtol=1e-6)
  np.testing.assert_allclose(image, 1 - 0.5 * ((1 + s) / (1.5 + s) + (1 + s) / (2 + s)), rtol=1e-6)
  np.testing.assert_allclose(losses.soft_iou_loss(logits, masks, smooth=1e-9), 1 - 2 / 3.5, 1e-6)


def test_soft_iou_perfect_and_valid_mask():
  masks = jnp.array([1, 0, 0, 1], jnp.float32).reshape(1, 2, 2, 1)
  logits = jnp.where(masks > 0, BIG, -BIG)
  assert losses.soft_iou_loss(logits, masks, smooth=1e-9) < 1e-6
  # A wrong prediction on a padded pixel is ignored.
  bad = logits.at[0, 1, 0, 0].set(BIG)
  valid = jnp.ones_like(masks).at[0, 1, 0, 0].set(0)
  assert losses.soft_iou_loss(bad, masks, smooth=1e-9) > 0.3
  assert losses.soft_iou_loss(bad, masks, valid=valid, smooth=1e-9) < 1e-6


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_soft_iou_finite_on_empty_masks(reduction):
  logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  masks = jnp.zeros_like(logits)
  val, grad = jax.value_and_grad(losses.soft_iou_loss)(logits, masks, reduction=reduction)
  assert np.isfinite(val) and np.all(np.isfinite(grad))
  assert np.all(grad >= 0)  # every positive score is pushed down on an empty mask
  assert np.isfinite(losses.soft_iou_loss(jnp.full_like(logits, -BIG), masks, reduction=reduction))


def test_soft_iou_rejects_unknown_reduction():
  with pytest.raises(ValueError, match="reduction must be one of"):
    losses.soft_iou_loss(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1)), reduction="mean")


# ---------------------------------------------------------------- pixel metrics
def test_segmentation_metrics_hand_worked():
  # Image 0 (3x3): target at (0,0),(0,1); predicted (0,1),(2,2): TP 1, FP 1, FN 1, TN 6.
  # Image 1 (3x3, last column padding): no target, nothing predicted -> nIoU term 1 by our rule.
  m0 = np.zeros((3, 3)); m0[0, 0] = m0[0, 1] = 1
  p0 = np.full((3, 3), -5.0); p0[0, 1] = 2.0; p0[2, 2] = 1.0
  m1 = np.zeros((3, 3)); p1 = np.full((3, 3), -5.0); p1[:, 2] = 9.0  # positives only in padding
  v = np.ones((2, 3, 3)); v[1, :, 2] = 0
  st = metrics.SegmentationMetrics.from_model_output(
      jnp.asarray(np.stack([p0, p1])[..., None]), jnp.asarray(np.stack([m0, m1])[..., None]),
      jnp.asarray(v[..., None]))
  r = st.compute()
  assert (int(st.tp), int(st.fp), int(st.fn), int(st.tn)) == (1, 1, 1, 6 + 6)
  assert r["iou"] == pytest.approx(1 / 3)
  assert r["niou"] == pytest.approx((1 / 3 + 1) / 2)
  assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5)
  assert r["f_measure"] == pytest.approx(1.3 * 0.25 / (0.3 * 0.5 + 0.5))
  # Curves over 15 valid pixels, 2 positive. Scores: target (0,1) s(2) = 0.88, target (0,0)
  # s(-5) = 0.0067, false alarm (2,2) s(1) = 0.73, the 12 other negatives s(-5). Thresholds
  # descending: t >= 0.88 predicts nothing (P 1 by convention, R 0); t in [0.73, 0.88): P 1, R 0.5;
  # t in [0.0067, 0.73): P 0.5, R 0.5 (logit -5 is itself a threshold, and "predicted" is strict);
  # t < 0.0067 (logits -30 .. -6): all 15 predicted, P 2/15, R 1.
  # AP = (0.5 - 0) * 1 + (0.5 - 0.5) * 0.5 + (1 - 0.5) * 2/15.
  want_ap = 0.5 * 1.0 + 0.5 * 2 / 15
  assert r["ap"] == pytest.approx(want_ap)
  assert r["f_area"] == pytest.approx(want_ap * r["f_measure"])
  assert int(st.pos_hist.sum()) == 2 and int(st.neg_hist.sum()) == 13


def np_reference(logits, masks, valid):
  """Brute-force NumPy: every threshold by direct comparison, per-image IoU by loops."""
  pred = (logits > 0) & valid
  t = (masks > 0) & valid
  tp, fp, fn = (pred & t).sum(), (pred & ~t).sum(), (~pred & t & valid).sum()
  ious = []
  for pi, ti in zip(pred, t):
    u = (pi | ti).sum()
    ious.append((pi & ti).sum() / u if u else 1.0)
  prec, rec, fpr = [], [], []
  scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
  for th in metrics.CURVE_THRESHOLDS:
    pk = (scores > th) & valid
    tpk, fpk = (pk & t).sum(), (pk & ~t).sum()
    prec.append(tpk / (tpk + fpk) if tpk + fpk else 1.0)
    rec.append(tpk / t.sum())
    fpr.append(fpk / (valid & ~t).sum())
  prec, rec = np.array(prec)[::-1], np.array(rec)[::-1]
  ap = prec[0] * rec[0] + sum(prec[i] * (rec[i] - rec[i - 1]) for i in range(1, len(rec)))
  return {"iou": tp / (tp + fp + fn), "niou": np.mean(ious), "ap": ap, "fpr": np.array(fpr)}


def test_segmentation_metrics_match_numpy_on_random_masks_and_batches_add_up():
  rng = np.random.default_rng(0)
  # Scores on a coarse grid between the curve thresholds so that binning is exact.
  levels = (metrics.CURVE_THRESHOLDS[:-1] + metrics.CURVE_THRESHOLDS[1:]) / 2
  masks = rng.random((6, 20, 17, 1)) > 0.9
  scores = np.where(masks, rng.choice(levels[40:], masks.shape), rng.choice(levels[:70], masks.shape))
  logits = np.log(scores) - np.log1p(-scores)
  valid = np.ones_like(masks); valid[3:, 15:] = False; valid[5] = False
  masks[5] = False  # an all-padding image
  want = np_reference(logits, masks, valid)
  fn = jax.jit(metrics.SegmentationMetrics.from_model_output)
  weight = np.array([1, 1, 1, 1, 1, 0.0])
  st = metrics.SegmentationMetrics.empty()
  for sl in (slice(0, 2), slice(2, 5), slice(5, 6)):  # ragged batches, merged on host
    st = st.merge(jax.device_get(fn(logits[sl].astype(np.float32), masks[sl], valid[sl],
                                    image_weight=weight[sl])))
  got = st.compute()
  assert got["iou"] == pytest.approx(want["iou"])
  assert got["niou"] == pytest.approx(np.mean(np_reference(logits[:5], masks[:5], valid[:5])["niou"]))
  assert got["images"] == 5
  assert got["ap"] == pytest.approx(want["ap"])
  np.testing.assert_allclose(st.curves()["fpr"], want["fpr"])
  assert 0.5 < got["roc_auc"] <= 1.0


def test_curve_thresholds_include_operating_point():
  assert 0.5 in np.round(metrics.CURVE_THRESHOLDS, 12)
  assert np.all(np.diff(metrics.CURVE_THRESHOLDS) > 0)


# ---------------------------------------------------------------- Pd / Fa
def bfs_components(binary):
  """Independent 8-connected labelling: list of pixel lists."""
  seen = np.zeros_like(binary, bool)
  comps = []
  for i, j in zip(*np.nonzero(binary)):
    if seen[i, j]:
      continue
    q, comp = collections.deque([(i, j)]), []
    seen[i, j] = True
    while q:
      a, b = q.popleft()
      comp.append((a, b))
      for da in (-1, 0, 1):
        for db in (-1, 0, 1):
          u, w = a + da, b + db
          if 0 <= u < binary.shape[0] and 0 <= w < binary.shape[1] and binary[u, w] and not seen[u, w]:
            seen[u, w] = True
            q.append((u, w))
    comps.append(comp)
  return comps


def ref_pdfa(pred, mask):
  tc = bfs_components(mask)
  pc = bfs_components(pred)
  pcent = [np.mean(c, axis=0) for c in pc]
  free = list(range(len(pc)))
  # targets in raster order of their first pixel, as ndimage.label numbers them
  tc.sort(key=lambda c: min(c))
  det = 0
  for c in tc:
    cen = np.mean(c, axis=0)
    cands = [(np.linalg.norm(pcent[k] - cen), k) for k in free]
    cands = [x for x in cands if x[0] < 3]
    if cands:
      free.remove(min(cands)[1])
      det += 1
  return len(tc), det, sum(len(pc[k]) for k in free)


def test_pdfa_hand_worked():
  mask = np.zeros((12, 12), bool)
  mask[1:3, 1:3] = True          # target A, centroid (1.5, 1.5)
  mask[8, 8] = mask[9, 9] = True  # target B: diagonal pixels are ONE 8-connected target, (8.5, 8.5)
  pred = np.zeros_like(mask)
  pred[2:4, 2:4] = True          # centroid (2.5, 2.5): 1.41 px from A -> detected
  pred[5, 11] = True             # false alarm, 1 px
  pred[0, 8:11] = True           # false alarm, 3 px (B is 8.6 px away)
  assert metrics.match_targets(pred, mask) == (2, 1, 4)
  r = metrics.PdFa.from_model_output(np.where(pred, 1.0, -1.0)[None, ..., None],
                                     mask[None, ..., None]).compute()
  assert r["pd"] == 0.5 and r["fa"] == pytest.approx(4 / 144) and r["targets"] == 2


def test_pdfa_distance_is_strict_and_one_prediction_matches_one_target():
  mask = np.zeros((10, 10), bool); mask[5, 2] = True; mask[5, 4] = True  # two targets 2 px apart
  pred = np.zeros_like(mask); pred[5, 3] = True                         # 1 px from both
  assert metrics.match_targets(pred, mask) == (2, 1, 0)
  far = np.zeros_like(mask); far[5, 5] = True; only = np.zeros_like(mask); only[5, 2] = True
  assert metrics.match_targets(far, only) == (1, 0, 1)  # exactly 3 px: not detected


def test_pdfa_matches_bfs_reference_on_random_masks():
  rng = np.random.default_rng(1)
  for _ in range(30):
    mask = rng.random((24, 24)) > 0.93
    pred = mask.copy()
    pred ^= rng.random(mask.shape) > 0.95
    assert metrics.match_targets(pred, mask) == ref_pdfa(pred, mask)


def test_components_without_empty_rows_equal_the_whole_image_labelling():
  """metrics.components labels the image without most of its empty rows and columns: the same
  components, in the same order, with the same centroids (bit for bit) and areas as labelling the
  whole image. Sparse and dense images, components on the borders, diagonal links between rows,
  runs of rows parted by one empty row, and empty images."""
  rng = np.random.default_rng(3)
  images = [np.zeros((9, 7), bool), np.ones((5, 6), bool)]
  diagonal = np.zeros((8, 8), bool)
  diagonal[[0, 1, 2, 4, 5], [7, 6, 5, 0, 1]] = True  # two diagonal runs, an empty row between
  images.append(diagonal)
  for density in (0.002, 0.01, 0.05, 0.3):
    for _ in range(10):
      images.append(rng.random((int(rng.integers(1, 90)), int(rng.integers(1, 90)))) < density)
  for binary in images:
    labels, n = metrics.label_components(binary)
    want_cent, want_area = metrics._centroids(labels, n)
    cent, area = metrics.components(binary)
    assert cent.shape == (n, 2) and area.shape == (n,)
    np.testing.assert_array_equal(area, want_area)
    np.testing.assert_array_equal(cent, want_cent)  # exact: the same sums, divided alike
  cent, area = metrics.components(diagonal)
  np.testing.assert_array_equal(area, [3, 2])
  np.testing.assert_array_equal(cent, [[1, 6], [4.5, 0.5]])


def test_pdfa_matches_bfs_reference_on_sparse_images():
  """As above, on larger images with few targets (the IRSTD case: many empty rows)."""
  rng = np.random.default_rng(2)
  for _ in range(20):
    mask = rng.random((64, 48)) > 0.995
    mask[rng.integers(0, 60):, rng.integers(0, 44)] |= rng.random() > 0.5  # a tall thin target
    pred = mask ^ (rng.random(mask.shape) > 0.99)
    assert metrics.match_targets(pred, mask) == ref_pdfa(pred, mask)


def test_pdfa_respects_padding_and_sums_across_batches():
  mask = np.zeros((2, 6, 6, 1)); mask[0, 1, 1] = 1
  logits = np.full((2, 6, 6, 1), -1.0); logits[0, 1, 1] = 1; logits[1, :, 5] = 1
  valid = np.ones_like(mask); valid[1, :, 5] = 0
  a = metrics.PdFa.from_model_output(logits[:1], mask[:1], valid[:1])
  b = metrics.PdFa.from_model_output(logits[1:], mask[1:], valid[1:])
  r = a.merge(b).compute()
  assert (r["pd"], r["fa"], r["targets"]) == (1.0, 0.0, 1)
  assert a.merge(b).pixels == 36 + 30
