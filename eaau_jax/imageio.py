"""Reading IRSTD images and masks from disk, with one documented conversion rule.

Images become uint8 grayscale (H, W, 1):
  * ``L``: as stored.  ``1``: 0/255.
  * ``P`` (palette), ``RGB``, ``RGBA``, ``LA``: PIL's ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B,
    of the palette colours; alpha is dropped (SIRST's RGB/RGBA images are grey in every channel).
  * 16-bit and 32-bit integer or float (``I;16``, ``I``, ``F``): per-image min-max stretch to 0..255
    (rounded). A fixed 65535 -> 255 scale would crush 12/14-bit sensor data into a few grey levels; a
    constant image becomes all 0.
Masks become uint8 (H, W, 1) in {0, 1}: the stored values must be {0}, {0, 255}, {0, 1} or {1}/{255}
(``1``/``L``/``P``/``RGB`` with equal channels); anything else (anti-aliased edges, labels) is an error.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from eaau_jax.errors import DataError  # bad input data; the message names the file
from eaau_jax.metrics import label_components


def _open(path) -> Image.Image:
  try:
    im = Image.open(path)
    im.load()
    return im
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: unreadable or corrupt image ({e})") from None


def to_grayscale(im: Image.Image) -> np.ndarray:
  """A PIL image as uint8 (H, W) by the rule in the module docstring."""
  if im.mode in ("L", "1", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA"):
    return np.asarray(im.convert("L"), np.uint8)
  a = np.asarray(im).astype(np.float64)  # I;16*, I, F
  if a.ndim == 3:
    a = a.mean(axis=-1)
  lo, hi = float(a.min()), float(a.max())
  if hi <= lo:
    return np.zeros(a.shape, np.uint8)
  return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_grayscale(path) -> np.ndarray:
  """uint8 (H, W, 1) grayscale image; DataError naming the file if it cannot be read."""
  return to_grayscale(_open(path))[..., None]


def read_image(path, rgb: bool = False) -> np.ndarray:
  """uint8 (H, W, 1) grey by the module's rule, or with ``rgb`` (H, W, 3) by PIL's
  ``convert('RGB')`` (ACM's read), from one decode of the file."""
  im = _open(path)
  return np.asarray(im.convert("RGB"), np.uint8) if rgb else to_grayscale(im)[..., None]


def read_mask(path) -> np.ndarray:
  """uint8 (H, W, 1) binary mask in {0, 1}; DataError naming the file if it is not binary."""
  im = _open(path)
  if im.mode == "1":
    a = np.asarray(im, np.uint8)
  elif im.mode in ("RGB", "RGBA"):
    rgb = np.asarray(im)[..., :3]
    if not (rgb == rgb[..., :1]).all():
      raise DataError(f"{path}: colour mask (channels differ); expected a binary grey mask")
    a = rgb[..., 0]
  elif im.mode in ("L", "P", "I;16", "I"):
    a = np.asarray(im.convert("L") if im.mode == "P" else im)
  else:
    raise DataError(f"{path}: unsupported mask mode {im.mode!r}")
  values = np.unique(a)
  nonzero = values[values != 0]
  if len(nonzero) > 1 or (len(nonzero) == 1 and nonzero[0] not in (1, 255)):
    shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    raise DataError(f"{path}: mask is not binary: values {{{shown}}}; expected 0 and 255 (or 1)")
  return (a > 0).astype(np.uint8)[..., None]


def read_pair(image_path, mask_path) -> tuple[np.ndarray, np.ndarray]:
  """Image and mask of one sample, checked to exist and to have the same size."""
  if not os.path.exists(image_path):
    raise DataError(f"{image_path}: image file not found")
  if not os.path.exists(mask_path):
    raise DataError(f"{mask_path}: mask file not found (for image {image_path})")
  image, mask = read_grayscale(image_path), read_mask(mask_path)
  if image.shape != mask.shape:
    raise DataError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                    f"{image_path} size {image.shape[1]}x{image.shape[0]}")
  return image, mask


def count_targets(mask: np.ndarray) -> int:
  """Number of 8-connected target components of a (H, W[, 1]) mask."""
  return int(label_components(np.squeeze(mask, -1) > 0 if mask.ndim == 3 else mask > 0)[1])
