"""Training and evaluation loop (the shape of flax/examples/imagenet/train.py).

Data parallel with ``jax.jit`` over a 1-D ``NamedSharding`` mesh (axis ``data``): the state is
replicated, each batch is sharded over its first axis, and XLA inserts the all-reduces, so the
gradients and the BatchNorm statistics are those of the global batch, on 1 device or 512. With
several processes, each reads its own rows of every batch (input_pipeline.TrainLoader, on grain).

``train_and_evaluate`` = ``setup`` (data, state, compiled steps) + ``train_epochs`` (the loop)
+ ``end_of_epoch`` (the evaluation/checkpoint hook); a SIGTERM stops it at a step boundary with a
checkpoint there (``Preemption``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from eaau_jax import checkpoints, input_pipeline, losses, metrics, models, progress, reporting
from eaau_jax import xla_options
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


# ---------------------------------------------------------------- mixed precision
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
  """``config.compute_dtype`` as a dtype (absent, as in configs written before it: float32)."""
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f"unknown {name!r}; expected one of {sorted(COMPUTE_DTYPES)}",
                      "config.compute_dtype")
  return COMPUTE_DTYPES[name]


@dataclasses.dataclass(frozen=True)
class MixedPrecisionApply:
  """``model.apply`` computing in ``dtype``: the float params (not batch_stats) and the image are
  cast to it on the way in, the logits back to float32 on the way out, so the loss, metrics,
  gradients (through the cast), optimizer state and params stay float32. Flax's BatchNorm takes
  its statistics in float32 whatever its input, so batch_stats stay float32 too; the EAAU-Net
  takes a ``valid`` mask in its input's dtype and its masked means in float32 (models.py)."""
  apply_fn: Callable
  dtype: Any

  def __call__(self, variables, images, *args, **kwargs):
    cast = lambda p: p.astype(self.dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p
    variables = {**variables, "params": jax.tree_util.tree_map(cast, variables["params"])}
    out = self.apply_fn(variables, images.astype(self.dtype), *args, **kwargs)
    if kwargs.get("mutable"):
      return out[0].astype(jnp.float32), out[1]
    return out.astype(jnp.float32)


def model_apply(config: ml_collections.ConfigDict, model) -> Callable:
  """The apply function of the train and eval steps: ``model.apply`` itself in float32 (the
  default), ``MixedPrecisionApply`` for ``config.compute_dtype = "bfloat16"``, which only the
  EAAU-Net supports: its gates and per-channel parameters meet the maps through
  models.broadcast_like, so its gradients sum in float32; the baselines' biases and gates would sum
  theirs in bfloat16 (a sum that stops growing near 256), so they refuse it."""
  dtype = compute_dtype(config)
  if dtype == jnp.float32:
    return model.apply
  if not isinstance(model, models.EAAUNet):
    raise ConfigError(
        f"{config.compute_dtype!r} compute is supported for the EAAU-Net only, not "
        f"{config.model.get('name')!r}: its gradients would sum in bfloat16", "config.compute_dtype",
        "leave compute_dtype at 'float32' for the baselines")
  return MixedPrecisionApply(model.apply, dtype)


# ---------------------------------------------------------------- state
def create_train_state(config: ml_collections.ConfigDict, model: models.EAAUNet, total_steps: int,
                       mesh) -> TrainState:
  """Initialised state, replicated over the mesh; its ``apply_fn`` computes in
  ``config.compute_dtype`` (``model_apply``), params and optimizer state are float32."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return xla_options.jit(_initializer(config, model, total_steps), once=True,
                         platform=mesh.devices.flat[0].platform,
                         out_shardings=replicated)(seed_key(config.seed, mesh))


def key_data(seed: int) -> np.ndarray:
  """The raw data of ``jax.random.key(seed)`` (uint32), which ``jax.random.wrap_key_data`` turns
  back into that key."""
  return np.asarray(jax.random.key_data(jax.random.key(seed)))


def key_spec() -> jax.ShapeDtypeStruct:
  """The shape and dtype of ``key_data``'s array, nothing computed (abstract states, lowering)."""
  return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))


def seed_key(seed: int, mesh) -> jax.Array:
  """``key_data(seed)`` replicated over ``mesh``: the initial state and the train step take the
  run's key as an argument, not as a constant compiled into them, so their programs are the same
  for every seed and JAX's persistent compilation cache serves another seed's run too (README,
  start-up; reproduce.py's seeds)."""
  data = key_data(seed)
  return jax.make_array_from_callback(data.shape, NamedSharding(mesh, PartitionSpec()),
                                      lambda index: data[index])


