"""Orbax checkpoints: the last K in ``<workdir>/checkpoints``, the best by val IoU in ``<workdir>/best``.

Each checkpoint holds the train state and a JSON ``meta`` item: the run's config, the normalisation
mean/std and the parameter count, so ``--mode=eval`` and ``--mode=predict`` rebuild the very model
that was trained, and say so clearly when the checkpoint and the config disagree.
"""

from __future__ import annotations

import math
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from eaau_jax.errors import CheckpointError  # missing, unreadable or incompatible; names the path

ITEMS = ("state", "meta")


def upgrade_config(stored: dict) -> ml_collections.ConfigDict:
  """A checkpoint's stored config in today's layout. Checkpoints written before the evaluation
  protocols (no ``eval``) were evaluated at native size, read SIRST's idx_427 split, trained with
  ACM's base-size scale, and used MXNet's AdaGrad (``grad_scale`` / ``weight_decay_mode``).
  Those written before ``compute_dtype`` computed in float32."""
  stored = {k: dict(v) if isinstance(v, dict) else v for k, v in stored.items()}
  stored.setdefault("eval", {"protocol": "native"})
  stored.setdefault("compute_dtype", "float32")
  stored["dataset"].setdefault("split_folder", "idx_427")
  stored["input"].setdefault("scale_reference", "base")
  stored["input"].setdefault("scale_range", (0.5, 2.0))
  o = stored["optimizer"]
  if "form" not in o:
    o["form"] = "mxnet" if o.get("weight_decay_mode", "decoupled") == "decoupled" else "pytorch"
    o.pop("grad_scale", None)
    o.pop("weight_decay_mode", None)
  return ml_collections.ConfigDict(stored)


def _manager(directory: str, **options) -> ocp.CheckpointManager:
  # Asynchronous: ``save`` copies the state to host memory and returns; a background thread
  # writes it while training goes on. ``Checkpoints.close`` waits for it (before a run exits).
  # With several processes, orbax syncs each save at barriers named after the step: checkpoints/
  # and best/ save the same step at once, so each manager prefixes its barriers with its folder
  # (without it the second save of a step fails: "Barrier ... is already ongoing").
  prefix = os.path.basename(os.path.normpath(directory))
  return ocp.CheckpointManager(
      os.path.abspath(directory), item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=prefix), **options))


def _abstract(state, mesh):
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)


def _save_args(state, meta: dict):
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """checkpoints/: every N steps and at the end, to resume from the latest. best/: the first step
  with the highest val IoU so far."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(workdir, "checkpoints")
    self.latest = _manager(self.directory, max_to_keep=keep)
    self.best = _manager(os.path.join(workdir, "best"), max_to_keep=1, best_mode="max",
                         best_fn=lambda m: m["iou"])
    self.best_iou = self._kept_best_iou()

  def _kept_best_iou(self) -> float:
    """The val IoU of the step in best/ (a resumed run), else -inf (then the next evaluation is
    saved, and orbax's ``best_fn`` keeps the better of the two)."""
    steps = self.best.all_steps()
    if not steps:
      return -math.inf
    return read_meta(self.best, max(steps)).get("val_metrics", {}).get("iou", -math.inf)

  def save(self, step: int, state, meta: dict):
    """To checkpoints/ (once per step)."""
    if step not in self.latest.all_steps():
      self.latest.save(step, args=_save_args(state, meta))

  def save_best(self, step: int, state, meta: dict, val_metrics: dict) -> bool:
    """To best/ if ``val_metrics["iou"]`` beats the kept one; returns whether it did.

    Saving every evaluated step and letting orbax delete the worse cost the loop ~0.5 s an
    evaluation on an H200 (61 in a paper run) plus the background write: most evaluations do not
    improve (40 of seed 4's 60). Every process holds the same metrics (replicated), so all of them
    take the same branch, as orbax's collective save needs."""
    if not val_metrics["iou"] > self.best_iou or step in self.best.all_steps():
      return False
    self.best_iou = val_metrics["iou"]
    self.best.save(step, metrics=val_metrics,
                   args=_save_args(state, {**meta, "val_metrics": val_metrics}))
    return True

  def restore_latest(self, state, mesh):
    step = self.latest.latest_step()
    if step is None:
      return state
    return restore_state(self.latest, step, state, mesh)

  def close(self):
    for m in (self.latest, self.best):
      m.wait_until_finished()
      m.close()


def restore_state(manager: ocp.CheckpointManager, step: int, template, mesh):
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(template, mesh))))
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
        "checkpoint does not fit the model of this config (different fusion, widths, blocks or "
        f"channels?): {e}", f"{manager.directory}/{step}") from None
  return out.state


def locate(path: str) -> tuple[ocp.CheckpointManager, int]:
  """A checkpoint: a step folder; a workdir (its best, else its latest); or a checkpoints folder."""
  path = os.path.abspath(os.path.expanduser(path))
  hint = ("train one first (main.py --workdir DIR), or give --checkpoint: a workdir, its "
          "checkpoints/ or best/ folder, or a step folder")
  if not os.path.exists(path):
    raise CheckpointError("no such checkpoint or workdir", path, hint)
  missing = CheckpointError("no checkpoint found (looked in best/, checkpoints/ and the path)",
                            path, hint)
  name = os.path.basename(path)
  if name.isdigit():  # a step folder, if its parent holds checkpoints
    parent = ocp.CheckpointManager(os.path.dirname(path), item_names=ITEMS)
    if parent.all_steps():
      if int(name) not in parent.all_steps():
        raise missing
      return parent, int(name)
  for directory in (os.path.join(path, "best"), os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      manager = ocp.CheckpointManager(directory, item_names=ITEMS)
      if manager.all_steps():
        return manager, max(manager.all_steps())
  raise missing


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  try:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # orbax raises several types for a missing/corrupt item
    raise CheckpointError("cannot read the checkpoint's config (not a checkpoint of this "
                          f"project?): {e}", f"{manager.directory}/{step}") from None
