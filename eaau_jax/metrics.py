"""Segmentation and target-level metrics for IRSTD, as summable states.

Protocol (one place, so numbers are comparable):
  * A pixel is predicted a target iff its logit > ``threshold`` (0 by default, i.e. score > 0.5).
  * Padded pixels (``valid == 0``) take no part in any count: evaluation is at native resolution.
  * IoU   = sum TP / sum (TP + FP + FN) over every pixel of the split (dataset level).
  * nIoU  = mean over images of TP_i / (TP_i + FP_i + FN_i). Empty-mask rule: an image with no
    target pixel and no predicted pixel scores 1 (nothing to find, nothing found); with no target but
    false alarms it scores 0. (ACM scores the empty/empty case 0; SIRST has no empty image.)
  * Curves: precision, recall (= TPR) and FPR at the fixed thresholds ``CURVE_LOGITS`` (151 of
    them, scores 1e-13 to 1 - 1e-13, compared in logit space so saturated sigmoids do not merge),
    with "predicted" meaning logit > t. AP = sum_k (R_k - R_{k+1}) P_k over the thresholds
    descending (the step-wise area under PR). ROC AUC by the trapezoid rule.
  * F-measure with beta^2 = 0.3 at the operating threshold; F-area = AP * F-measure.
  * Pd/Fa (target level, host side): 8-connected components of mask and prediction; a target is
    detected when an unmatched predicted component's centroid lies closer than 3 px to its centroid
    (greedy, targets in label order, the nearest such component). Pd = detected / targets;
    Fa = pixels of the predicted components matched to no target / valid pixels.

``SegmentationMetrics.from_model_output`` is jit-able; states add up across batches and (as global
sharded arrays) across devices and processes, in integers, so in any order. ``PdFa`` runs on the
host with SciPy's labelling, each process on its own rows (``train.all_processes`` adds them up).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage


def _logit(p):
  p = np.asarray(p, np.float64)
  return np.log(p) - np.log1p(-p)


# Thresholds of the PR/ROC curves, in logit space: every 0.01 of probability in [0.01, 0.99]
# (0.5, logit 0, among them), and logits -30..-5 and 5..30 in steps of 1, because soft-IoU training
# saturates the sigmoid: a grid that stops at scores 1e-4 / 0.9999 misses a large share of pixels.
CURVE_LOGITS = np.concatenate([np.arange(-30.0, -4.0), _logit(np.linspace(0.01, 0.99, 99)),
                               np.arange(5.0, 31.0)])
CURVE_THRESHOLDS = 1.0 / (1.0 + np.exp(-CURVE_LOGITS))  # the same, as probabilities
F_BETA2 = 0.3
PD_DISTANCE = 3.0


# nIoU's fixed point: a per-image IoU in [0, 1] as a multiple of 2^-24 (float32's resolution
# near 1), split into two 12-bit limbs so that int32 sums stay exact for batches of < 2^19 images.
NIOU_UNIT = 2.0 ** -24
NIOU_LIMB = 2 ** 12


def _fixed_point_sum(values, weight):
  """(2,) int32: sum of ``values`` (in [0, 1]) x ``weight`` (0/1) in NIOU_UNITs, as (high, low)."""
  q = jnp.round(values / NIOU_UNIT).astype(jnp.int32) * jnp.round(weight).astype(jnp.int32)
  return jnp.stack([jnp.sum(q // NIOU_LIMB), jnp.sum(q % NIOU_LIMB)])


def _as_valid(masks, valid):
  return jnp.ones(masks.shape, jnp.float32) if valid is None else valid.astype(jnp.float32)


def _divide(a, b, empty=0.0):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.where(b > 0, a / np.where(b > 0, b, 1), empty)


@flax.struct.dataclass
class SegmentationMetrics:
  """Pixel counts over a split: operating point, per-image IoU sum, and score histograms.

  All fields add up (``merge``); ``compute`` turns them into numbers on the host. Histogram bin j
  holds pixels with exactly j curve thresholds (in logit space) below their logit, so the pixels
  predicted positive at threshold k are those in bins > k.

  Every field holds whole numbers, so a sum over devices and processes is the same in any order:
  1 device or 2 processes x 2 devices report identical numbers. The per-image IoUs of nIoU too:
  they are summed in fixed point (``NIOU_UNIT``), where a float32 sum would round differently for
  each way the batch is split.
  """
  tp: jax.Array
  fp: jax.Array
  fn: jax.Array
  tn: jax.Array
  niou_fixed: jax.Array  # (2,) int: sum of per-image IoUs in NIOU_UNITs, as (high, low) limbs
  images: jax.Array
  pos_hist: jax.Array
  neg_hist: jax.Array

  @classmethod
  def from_model_output(cls, logits, masks, valid=None, threshold: float = 0.0,
                        image_weight=None) -> "SegmentationMetrics":
    """Counts of one batch. ``image_weight`` (N,) excludes padding images of a ragged batch."""
    v = _as_valid(masks, valid)
    t = (masks > 0).astype(jnp.float32) * v
    p = (logits > threshold).astype(jnp.float32) * v
    axes = tuple(range(1, logits.ndim))
    tp_i = jnp.sum(p * t, axes)
    fp_i = jnp.sum(p, axes) - tp_i
    fn_i = jnp.sum(t, axes) - tp_i
    n_i = jnp.sum(v, axes)
    union = tp_i + fp_i + fn_i
    iou_i = jnp.where(union > 0, tp_i / jnp.where(union > 0, union, 1.0), 1.0)
    w = jnp.ones(logits.shape[0], jnp.float32) if image_weight is None else image_weight

    edges = jnp.asarray(CURVE_LOGITS, jnp.float32)
    bins = jnp.searchsorted(edges, logits.astype(jnp.float32).ravel(), side="left")
    nbins = len(CURVE_THRESHOLDS) + 1
    # Counts are int32: exact (float32 is not past 2^24 pixels), and a split of 2^31 pixels is ~2000
    # 1k x 1k images; `merge` on host arrays promotes to int64.
    as_int = lambda x: jnp.round(x).astype(jnp.int32)
    pos = jnp.zeros(nbins, jnp.int32).at[bins].add(as_int(t.ravel()))
    neg = jnp.zeros(nbins, jnp.int32).at[bins].add(as_int(v.ravel() - t.ravel()))
    return cls(tp=as_int(jnp.sum(tp_i)), fp=as_int(jnp.sum(fp_i)), fn=as_int(jnp.sum(fn_i)),
               tn=as_int(jnp.sum(n_i - union)), niou_fixed=_fixed_point_sum(iou_i, w),
               images=jnp.sum(w),
               pos_hist=pos, neg_hist=neg)

  @classmethod
  def empty(cls) -> "SegmentationMetrics":
    z = np.zeros((), np.int64)
    h = np.zeros(len(CURVE_THRESHOLDS) + 1, np.int64)
    return cls(tp=z, fp=z, fn=z, tn=z, niou_fixed=np.zeros(2, np.int64), images=np.zeros(()),
               pos_hist=h, neg_hist=h)

  def merge(self, other: "SegmentationMetrics") -> "SegmentationMetrics":
    """Sum of two states; on host (NumPy) arrays counts are promoted to int64."""
    def add(a, b):
      a, b = np.asarray(a), np.asarray(b)
      if a.dtype.kind == "i":
        return a.astype(np.int64) + b.astype(np.int64)
      return a.astype(np.float64) + b.astype(np.float64)
    return jax.tree_util.tree_map(add, self, other)

  def niou_sum(self) -> float:
    high, low = np.asarray(self.niou_fixed, np.int64)
    return float(high * NIOU_LIMB + low) * NIOU_UNIT

  def curves(self) -> dict:
    """Precision, recall, TPR, FPR at each of ``CURVE_THRESHOLDS`` (ascending)."""
    pos = np.asarray(self.pos_hist, np.int64)
    neg = np.asarray(self.neg_hist, np.int64)
    # positives at threshold k: bins k+1..K, i.e. a reverse cumulative sum shifted by one.
    tp = np.cumsum(pos[::-1])[::-1][1:]
    fp = np.cumsum(neg[::-1])[::-1][1:]
    p_all, n_all = pos.sum(), neg.sum()
    precision = _divide(tp, tp + fp, empty=1.0)  # no prediction: precision 1 (sklearn's convention)
    recall = _divide(tp, p_all)
    return {"thresholds": CURVE_THRESHOLDS.copy(), "precision": precision, "recall": recall,
            "tpr": recall, "fpr": _divide(fp, n_all)}

  def compute(self) -> dict:
    tp, fp, fn = (float(np.asarray(x)) for x in (self.tp, self.fp, self.fn))
    c = self.curves()
    # Descending thresholds: recall grows; AP = sum (R_k - R_{k-1}) P_k, starting from recall 0.
    r, p = c["recall"][::-1], c["precision"][::-1]
    ap = float(np.sum(np.diff(np.concatenate([[0.0], r])) * p))
    fpr = np.concatenate([[0.0], c["fpr"][::-1], [1.0]])
    tpr = np.concatenate([[0.0], c["tpr"][::-1], [1.0]])
    precision = float(_divide(tp, tp + fp))
    recall = float(_divide(tp, tp + fn))
    f = float(_divide((1 + F_BETA2) * precision * recall, F_BETA2 * precision + recall))
    images = float(np.asarray(self.images))
    return {"iou": float(_divide(tp, tp + fp + fn)),
            "niou": float(_divide(self.niou_sum(), images)),
            "precision": precision, "recall": recall, "f_measure": f, "ap": ap,
            "f_area": ap * f, "roc_auc": float(np.trapezoid(tpr, fpr)), "images": images}


def label_components(binary: np.ndarray):
  """8-connected components of a 2-D boolean array: (labels, count)."""
  return ndimage.label(binary, structure=np.ones((3, 3), bool))


def _centroids(labels: np.ndarray, n: int, row_of=None, col0: int = 0):
  """((n, 2) centroids (row, col), (n,) areas) of components 1..n of a label image; its row i is
  the image's row ``row_of[i]`` and its first column the image's ``col0``. From the labelled
  pixels' coordinates by ``bincount``: ndimage.center_of_mass with a list of labels took ~11 ms
  for 140 components of a 512 x 512 image, most of a validation's Pd/Fa. The image's coordinates
  are summed (whole numbers: exact), so a centroid is the same float however it was cropped."""
  rows, cols = np.nonzero(labels)
  lab = labels[rows, cols]
  if row_of is not None:
    rows = row_of[rows]
  area = np.bincount(lab, minlength=n + 1)[1:]
  cent = [np.bincount(lab, weights=x, minlength=n + 1)[1:] / area for x in (rows, cols + col0)]
  return np.stack(cent, axis=1), area


def components(binary: np.ndarray):
  """((n, 2) centroids (row, col), (n,) areas) of the 8-connected components of a 2-D boolean
  array, in ``label_components``' order (raster order of each component's first pixel).

  Labelled without most of the empty rows: every non-empty row is kept with the row after it, so
  one empty row still parts each run of non-empty rows from the next (a component's rows are
  consecutive and none is empty: none crosses an empty row), then cropped to the non-empty
  columns. The same components in the same order, on a fraction of the pixels: IRSTD masks and
  predictions are sparse (benchmarks/validation_host.py)."""
  binary = np.asarray(binary, bool)
  filled = binary.any(axis=1)
  if not filled.any():
    return np.zeros((0, 2)), np.zeros(0, np.int64)
  keep = filled.copy()
  keep[1:] |= filled[:-1]
  row_of = np.flatnonzero(keep)
  compact = binary[row_of]
  cols = np.flatnonzero(compact.any(axis=0))
  labels, n = label_components(compact[:, cols[0]:cols[-1] + 1])
  return _centroids(labels, n, row_of, cols[0])


def match_targets(pred: np.ndarray, mask: np.ndarray, distance: float = PD_DISTANCE):
  """Target-level matching of one image (2-D arrays). Returns (targets, detected, fa_pixels)."""
  t_cent, t_area = components(mask > 0)
  p_cent, p_area = components(pred > 0)
  unmatched = np.ones(len(p_area), bool)
  detected = 0
  for c in t_cent:
    if not unmatched.any():
      break
    d = np.linalg.norm(p_cent - c, axis=1)
    d[~unmatched] = np.inf
    j = int(np.argmin(d))
    if d[j] < distance:
      unmatched[j] = False
      detected += 1
  return len(t_area), detected, int(p_area[unmatched].sum())


@flax.struct.dataclass
class PdFa:
  """Target-level probability of detection and false-alarm pixel rate (host side, NumPy)."""
  targets: int = 0
  detected: int = 0
  fa_pixels: int = 0
  pixels: int = 0

  @classmethod
  def from_model_output(cls, logits, masks, valid=None, threshold: float = 0.0,
                        image_weight=None) -> "PdFa":
    logits, masks = np.asarray(logits), np.asarray(masks)
    valid = np.ones(masks.shape, bool) if valid is None else np.asarray(valid) > 0
    weight = np.ones(len(logits)) if image_weight is None else np.asarray(image_weight)
    out = cls()
    for lg, m, v, w in zip(logits, masks, valid, weight):
      if w <= 0:
        continue
      pred = (lg[..., 0] > threshold) & v[..., 0]
      n_t, det, fa = match_targets(pred, (m[..., 0] > 0) & v[..., 0])
      out = out.merge(cls(n_t, det, fa, int(v[..., 0].sum())))
    return out

  def merge(self, other: "PdFa") -> "PdFa":
    return PdFa(self.targets + other.targets, self.detected + other.detected,
                self.fa_pixels + other.fa_pixels, self.pixels + other.pixels)

  def compute(self) -> dict:
    return {"pd": float(_divide(self.detected, self.targets)),
            "fa": float(_divide(self.fa_pixels, self.pixels)), "targets": self.targets}