def abstract_train_state(config: ml_collections.ConfigDict, model: models.EAAUNet,
                         total_steps: int = 1) -> TrainState:
  """``create_train_state``'s shapes and dtypes, nothing compiled or computed: the template a
  checkpoint is restored into (its values would be overwritten; compiling them took seconds). The
  restored state keeps the template's optimizer, whose schedule ``total_steps`` sets."""
  return jax.eval_shape(_initializer(config, model, total_steps), key_spec())


def _initializer(config: ml_collections.ConfigDict, model: models.EAAUNet, total_steps: int):
  """The function of the run's key (``seed_key``) that builds the initial state."""
  shape = (1, 32, 32, config.input.channels)
  apply_fn = model_apply(config, model)  # every step applies the model through it

  def init(key):
    variables = model.init(jax.random.wrap_key_data(key), jnp.zeros(shape, jnp.float32))
    return TrainState.create(apply_fn=apply_fn, params=variables["params"],
                             batch_stats=variables["batch_stats"],
                             tx=create_optimizer(config.optimizer, total_steps, config.batch_size))

  return init


def train_step(state: TrainState, batch: dict, key: jax.Array, *, loss_cfg):
  """One optimisation step on the global batch (``key``: the run's, ``seed_key``); also the
  collapse diagnostics of the notes."""
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(key), state.step)

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


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """The jitted ``train_step`` with the run's key bound: ``p_train(state, batch)``, and ``lower``
  as jax.jit's (for the compiled HLO). The key is an argument of the compiled step, not a constant
  in it (``seed_key``)."""
  jitted: Callable
  key: jax.Array

  def __call__(self, state: TrainState, batch: dict):
    return self.jitted(state, batch, self.key)

  def lower(self, state: TrainState, batch: dict):
    return self.jitted.lower(state, batch, self.key)


