"""Soft-IoU loss (ACM/ALCNet/EAAU-Net)."""

from typing import Optional

import jax
import jax.numpy as jnp

REDUCTIONS = ("batch", "image")


def soft_iou_loss(logits: jax.Array, masks: jax.Array, valid: Optional[jax.Array] = None,
                  reduction: str = "batch", smooth: float = 1.0) -> jax.Array:
  """L = 1 - (sum p*t + smooth) / (sum p + sum t - sum p*t + smooth), p = sigmoid(logits).

  Args:
    logits: (N, H, W, 1) raw scores.
    masks: same shape, targets in {0, 1}.
    valid: optional same-shape {0, 1} weights; padded pixels (0) take no part in the sums.
    reduction: ``batch`` sums over the whole batch before the ratio (ACM's form, so small targets
      weigh by their pixels); ``image`` takes the ratio per image and averages (each image weighs
      the same, so an image with one 3x3 target counts as much as one with a large target).
    smooth: added to numerator and denominator (ACM uses 1); keeps the loss and its gradient
      finite when both mask and prediction are empty.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"soft_iou_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  t = masks.astype(jnp.float32)
  if valid is not None:
    p = p * valid
    t = t * valid
  axes = None if reduction == "batch" else tuple(range(1, logits.ndim))
  inter = jnp.sum(p * t, axis=axes)
  union = jnp.sum(p, axis=axes) + jnp.sum(t, axis=axes) - inter
  return 1.0 - jnp.mean((inter + smooth) / (union + smooth))
