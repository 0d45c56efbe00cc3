"""Progress a person can watch: tqdm bars on a terminal, plain log lines everywhere else.

On a terminal (stderr is one, or ``EAAU_PROGRESS=tty``): training is one updating line (epoch,
step, loss, steps/s, ETA, last val IoU), and evaluation, prediction and the first dataset build
(tfds's own tqdm bars) have bars. Elsewhere (CI, a log file, ``EAAU_PROGRESS=plain``): one log line
per log step, and no bars. Either way only process 0 reports, and steps/s go to the metric writer.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Optional

import tqdm
from absl import logging

ENV = "EAAU_PROGRESS"  # tty: bars even off a terminal (tests, `script`); plain: log lines only


def on_terminal(stream=None) -> bool:
  """Whether progress is drawn as bars: ``EAAU_PROGRESS`` if set, else whether ``stream`` (stderr,
  where tqdm and absl write) is a terminal."""
  mode = os.environ.get(ENV, "").strip().lower()
  if mode in ("tty", "1", "bar"):
    return True
  if mode in ("plain", "0", "log"):
    return False
  stream = sys.stderr if stream is None else stream
  return bool(getattr(stream, "isatty", lambda: False)())


def is_main_process() -> bool:
  import jax  # pylint: disable=g-import-not-at-top  (this module is imported before flags parse)
  return jax.process_index() == 0


def bar(iterable: Iterable, total: Optional[int] = None, desc: str = "", unit: str = "it",
        leave: bool = True, stream=None):
  """``iterable`` with a tqdm bar on a terminal (process 0); elsewhere ``iterable`` itself."""
  if not (on_terminal(stream) and is_main_process()):
    return iterable
  route_logs_through_bars()
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                   file=sys.stderr if stream is None else stream)


class _ThroughBars:
  """A stream that prints through ``tqdm.write``, so a log line lands above a live bar."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    tqdm.tqdm.write(text, file=self._stream, end="")

  def flush(self):
    self._stream.flush()

  def close(self):  # logging's shutdown closes handler streams; stderr stays open
    pass


def route_logs_through_bars():
  """absl's log lines go through ``tqdm.write`` from the first bar on (whichever entry point
  drew it); without this each log line would be written over a live bar and leave a torn copy
  of it behind."""
  handler = logging.get_absl_handler().python_handler
  if not isinstance(handler.stream, _ThroughBars):
    handler.stream = _ThroughBars(handler.stream)


def format_duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0)))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


class TrainProgress:
  """Training progress, called after every step (``loss`` on log steps, where the loop has
  fetched it from the device, so timing there measures training, not asynchronous dispatch).

  Every ``every_steps`` steps (and at the last) steps/s over the last interval go to ``writer``;
  off a terminal the same step also logs one line: step, epoch, loss, steps/s, ETA, last val IoU.
  On a terminal a single tqdm line shows the same, updated each step. ``show=False`` (processes
  other than 0): neither.
  """

  def __init__(self, total_steps: int, steps_per_epoch: int, writer, every_steps: int,
               show: bool = True, stream=None):
    self.total, self.per_epoch, self.every = total_steps, steps_per_epoch, every_steps
    self._writer, self._show = writer, show
    self._last = None  # (step, time): the first step (compilation) is not timed
    self._loss = self._val = None
    self._bar = None
    self._stream = (sys.stderr if stream is None else stream) if show and on_terminal(
        stream) else None

  def _epoch(self, step: int) -> str:
    epochs = -(-self.total // self.per_epoch)
    return f"epoch {max(-(-step // self.per_epoch), 1)}/{epochs}"

  def _postfix(self) -> str:
    parts = [f"loss {self._loss:.4f}"] if self._loss is not None else []
    if self._val is not None:
      parts.append(f"val IoU {self._val[0]:.4f} (step {self._val[1]})")
    return ", ".join(parts)

  def val(self, iou: float, step: int):
    """The latest validation IoU, shown until the next."""
    self._val = (float(iou), int(step))
    if self._bar is not None:
      self._bar.set_postfix_str(self._postfix())

  def __call__(self, step: int, loss: Optional[float] = None, t: Optional[float] = None):
    t = time.monotonic() if t is None else t
    if loss is not None:
      self._loss = float(loss)
    if self._stream is not None and self._bar is None:
      # Drawn from the first step on, so that its steps/s and ETA leave out the compilation.
      route_logs_through_bars()
      self._bar = tqdm.tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True,
                            desc=self._epoch(step), file=self._stream)
    if self._bar is not None:
      self._bar.set_description_str(self._epoch(step), refresh=False)
      self._bar.set_postfix_str(self._postfix(), refresh=False)
      self._bar.update(step - self._bar.n)
    if self._last is None:
      self._last = (step, t)
      return
    if step % self.every and step != self.total:
      return
    rate = (step - self._last[0]) / max(t - self._last[1], 1e-9)
    self._writer.write_scalars(step, {"steps_per_sec": rate})
    if self._show and self._stream is None:
      eta = format_duration((self.total - step) / max(rate, 1e-9))
      logging.info("step %d/%d, %s: %s, %.2f steps/s, ETA %s", step, self.total, self._epoch(step),
                   self._postfix() or "-", rate, eta)
    self._last = (step, t)

  def close(self):
    if self._bar is not None:
      self._bar.close()
