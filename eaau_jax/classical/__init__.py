"""The paper's nine model-driven (classical) IRSTD detectors in jnp, and its adaptive threshold.

Each detector is a pure function ``image (H, W) -> score map (H, W)`` (bright targets high) with
Table 2's hyper-parameters as keyword defaults. Jit one with its keywords bound and vmap it over a
batch of equal-sized images::

    from eaau_jax import classical
    f = classical.compiled("ipi")            # jax.jit(jax.vmap(partial(ipi, **kw)))
    scores = f(images)                        # (N, H, W) float32, 0..255 grey levels
    logits = classical.score_to_logits(scores)  # > 0 exactly on the paper's mask

Modules: ``filters`` (top-hat, max-median), ``local_contrast`` (RLCM, MPCM, MGDWE, LIGP),
``random_walker`` (FKRW), ``low_rank`` (IPI, RIPT), ``threshold``.
"""

from __future__ import annotations

import functools

import jax

from eaau_jax.classical.filters import max_median, top_hat
from eaau_jax.classical.local_contrast import ligp, mgdwe, mpcm, rlcm
from eaau_jax.classical.low_rank import ipi, ript
from eaau_jax.classical.random_walker import fkrw
from eaau_jax.classical.threshold import adaptive_mask, adaptive_threshold, score_to_logits

# Table 3's order.
DETECTORS = {
    "tophat": top_hat,
    "maxmedian": max_median,
    "rlcm": rlcm,
    "mpcm": mpcm,
    "mgdwe": mgdwe,
    "ligp": ligp,
    "fkrw": fkrw,
    "ipi": ipi,
    "ript": ript,
}

# The low-rank solvers: their float32 iterations amplify rounding, so an image's score map depends
# on whether it was solved alone or in a vmapped batch (batched matmul and eigh round differently).
# Measured for IPI on SIRST idx_320 test images 0-3 at 512 x 512 (acm), a batch of 4 against one
# at a time: score maps apart by 0.27-0.82 of their maximum, adaptive masks by 0-18 pixels.
# compare.py solves these one image per device, so a row does not depend on the batch size.
BATCH_SENSITIVE = ("ipi", "ript")

# The paper's Table 3 on SIRST (IoU, nIoU, CPU seconds per image), for the reports.
PAPER_TABLE3 = {
    "tophat": (0.295, 0.433, 0.006), "maxmedian": (0.135, 0.257, 0.007),
    "rlcm": (0.281, 0.346, 6.85), "mpcm": (0.357, 0.445, 0.347), "mgdwe": (0.163, 0.229, 1.67),
    "ligp": (0.295, 0.410, 0.877), "fkrw": (0.268, 0.339, 0.399), "ipi": (0.466, 0.607, 11.7),
    "ript": (0.146, 0.245, 6.40),
}


@functools.lru_cache(maxsize=None)
def _compiled(name: str, batched: bool, kwargs: tuple):
  f = functools.partial(DETECTORS[name], **dict(kwargs))
  return jax.jit(jax.vmap(f) if batched else f)


def compiled(name: str, batched: bool = True, **kwargs):
  """``jax.jit`` of a detector with keyword hyper-parameters bound, vmapped over a batch axis."""
  return _compiled(name, batched, tuple(sorted(kwargs.items())))


__all__ = ["DETECTORS", "PAPER_TABLE3", "compiled", "adaptive_mask", "adaptive_threshold",
           "score_to_logits", "top_hat", "max_median", "rlcm", "mpcm", "mgdwe", "ligp", "fkrw", "ipi",
           "ript"]
