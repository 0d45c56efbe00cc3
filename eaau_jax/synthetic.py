"""A synthetic infrared small-target dataset: dim 1-9 px targets in cloud, sea or ground clutter.

Every example is a pure function of (seed, split, index), so the dataset needs no download, no disk,
and is the same on every machine and process. Examples look like SIRST's: uint8 (H, W, 1) image,
{0, 1} mask, id, original size, number of targets (0 to 3; some images have none).

Clutter:
  * cloud: fractal (1/f) noise, sums of Gaussian-smoothed noise at scales 2..32 px;
  * sea: horizontal swell with random wavelength, plus small bright glints (target-like clutter);
  * ground: smoothed texture with bright rectangular structures (buildings, roads) and edges.
Targets: elliptical Gaussian blobs, diameter 1-9 px, peak contrast 2-8 x the local clutter std
above the local mean; the mask is the blob's pixels above half its peak (at least its centre pixel).
Sensor noise (Gaussian, sigma 1-4 grey levels) is added last.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from eaau_jax.metrics import label_components

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "trainval": 3}
BACKGROUNDS = ("cloud", "sea", "ground")


def _rescale(x, lo, hi):
  x = x - x.min()
  return lo + (hi - lo) * x / max(float(x.max()), 1e-9)


def _cloud(rng, h, w):
  out = np.zeros((h, w))
  for scale in (2, 4, 8, 16, 32):
    out += scale * ndimage.gaussian_filter(rng.standard_normal((h, w)), scale, mode="wrap")
  return out


def _sea(rng, h, w):
  yy, xx = np.mgrid[:h, :w].astype(float)
  wavelength = rng.uniform(4, 14)
  swell = np.sin(2 * np.pi * (yy + 0.15 * xx * rng.uniform(-1, 1)) / wavelength)
  out = swell * (1 + 0.5 * ndimage.gaussian_filter(rng.standard_normal((h, w)), 8))
  out += 0.4 * yy / h  # sky-to-sea brightness gradient
  glints = rng.random((h, w)) > 0.997
  return out + 2.5 * ndimage.gaussian_filter(glints.astype(float), 0.7)


def _ground(rng, h, w):
  out = 3 * ndimage.gaussian_filter(rng.standard_normal((h, w)), 3)
  for _ in range(rng.integers(2, 7)):
    y, x = rng.integers(0, h), rng.integers(0, w)
    rh, rw = rng.integers(3, max(4, h // 4)), rng.integers(3, max(4, w // 4))
    out[y:y + rh, x:x + rw] += rng.uniform(-1.5, 2.5)
  return ndimage.gaussian_filter(out, 0.8)


CLUTTER = {"cloud": _cloud, "sea": _sea, "ground": _ground}


def _size(rng: np.random.Generator, size_range) -> tuple[int, int]:
  """An example's (height, width): the first draws of its generator."""
  return tuple(int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))


def make_example(seed: int, split: str, index: int, size_range=(96, 160),
                 max_targets: int = 3) -> dict:
  """One example of the synthetic dataset; the same (seed, split, index) gives the same example."""
  rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
  h, w = _size(rng, size_range)
  kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  image = _rescale(CLUTTER[kind](rng, h, w), rng.uniform(30, 90), rng.uniform(120, 200))
  mask = np.zeros((h, w), bool)
  yy, xx = np.mgrid[:h, :w].astype(float)
  n_targets = int(rng.integers(0, max_targets + 1))
  for _ in range(n_targets):
    cy, cx = rng.uniform(6, h - 6), rng.uniform(6, w - 6)
    diameter = rng.uniform(1, 9)
    sy, sx = (diameter / 2.355) * rng.uniform(0.7, 1.3, 2)  # FWHM = diameter
    blob = np.exp(-0.5 * (((yy - cy) / max(sy, 0.3)) ** 2 + ((xx - cx) / max(sx, 0.3)) ** 2))
    win = image[max(int(cy) - 8, 0):int(cy) + 9, max(int(cx) - 8, 0):int(cx) + 9]
    contrast = rng.uniform(2, 8) * max(float(win.std()), 3.0)
    image = image + contrast * blob
    mask |= blob >= 0.5
    mask[int(round(cy)), int(round(cx))] = True
  image = image + rng.normal(0, rng.uniform(1, 4), (h, w))
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return {"image": image[..., None], "mask": mask.astype(np.uint8)[..., None],
          "id": f"synthetic_{split}_{index}", "size": np.array([h, w], np.int32),
          "num_targets": np.int32(label_components(mask)[1])}


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
  """Random-access source of ``num_examples`` synthetic examples of one split (like tfds.data_source)."""
  split: str
  num_examples: int
  seed: int = 0
  size_range: tuple = (96, 160)

  def __post_init__(self):
    if self.split not in SPLIT_CODES:
      raise ValueError(f"synthetic dataset has splits {sorted(SPLIT_CODES)}, not {self.split!r}")

  def __len__(self):
    return self.num_examples

  def image_size(self, index: int) -> tuple[int, int]:
    """The example's size without generating its pixels (EvalLoader plans buckets from it)."""
    return _size(np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)]),
                 tuple(self.size_range))

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_examples:
      raise IndexError(f"synthetic {self.split}: index {index} out of range [0, {self.num_examples})")
    return make_example(self.seed, self.split, int(index), tuple(self.size_range))