def compile_steps(config, mesh):
  """The jitted train and eval steps, with the state replicated and batches sharded."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(input_pipeline.DATA_AXIS))
  platform = mesh.devices.flat[0].platform  # XLA options for it: xla_options.py
  jitted = xla_options.jit(functools.partial(train_step, loss_cfg=config.loss), platform=platform,
                           in_shardings=(replicated, sharded, replicated),
                           out_shardings=(replicated, replicated), donate_argnums=0)
  p_eval = xla_options.jit(eval_step, platform=platform, in_shardings=(replicated, sharded),
                           out_shardings=(replicated, sharded))
  return TrainStep(jitted, seed_key(config.seed, mesh)), p_eval


# ---------------------------------------------------------------- evaluation
def evaluate(state, loader: input_pipeline.EvalLoader, p_eval, mesh, num_panels: int = 0,
             desc: str = "val"):
  """Every metric of the protocol (metrics.py) over one split, a few prediction panels, and the
  PR/ROC curves. On a terminal a bar (``desc``) counts the batches, and goes when done."""
  seg = metrics.SegmentationMetrics.empty()
  pdfa = []  # this process's Pd/Fa counts, one PdFa per batch
  panels = []

  def on_host(batch, state_seg, logits):
    nonlocal seg
    seg = seg.merge(jax.device_get(state_seg))  # replicated: already the global batch's
    shards = sorted(logits.addressable_shards, key=lambda s: s.index[0].start or 0)
    local = np.concatenate([np.asarray(s.data) for s in shards])
    pdfa.append(metrics.PdFa.from_model_output(local, batch["mask"], batch["valid"],
                                               image_weight=batch["weight"]))
    if len(panels) < num_panels:
      h, w = batch["sizes"][0]
      panels.append(reporting.prediction_panels(batch["image"][:1, :h, :w], local[:1, :h, :w],
                                                batch["mask"][:1, :h, :w])[0])

  # One batch ahead: the next batch is dispatched (asynchronously) before this one's host work
  # (Pd/Fa labelling, panels), so an accelerator computes while the host labels.
  pending = None
  for batch in progress.bar(loader, len(loader.plan), desc, "batch", leave=False):
    dispatched = (batch,) + tuple(p_eval(state, input_pipeline.to_global(mesh, batch)))
    if pending is not None:
      on_host(*pending)
    pending = dispatched
  if pending is not None:
    on_host(*pending)
  result = seg.compute()
  result.update(all_processes(pdfa).compute())
  return result, panels, seg.curves()


def all_processes(pdfa: list) -> metrics.PdFa:
  """The Pd/Fa counts of every process's rows: each labels the components of its own rows on the
  host, so the counts of the split are the sum over processes (integers: the same in any order,
  so several processes report what one does). One gather per evaluation; per batch, the counts
  are small enough for int32 (JAX's default), and are added up here in int64."""
  counts = np.array([[p.targets, p.detected, p.fa_pixels, p.pixels] for p in pdfa],
                    np.int32).reshape(-1, 4)
  if jax.process_count() > 1:
    counts = multihost_utils.process_allgather(counts)  # (processes, batches, 4)
  total = np.asarray(counts, np.int64).reshape(-1, 4).sum(0)
  return metrics.PdFa(*(int(x) for x in total))


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


def make_eval_loader(config, source, mean, std, protocol=None, batch_size=None,
                     cache: bool = False):
  """Evaluation batches of ``source`` under ``protocol`` (default ``config.eval.protocol``);
  ``cache``: keep them between passes within ``config.input.eval_cache_mb`` (validation)."""
  cache_mb = config.input.get("eval_cache_mb", 0) if cache else 0
  return input_pipeline.EvalLoader(
      source, batch_size or config.input.eval_batch_size, mean, std,
      config.input.eval_pad_multiple, config.input.channels, jax.process_index(),
      jax.process_count(), protocol or config.eval.protocol, config.input.base_size,
      cache_bytes=int(cache_mb * 2**20))


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


class Preemption:
  """A scheduler's notice (SIGTERM, then a short grace period): the loop stops at the next step,
  saves a checkpoint there and the run exits 0, to resume with the same command.

  One process: a SIGTERM handler sets a flag (the handler only sets it, as Python runs it between
  two bytecodes of the loop). Several processes: JAX's preemption service (started by
  ``jax.distributed.initialize``, it catches SIGTERM itself) agrees on one step for every process,
  so all of them save the same step, as orbax's multi-process save needs.
  """

  def __init__(self):
    self.requested = False
    self._multi = jax.process_count() > 1
    self._previous = None
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to stop before ``step`` (called at every step, by every process)."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(Exception):
  """Raised by ``train_and_evaluate`` after a SIGTERM save, so that no caller mistakes the
  stopped run for a finished one (and, say, evaluates and reports it). The CLI exits 0 on it."""

  def __init__(self, step: int, total_steps: int, directory: str):
    super().__init__(f"preempted (SIGTERM) at step {step} of {total_steps}; saved to {directory}")
    self.step, self.total_steps = step, total_steps


@dataclasses.dataclass
class Run:
  """What ``setup`` builds for the loop and its evaluation/checkpoint hook."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  writer: Any
  loader: input_pipeline.TrainLoader
  eval_loader: input_pipeline.EvalLoader
  ckpt: checkpoints.Checkpoints
  meta: dict
  p_train: Any
  p_eval: Any
  report: progress.TrainProgress
  start: int

  @property
  def steps_per_epoch(self) -> int:
    return self.loader.steps_per_epoch

  @property
  def total_steps(self) -> int:
    return self.config.num_epochs * self.loader.steps_per_epoch


def setup(config: ml_collections.ConfigDict, workdir: str) -> tuple[Run, TrainState]:
  """Data, model, the state (restored from ``workdir``'s latest checkpoint if there is one),
  compiled steps, writer and progress."""
  os.makedirs(workdir, exist_ok=True)
  check_divisible(config)
  mesh = input_pipeline.make_mesh()
  is_main = jax.process_index() == 0
  writer = reporting.create_writer(workdir, is_main, config.get("tensorboard", True))
  train_src, eval_src, mean, std = data_and_stats(config)
  loader = input_pipeline.TrainLoader(
      train_src, config.batch_size, config.input.crop_size, config.input.base_size, mean, std,
      config.seed, config.input.channels, config.input.blur_p, jax.process_index(),
      jax.process_count(), config.input.workers, tuple(config.input.scale_range),
      config.input.scale_reference, worker_processes=config.input.worker_processes)
  total_steps = config.num_epochs * loader.steps_per_epoch
  model = models.model_from_config(config.model)
  ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  if ckpt.latest.latest_step() is None:
    state = create_train_state(config, model, total_steps, mesh)
  else:  # resuming: the initial values would be overwritten, so none are compiled or computed
    state = ckpt.restore_latest(abstract_train_state(config, model, total_steps), mesh)
  meta = {"config": config.to_dict(), "mean": mean, "std": std,
          "num_params": models.count_params(state.params)}
  start = int(state.step)
  if start:
    logging.info("Resumed from %s at step %d", ckpt.directory, start)
  else:
    writer.write_hparams({**config.to_dict(), "num_params": meta["num_params"]})
  logging.info("%s: %d params, %d steps/epoch, %d steps, %d devices, %d processes",
               config.model.get("name", "eaau_net"), meta["num_params"], loader.steps_per_epoch,
               total_steps, jax.device_count(), jax.process_count())
  p_train, p_eval = compile_steps(config, mesh)
  report = progress.TrainProgress(total_steps, loader.steps_per_epoch, writer,
                                  config.log_every_steps, show=is_main)
  eval_loader = make_eval_loader(config, eval_src, mean, std, cache=True)  # read once per run
  run = Run(config, workdir, mesh, writer, loader, eval_loader, ckpt, meta, p_train, p_eval, report,
            start)
  return run, state


def evaluate_and_log(run: Run, state: TrainState, step: int) -> dict:
  """The evaluation hook: val metrics to the writer, the log and the progress line."""
  result, panels, _ = evaluate(state, run.eval_loader, run.p_eval, run.mesh,
                               run.config.num_eval_images_logged)
  tag = f"val_{run.eval_loader.protocol}"  # every logged number names its protocol
  run.writer.write_scalars(step, {f"{tag}_{k}": v for k, v in result.items()})
  if panels and jax.process_index() == 0:
    run.writer.write_images(step, {f"{tag}_prediction_{i}": p[None] for i, p in enumerate(panels)})
  logging.info("step %d (epoch %.1f): %s protocol: val IoU %.4f nIoU %.4f Pd %.4f Fa %.3g "
               "F-area %.4f", step, step / run.steps_per_epoch, run.eval_loader.protocol,
               result["iou"], result["niou"], result["pd"], result["fa"], result["f_area"])
  run.report.val(result["iou"], step)
  return result


def end_of_epoch(run: Run, state: TrainState, step: int, epoch: int):
  """The evaluation/checkpoint hook after ``epoch``: evaluate every ``eval_every_epochs`` (and
  after the last), the step then a candidate for best/."""
  c = run.config
  if (epoch + 1) % c.eval_every_epochs == 0 or epoch + 1 == c.num_epochs:
    # Only to best/, and only when the val IoU improves: checkpoints/ is written every
    # checkpoint_every_steps and at the end (a SIGTERM saves where it stops), not at every
    # evaluation: the two saves cost the loop ~1 s an evaluation on an H200 (BENCHMARKS.md).
    run.ckpt.save_best(step, state, run.meta, evaluate_and_log(run, state, step))


def train_epochs(run: Run, state: TrainState, preemption: Preemption):
  """The epoch loop from ``run.start``: steps, train metrics, periodic checkpoints and the
  end-of-epoch hook. Returns (state, step, preempted)."""
  c, history, step = run.config, [], run.start
  lr_fn = learning_rate_schedule(c.optimizer, run.total_steps)
  # One grain iterator for the run, from the restored step (the input's position is the step):
  # it prefetches the next epoch during the end-of-epoch evaluation, and any worker processes
  # start once. Closing it stops them, on preemption too.
  with contextlib.closing(run.loader.iterator(step, c.num_epochs)) as batches:
    for epoch in range(step // run.steps_per_epoch, c.num_epochs):
      for batch in itertools.islice(batches, (epoch + 1) * run.steps_per_epoch - step):
        if preemption.reached(step):
          return state, step, True
        state, step_metrics = run.p_train(state, input_pipeline.to_global(run.mesh, batch))
        history.append(step_metrics)
        step += 1
        loss = None
        if step % c.log_every_steps == 0 or step == run.total_steps:
          loss = _write_train_metrics(run.writer, history, step, float(lr_fn(step - 1)))
          history = []
        run.report(step, loss)
        if step % c.checkpoint_every_steps == 0:
          run.ckpt.save(step, state, run.meta)  # asynchronous: the next steps run while it writes
      end_of_epoch(run, state, step, epoch)
  return state, step, False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains, evaluating on ``config.dataset.eval_split``; resumes from ``workdir`` if it can.
  On SIGTERM saves the current step and raises ``Preempted``. Ends by printing the best and last
  val metrics, what was written where and the commands to go on (summary.training)."""
  t0 = time.monotonic()
  run, state = setup(config, workdir)
  with Preemption() as preemption:
    if run.start == 0:
      evaluate_and_log(run, state, 0)  # the learning curve starts at the initialisation
    state, step, preempted = train_epochs(run, state, preemption)
    run.ckpt.save(step, state, run.meta)
    run.ckpt.close()  # waits for the asynchronous saves: the checkpoint is complete at exit
    if preempted:
      logging.warning("SIGTERM: saved step %d of %d to %s; the same command resumes there",
                      step, run.total_steps, run.ckpt.directory)
  run.writer.flush()
  run.report.close()
  summaries.emit(summaries.training(workdir, run.eval_loader.protocol, config.dataset.eval_split,
                                    step, run.total_steps, config.num_epochs,
                                    time.monotonic() - t0, run.start, preempted),
                 show=jax.process_index() == 0)
  if preempted:
    raise Preempted(step, run.total_steps, run.ckpt.directory)
  return state
