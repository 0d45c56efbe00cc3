"""What a run leaves a person with: its numbers, what it wrote where, and the commands to go on.

Training, ``--mode=eval`` and ``--mode=predict`` each end by printing one of these texts to stdout
(process 0 only). They are pure functions of what the run wrote, so tests read them directly.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import sys
from typing import Optional

from eaau_jax.progress import format_duration

# The metrics a summary line shows, in order: (label, key, format).
SHOWN = (("IoU", "iou", ".4f"), ("nIoU", "niou", ".4f"), ("Pd", "pd", ".4f"), ("Fa", "fa", ".3g"),
         ("F-area", "f_area", ".4f"))


def _shown(path: str) -> str:
  """A path as typed: relative to the current folder when inside it, else absolute."""
  path = os.path.abspath(path)
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def program() -> str:
  """How this program was started, to quote in commands: ``eaau-jax`` (the installed command) or
  ``<python> main.py`` (with the interpreter that runs now, so a venv's is named)."""
  if os.path.basename(sys.argv[0]) == "eaau-jax":
    return "eaau-jax"
  script = sys.argv[0] if os.path.basename(sys.argv[0]) == "main.py" else "main.py"
  return f"{shlex.quote(_shown(sys.executable))} {shlex.quote(_shown(script))}"


def _tensorboard() -> str:
  beside = os.path.join(os.path.dirname(sys.executable), "tensorboard")
  return shlex.quote(_shown(beside)) if os.path.exists(beside) else "tensorboard"


def metrics_line(m: dict, prefix: str = "") -> str:
  return "  ".join(f"{label} {m[prefix + key]:{fmt}}" for label, key, fmt in SHOWN
                   if prefix + key in m)


def _steps(directory: str) -> list[int]:
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
      directory) else []


def val_rows(workdir: str, protocol: str) -> list[dict]:
  """The validation rows of ``metrics.jsonl`` (a resumed run may repeat a step: the later wins)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if f"val_{protocol}_iou" in row:
        rows[row["step"]] = row
  return [rows[s] for s in sorted(rows)]


# How a training run's summary begins when a SIGTERM stopped it (main.py then exits 0, a clean
# stop): scripts that run main.py read it to tell a saved, unfinished run from a finished one.
PREEMPTED = "Training stopped by SIGTERM"


def training(workdir: str, protocol: str, split: str, step: int, total_steps: int,
             epochs: int, seconds: float, start: int = 0, preempted: bool = False) -> str:
  """The text that ends a training run (``preempted``: stopped by SIGTERM, to be resumed)."""
  q = lambda p: shlex.quote(_shown(p))
  resumed = f", resumed at step {start}" if start else ""
  done = PREEMPTED if preempted else "Training done"
  lines = [f"{done}: step {step} of {total_steps} ({epochs} epochs) in "
           f"{format_duration(seconds)} wall time{resumed}."]
  if preempted:
    lines.append(f"  resume: run the same command again (it goes on from step {step})")
  rows = val_rows(workdir, protocol)
  tag = f"val_{protocol}_"
  if rows:
    best = max(rows, key=lambda r: r[tag + "iou"])  # the first of equals, as best/ keeps
    lines += [f"Validation ({split} split, {protocol} protocol):",
              f"  best   step {best['step']:>6}:  {metrics_line(best, tag)}",
              f"  last   step {rows[-1]['step']:>6}:  {metrics_line(rows[-1], tag)}"]
  saved = {d: _steps(os.path.join(workdir, d)) for d in ("checkpoints", "best")}
  reports = sorted(glob.glob(os.path.join(workdir, "eval", "eval_*.md")))
  # Events exist only where CLU's writer ran (TensorFlow installed and config.tensorboard on:
  # reporting.create_writer).
  events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  lines += [f"Written to {_shown(workdir)}:",
            "  checkpoints     " + ", ".join(
                f"{_shown(os.path.join(workdir, d, str(s[-1])))} ({what})"
                for (d, s), what in zip(saved.items(), ("latest", "best val IoU")) if s),
            f"  TensorBoard     {_shown(workdir)}/events.out.tfevents.*" if events else
            "  TensorBoard     none (CLU's writer did not run: no TensorFlow here, or "
            "config.tensorboard=False)",
            f"  metrics         {_shown(os.path.join(workdir, 'metrics.jsonl'))}",
            f"  eval reports    {_shown(os.path.join(workdir, 'eval'))}/ " + (
                f"({', '.join(os.path.basename(r) for r in reports)})" if reports else
                "(none yet: the evaluate command below writes them)"),
            "Next:",
            f"  evaluate        {program()} --mode=eval --workdir {q(workdir)}",
            f"  predict         {program()} --mode=predict --workdir {q(workdir)} --input IMAGES "
            f"--output {q(os.path.join(workdir, 'predictions'))}"]
  if events:
    lines.append(f"  TensorBoard     {_tensorboard()} --logdir {q(workdir)}")
  return "\n".join(lines)


def evaluation(checkpoint: str, split: str, reports: dict, output_dir: str) -> str:
  """The text that ends ``--mode=eval``: each protocol's numbers and the files written."""
  first = next(iter(reports.values()))
  lines = [f"Evaluated {first['checkpoint']} on {split} "
           f"({int(first['metrics']['images'])} images):"]
  lines += [f"  {p:<7} {metrics_line(r['metrics'])}" for p, r in reports.items()]
  lines.append(f"Written to {_shown(output_dir)}:")
  lines += [f"  eval_{split}_{p}.json, .md, _curves.png" for p in reports]
  return "\n".join(lines)


def prediction(checkpoint: str, protocol: str, threshold: float, counts: dict, failed: list,
               output_dir: str, detections_path: str) -> str:
  """The text that ends ``--mode=predict``: counts ({images, targets, with_targets}), the files
  written, and each unreadable image."""
  n = counts["images"] + len(failed)
  lines = [f"Predicted {counts['images']} of {n} images with {checkpoint}, {protocol} protocol, "
           f"threshold {threshold:g} (score > {threshold:g}):",
           f"  {counts['targets']} targets in {counts['with_targets']} images",
           f"Written to {_shown(output_dir)}:",
           f"  <name>_mask.png, <name>_overlay.png   {counts['images']} each",
           f"  {os.path.basename(detections_path):<35} targets per image (centroid, bbox, "
           "area, peak score)"]
  if failed:
    lines.append(f"{len(failed)} image{'s' * (len(failed) > 1)} could not be read:")
    lines += [f"  {f['file']}: {f['error']}" for f in failed]
  return "\n".join(lines)


def emit(text: str, show: Optional[bool] = None):
  """Prints a summary on process 0 (stdout: the run's result, apart from the log on stderr)."""
  if show is None:
    from eaau_jax.progress import is_main_process  # pylint: disable=g-import-not-at-top
    show = is_main_process()
  if show:
    print(text, flush=True)
