"""Metric writers and progress reports, with CLU where TensorFlow is installed.

CLU's ``metric_writers`` and ``periodic_actions`` import TensorFlow; the GPU machines have none. So
both are imported lazily, with plain-logging fallbacks that keep the same calls. Every scalar also
goes to ``<workdir>/metrics.jsonl`` (one JSON object per write), readable with no TensorFlow.
"""

from __future__ import annotations

import json
import os
import time
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


class LogWriter(JsonlWriter):
  """Fallback for CLU's LoggingWriter: scalars to the log (and to no TensorBoard)."""

  def __init__(self):
    pass

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def write_hparams(self, hparams):
    logging.info("hparams: %s", hparams)


class MultiWriter:
  def __init__(self, writers):
    self.writers = writers

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self.writers:
        getattr(w, name)(*args, **kwargs)
    return call


def create_writer(workdir: str, is_main: bool = True):
  """TensorBoard + log writer (CLU) on the main process, plus metrics.jsonl; logging elsewhere."""
  writers = []
  try:
    from clu import metric_writers
    writers.append(metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                        asynchronous=False))
  except ImportError as e:  # no TensorFlow: no TensorBoard events, say so once
    logging.warning("CLU metric writers unavailable (%s); logging scalars only", e)
    writers.append(LogWriter())
  if is_main:
    writers.append(JsonlWriter(os.path.join(workdir, "metrics.jsonl")))
  return MultiWriter(writers)


class _PlainProgress:
  """Fallback for clu.periodic_actions.ReportProgress: steps/s and ETA to the log and writer."""

  def __init__(self, num_train_steps, writer, every_steps):
    self._total, self._writer, self._every = num_train_steps, writer, every_steps
    self._last = None

  def __call__(self, step, t=None):
    t = time.monotonic() if t is None else t
    if self._last is None:
      self._last = (step, t)
      return
    if step % self._every and step != self._total:
      return
    s0, t0 = self._last
    rate = (step - s0) / max(t - t0, 1e-9)
    eta = (self._total - step) / max(rate, 1e-9)
    self._writer.write_scalars(step, {"steps_per_sec": rate})
    logging.info("step %d/%d: %.2f steps/s, ETA %.0f min", step, self._total, rate, eta / 60)
    self._last = (step, t)


def create_progress(num_train_steps: int, writer, every_steps: int):
  try:
    from clu import periodic_actions
    # Steps only (no every_secs): reports land on log steps, where the loop has synced the device.
    return periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                           every_steps=every_steps, every_secs=None)
  except ImportError:
    return _PlainProgress(num_train_steps, writer, every_steps)


def prediction_panels(images: np.ndarray, logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """(N, H, 3W, 1) uint8 panels: input | predicted score | mask, for the writer's images."""
  lo = images.min(axis=(1, 2, 3), keepdims=True)
  hi = images.max(axis=(1, 2, 3), keepdims=True)
  x = (images[..., :1] - lo) / np.maximum(hi - lo, 1e-6)
  score = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
  return (255 * np.concatenate([x, score, masks], axis=2)).round().astype(np.uint8)
