"""Training and evaluation loop (the shape of flax/examples/imagenet/train.py).

Data parallel with ``jax.jit`` over a 1-D ``NamedSharding`` mesh (axis ``data``): the state is
replicated, each batch is sharded over its first axis, and XLA inserts the all-reduces, so the
gradients and the BatchNorm statistics are those of the global batch, on 1 device or 512. With
several processes, each reads its own rows of every batch (input_pipeline.TrainLoader).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec

from eaau_jax import checkpoints, input_pipeline, losses, metrics, models, progress, reporting
from eaau_jax import summary as summaries
from eaau_jax.errors import ConfigError


class TrainState(train_state.TrainState):
  batch_stats: Any


# ---------------------------------------------------------------- optimizer
def learning_rate_schedule(o: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  if o.schedule == "constant":
    main = optax.constant_schedule(o.learning_rate)
  elif o.schedule == "cosine":
    main = optax.cosine_decay_schedule(o.learning_rate, max(total_steps - o.warmup_steps, 1))
  else:
    raise ConfigError(f"config.optimizer.schedule: {o.schedule!r}; expected constant or cosine")
  if not o.warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
  return optax.join_schedules([warmup, main], [o.warmup_steps])


class ScaleByRssTorchState(NamedTuple):
  sum_of_squares: Any


def scale_by_rss_torch(initial_accumulator_value: float = 0.0,
                       eps: float = 1e-10) -> optax.GradientTransformation:
  """PyTorch's AdaGrad normalisation: g / (sqrt(sum g^2) + eps), eps *outside* the square root.

  optax's ``scale_by_rss`` puts eps inside (g / sqrt(sum g^2 + eps)), as MXNet does. The two differ
  where the paper's per-pixel soft-IoU gradients are tiny: with eps outside, the first step is
  lr * sign(g) for every weight with a non-zero gradient.
  """
  def init(params):
    return ScaleByRssTorchState(jax.tree_util.tree_map(
        lambda p: jnp.full_like(p, initial_accumulator_value), params))

  def update(updates, state, params=None):
    del params
    acc = jax.tree_util.tree_map(lambda a, g: a + g * g, state.sum_of_squares, updates)
    out = jax.tree_util.tree_map(lambda g, a: g / (jnp.sqrt(a) + eps), updates, acc)
    return out, ScaleByRssTorchState(acc)

  return optax.GradientTransformation(init, update)


ADAGRAD_FORMS = ("pytorch", "mxnet")


def create_optimizer(o: ml_collections.ConfigDict, total_steps: int,
                     batch_size: int) -> optax.GradientTransformation:
  """AdaGrad in the form of the paper's platform (PyTorch) or of ACM's (MXNet), or Adam.

  pytorch: g' = g + wd * w;  acc += g'^2;  w -= lr * g' / (sqrt(acc) + eps)      (torch.optim.Adagrad)
  mxnet:   g' = g / batch;   acc += g'^2;  w -= lr * (g' / sqrt(acc + eps) + wd * w)
           (gluon's ``trainer.step(batch_size)`` rescales by 1/batch; weight decay is decoupled)
  adam:    optax's Adam with weight decay added to the gradient (torch.optim.Adam's weight_decay).
  """
  chain = []
  if o.name == "adagrad":
    if o.form not in ADAGRAD_FORMS:
      raise ConfigError(f"config.optimizer.form: {o.form!r}; expected one of {ADAGRAD_FORMS}")
    if o.form == "pytorch":
      if o.weight_decay:
        chain.append(optax.add_decayed_weights(o.weight_decay))
      chain.append(scale_by_rss_torch(o.initial_accumulator_value, o.eps))
    else:
      chain += [optax.scale(1.0 / batch_size),
                optax.scale_by_rss(o.initial_accumulator_value, o.eps)]
      if o.weight_decay:
        chain.append(optax.add_decayed_weights(o.weight_decay))
  elif o.name == "adam":
    if o.weight_decay:
      chain.append(optax.add_decayed_weights(o.weight_decay))
    chain.append(optax.scale_by_adam())
  else:
    raise ConfigError(f"config.optimizer.name: {o.name!r}; expected adagrad or adam")
  chain.append(optax.scale_by_learning_rate(learning_rate_schedule(o, total_steps)))
  return optax.chain(*chain)


# ---------------------------------------------------------------- state
def create_train_state(config: ml_collections.ConfigDict, model: models.EAAUNet, total_steps: int,
                       mesh) -> TrainState:
  """Initialised state, replicated over the mesh."""
  c = config.input.channels
  shape = (1, 32, 32, c)

  def init():
    variables = model.init(jax.random.key(config.seed), jnp.zeros(shape, jnp.float32))
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables["batch_stats"],
                             tx=create_optimizer(config.optimizer, total_steps, config.batch_size))

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(init, out_shardings=replicated)()


def train_step(state: TrainState, batch: dict, *, loss_cfg, seed: int):
  """One optimisation step on the global batch; also the collapse diagnostics of the notes."""
  dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)

  def loss_fn(params):
    logits, new_vars = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                      batch["image"], train=True, rngs={"dropout": dropout_key},
                                      mutable=["batch_stats"])
    loss = losses.soft_iou_loss(logits, batch["mask"], reduction=loss_cfg.reduction,
                                smooth=loss_cfg.smooth)
    return loss, (logits, new_vars["batch_stats"])

  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=stats)
  t = batch["mask"]
  p = jax.nn.sigmoid(logits)
  out = {
      "loss": loss,
      # Collapse to all-background shows as target_score -> 0 with positive_fraction -> 0.
      "target_score": jnp.sum(p * t) / jnp.maximum(jnp.sum(t), 1.0),
      "background_score": jnp.sum(p * (1 - t)) / jnp.maximum(jnp.sum(1 - t), 1.0),
      "positive_fraction": jnp.mean((logits > 0).astype(jnp.float32)),
      "target_fraction": jnp.mean(t),
      "grad_norm": optax.global_norm(grads),
  }
  return state, out


def predict_logits(state: TrainState, images: jax.Array, valid=None) -> jax.Array:
  """The model in inference mode (running BatchNorm statistics, no dropout); ``valid`` marks the
  real pixels of a padded batch, so each image's logits are those it gets alone."""
  return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images,
                        train=False, valid=valid)


