"""Metric writers: TensorBoard events with CLU where TensorFlow is installed, and metrics.jsonl.

CLU's ``metric_writers`` import TensorFlow; the GPU machines have none. So it is imported lazily,
and every scalar also goes to ``<workdir>/metrics.jsonl`` (one JSON object per write), readable
with no TensorFlow. Progress (steps/s, ETA) is ``progress.py``'s.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from absl import logging


class JsonlWriter:
  """Appends {"step": s, name: value, ...} lines to a file; the one record every run keeps."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_images(self, step, images):
    pass

  def write_hparams(self, hparams):
    with open(os.path.join(os.path.dirname(self._path), "hparams.json"), "w") as f:
      json.dump(hparams, f, indent=1, sort_keys=True, default=str)

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter:
  def __init__(self, writers):
    self.writers = writers

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self.writers:
        getattr(w, name)(*args, **kwargs)
    return call


def create_writer(workdir: str, is_main: bool = True, tensorboard: bool = True):
  """TensorBoard events (CLU's SummaryWriter, unless ``tensorboard`` is False: it imports
  TensorFlow) and metrics.jsonl on the main process; nothing elsewhere. No scalar goes to the log:
  progress.TrainProgress logs one line per log step, and CLU's LoggingWriter would add a line per
  write (several per step, over a live bar)."""
  if not is_main:
    return MultiWriter([])
  writers = [JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
  if not tensorboard:
    logging.info("config.tensorboard is False: metrics.jsonl only")
    return MultiWriter(writers)
  try:
    from clu import metric_writers
    writers.insert(0, metric_writers.SummaryWriter(workdir))
  except ImportError as e:  # no TensorFlow: no TensorBoard events, say so once
    logging.warning("CLU metric writers unavailable (%s); metrics.jsonl only", e)
  return MultiWriter(writers)


def prediction_panels(images: np.ndarray, logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """(N, H, 3W, 1) uint8 panels: input | predicted score | mask, for the writer's images."""
  lo = images.min(axis=(1, 2, 3), keepdims=True)
  hi = images.max(axis=(1, 2, 3), keepdims=True)
  x = (images[..., :1] - lo) / np.maximum(hi - lo, 1e-6)
  score = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
  return (255 * np.concatenate([x, score, masks], axis=2)).round().astype(np.uint8)