def eval_step(state: TrainState, batch: dict):
  logits = predict_logits(state, batch["image"], batch["valid"])
  seg = metrics.SegmentationMetrics.from_model_output(logits, batch["mask"], batch["valid"],
                                                      image_weight=batch["weight"])
  return seg, logits


def compile_steps(config, mesh):
  """The jitted train and eval steps, with the state replicated and batches sharded."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(input_pipeline.DATA_AXIS))
  p_train = jax.jit(functools.partial(train_step, loss_cfg=config.loss, seed=config.seed),
                    in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                    donate_argnums=0)
  p_eval = jax.jit(eval_step, in_shardings=(replicated, sharded),
                   out_shardings=(replicated, sharded))
  return p_train, p_eval


# ---------------------------------------------------------------- evaluation
def evaluate(state, loader: input_pipeline.EvalLoader, p_eval, mesh, num_panels: int = 0,
             desc: str = "val"):
  """Every metric of the protocol (metrics.py) over one split, a few prediction panels, and the
  PR/ROC curves. On a terminal a bar (``desc``) counts the batches, and goes when done."""
  seg = metrics.SegmentationMetrics.empty()
  pdfa = metrics.PdFa()
  panels = []
  for batch in progress.bar(loader, len(loader.plan), desc, "batch", leave=False):
    state_seg, logits = p_eval(state, input_pipeline.to_global(mesh, batch))
    seg = seg.merge(jax.device_get(state_seg))
    shards = sorted(logits.addressable_shards, key=lambda s: s.index[0].start or 0)
    local = np.concatenate([np.asarray(s.data) for s in shards])
    pdfa = pdfa.merge(metrics.PdFa.from_model_output(local, batch["mask"], batch["valid"],
                                                     image_weight=batch["weight"]))
    if len(panels) < num_panels:
      h, w = batch["sizes"][0]
      panels.append(reporting.prediction_panels(batch["image"][:1, :h, :w], local[:1, :h, :w],
                                                batch["mask"][:1, :h, :w])[0])
  result = seg.compute()
  result.update(pdfa.compute())
  return result, panels, seg.curves()


# ---------------------------------------------------------------- the loop
def data_and_stats(config):
  """Train/eval sources and the normalisation the config names (or the train split's)."""
  train_src = input_pipeline.open_source(config.dataset, config.dataset.train_split)
  eval_src = input_pipeline.open_source(config.dataset, config.dataset.eval_split)
  mean, std = config.dataset.mean, config.dataset.std
  if mean is None or std is None:
    mean, std = input_pipeline.mean_std(train_src)  # rgb_imagenet: ImageNet's, per channel
    logging.info("normalisation: mean %s, std %s", mean, std)
  as_stat = lambda v: [float(x) for x in v] if np.ndim(v) else float(v)
  return train_src, eval_src, as_stat(mean), as_stat(std)


def make_eval_loader(config, source, mean, std, protocol=None, batch_size=None):
  """Evaluation batches of ``source`` under ``protocol`` (default ``config.eval.protocol``)."""
  return input_pipeline.EvalLoader(
      source, batch_size or config.input.eval_batch_size, mean, std,
      config.input.eval_pad_multiple, config.input.channels, jax.process_index(),
      jax.process_count(), protocol or config.eval.protocol, config.input.base_size)


def check_divisible(config):
  n = jax.device_count()
  for field, value in (("batch_size", config.batch_size),
                       ("input.eval_batch_size", config.input.eval_batch_size)):
    if value % n:
      raise ConfigError(f"{value} is not divisible by {n} devices", f"config.{field}",
                        f"a multiple of {n}: --config.{field}={max(n, value // n * n)}")


def _write_train_metrics(writer, history: list, step: int, learning_rate: float) -> float:
  """Means of the steps since the last log step to the writer; returns the mean loss. Fetching
  them waits for the device, which is why progress is timed on these steps."""
  means = {f"train_{k}": float(np.mean([jax.device_get(m[k]) for m in history]))
           for k in history[0]}
  means["learning_rate"] = learning_rate
  writer.write_scalars(step, means)
  return means["train_loss"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains, evaluating on ``config.dataset.eval_split``; resumes from ``workdir`` if it can.
  Ends by printing the best and last val metrics, what was written where and the commands to go
  on (summary.training)."""
  t0 = time.monotonic()
  os.makedirs(workdir, exist_ok=True)
  check_divisible(config)
  mesh = input_pipeline.make_mesh()
  is_main = jax.process_index() == 0
  writer = reporting.create_writer(workdir, is_main)

  train_src, eval_src, mean, std = data_and_stats(config)
  loader = input_pipeline.TrainLoader(
      train_src, config.batch_size, config.input.crop_size, config.input.base_size, mean, std,
      config.seed, config.input.channels, config.input.blur_p, jax.process_index(),
      jax.process_count(), config.input.workers, tuple(config.input.scale_range),
      config.input.scale_reference)
  eval_loader = make_eval_loader(config, eval_src, mean, std)
  steps_per_epoch = loader.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch

  model = models.model_from_config(config.model)
  state = create_train_state(config, model, total_steps, mesh)
  meta = {"config": config.to_dict(), "mean": mean, "std": std,
          "num_params": models.count_params(state.params)}
  ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = ckpt.restore_latest(state, mesh)
  start = int(state.step)
  if start:
    logging.info("Resumed from %s at step %d", ckpt.directory, start)
  else:
    writer.write_hparams({**config.to_dict(), "num_params": meta["num_params"]})
  logging.info("%s: %d params, %d steps/epoch, %d steps, %d devices, %d processes",
               config.model.get("name", "eaau_net"), meta["num_params"], steps_per_epoch, total_steps,
               jax.device_count(), jax.process_count())

  p_train, p_eval = compile_steps(config, mesh)
  lr_fn = learning_rate_schedule(config.optimizer, total_steps)
  report = progress.TrainProgress(total_steps, steps_per_epoch, writer, config.log_every_steps,
                                  show=is_main)
  tag = f"val_{eval_loader.protocol}"  # every logged number names its protocol

  def evaluate_and_log(state, step):
    result, panels, _ = evaluate(state, eval_loader, p_eval, mesh, config.num_eval_images_logged)
    writer.write_scalars(step, {f"{tag}_{k}": v for k, v in result.items()})
    if panels and is_main:
      writer.write_images(step, {f"{tag}_prediction_{i}": p[None] for i, p in enumerate(panels)})
    logging.info("step %d (epoch %.1f): %s protocol: val IoU %.4f nIoU %.4f Pd %.4f Fa %.3g "
                 "F-area %.4f", step, step / steps_per_epoch, eval_loader.protocol, result["iou"],
                 result["niou"], result["pd"], result["fa"], result["f_area"])
    report.val(result["iou"], step)
    return result

  if start == 0:
    evaluate_and_log(state, 0)  # the learning curve starts at the initialisation
  history = []
  step = start
  for epoch in range(start // steps_per_epoch, config.num_epochs):
    for batch in loader.batches(epoch, start=step - epoch * steps_per_epoch):
      state, step_metrics = p_train(state, input_pipeline.to_global(mesh, batch))
      history.append(step_metrics)
      step += 1
      loss = None
      if step % config.log_every_steps == 0 or step == total_steps:
        loss = _write_train_metrics(writer, history, step, float(lr_fn(step - 1)))
        history = []
      report(step, loss)
      if step % config.checkpoint_every_steps == 0:
        ckpt.save(step, state, meta)
    if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.num_epochs:
      # Also a candidate for best/; a step saved above is not written twice to checkpoints/.
      ckpt.save(step, state, meta, val_metrics=evaluate_and_log(state, step))
  ckpt.save(step, state, meta)
  ckpt.close()
  writer.flush()
  report.close()
  summaries.emit(summaries.training(workdir, eval_loader.protocol, config.dataset.eval_split, step,
                                    total_steps, config.num_epochs, time.monotonic() - t0, start),
                 show=is_main)
  return state
