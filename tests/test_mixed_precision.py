"""config.compute_dtype (train.model_apply): bfloat16 compute with float32 params, optimizer state,
BatchNorm statistics, loss and metrics; float32, the default, is the computation from before it.

One train step of configs/tiny.py's model (b = 1, widths 8/16/16) on a batch of 4 at 32 x 32, per
compute dtype, computed once for the module (each is a compilation).
"""

from typing import NamedTuple

import jax
import numpy as np
import pytest

from configs import tiny
from eaau_jax import checkpoints, input_pipeline, models, train
from eaau_jax.errors import ConfigError

SHAPE = (4, 32, 32, 1)
# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); through this 12-conv network the
# logits differ from float32's by ~1.5% of their range (measured 0.013-0.015), so 5%. A wrong
# cast (params, image or BatchNorm statistics) moves them by O(1).
LOGITS_TOL = 5e-2


def _config(dtype):
  config = tiny.get_config()
  if dtype is None:
    del config["compute_dtype"]  # a config written before the field
  else:
    config.compute_dtype = dtype
  return config


def _batch(mesh):
  rng = np.random.default_rng(0)
  x = rng.normal(size=SHAPE).astype(np.float32)
  t = (rng.uniform(size=SHAPE) > 0.97).astype(np.float32)
  return x, input_pipeline.to_global(mesh, {"image": x, "mask": t})


def _padded_batch(mesh):
  """An evaluation batch whose images fill 28 x 30 of 32 x 32 (the rest padding, masked)."""
  x, batch = _batch(mesh)
  valid = np.zeros(SHAPE, np.float32)
  valid[:, :28, :30] = 1.0
  local = {"image": x * valid, "mask": np.asarray(batch["mask"]) * valid, "valid": valid,
           "weight": np.ones(SHAPE[0], np.float32)}
  return input_pipeline.to_global(mesh, local)


class Run(NamedTuple):
  init: train.TrainState  # on the host (the step donates the device copy)
  logits: np.ndarray  # the initial state's inference logits
  padded: tuple  # the initial state's eval_step on a padded batch: (metrics state, logits)
  state: train.TrainState  # after one train step, on the host
  metrics: dict


@pytest.fixture(scope="module")
def runs():
  """compute dtype -> Run."""
  mesh = input_pipeline.make_mesh()
  (x, batch), padded = _batch(mesh), _padded_batch(mesh)
  out = {}
  for dtype in ("float32", "bfloat16"):
    config = _config(dtype)
    state = train.create_train_state(config, models.model_from_config(config.model), 10, mesh)
    init = jax.device_get(state)
    logits = np.asarray(jax.jit(train.predict_logits)(state, x))
    p_train, p_eval = train.compile_steps(config, mesh)
    evaluated = jax.device_get(p_eval(state, padded))
    state, metrics = p_train(state, batch)
    out[dtype] = Run(init, logits, evaluated, jax.device_get(state), jax.device_get(metrics))
  return out


def _float_dtypes(tree) -> set:
  return {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if x.dtype.kind == "f"}


def test_bfloat16_step_keeps_float32_state(runs):
  """After a bf16 step: params, AdaGrad accumulators and BatchNorm running statistics float32
  (and every statistic updated), metrics float32, finite, the loss within 1% of float32's."""
  run = runs["bfloat16"]
  assert _float_dtypes(run.state.params) == {"float32"}
  assert _float_dtypes(run.state.opt_state) == {"float32"}
  assert _float_dtypes(run.state.batch_stats) == {"float32"}
  assert _float_dtypes(run.metrics) == {"float32"}
  assert all(np.isfinite(v) for v in run.metrics.values())
  before, after = (jax.tree_util.tree_leaves(s.batch_stats) for s in (run.init, run.state))
  assert all(not np.array_equal(a, b) for a, b in zip(before, after))
  np.testing.assert_allclose(run.metrics["loss"], runs["float32"].metrics["loss"], rtol=1e-2)


@pytest.mark.parametrize("masked", [False, True])
def test_bfloat16_computes_in_bfloat16(runs, masked):
  """Every convolution of the bf16 forward takes and gives bf16, with a padding mask too
  (nothing promotes back to float32 inside); the logits come out float32."""
  state, x = runs["bfloat16"].init, np.zeros(SHAPE, np.float32)
  valid = np.ones(SHAPE, np.float32) if masked else None
  jaxpr = str(jax.make_jaxpr(train.predict_logits)(state, x, valid))
  convs = [line for line in jaxpr.splitlines() if "conv_general_dilated[" in line]
  assert len(convs) >= 10 and all(":bf16[" in line for line in convs), convs[:3]
  assert jax.eval_shape(train.predict_logits, state, x, valid).dtype == np.float32


def _rel_err(a, b) -> float:
  return float(np.max(np.abs(a - b)) / (1.0 + np.max(np.abs(b))))


def test_bfloat16_logits_close_to_float32(runs):
  """The same initial weights: bf16 logits within LOGITS_TOL (1 + max |f32|), in inference on a
  full batch and in eval_step on a padded one (on its real pixels; its metrics state float32)."""
  lo16, lo32 = runs["bfloat16"].logits, runs["float32"].logits
  assert lo16.dtype == np.float32
  assert 0 < _rel_err(lo16, lo32) < LOGITS_TOL
  (seg16, pad16), (_, pad32) = runs["bfloat16"].padded, runs["float32"].padded
  assert pad16.dtype == np.float32 and _float_dtypes(seg16) <= {"float32"}
  assert 0 < _rel_err(pad16[:, :28, :30], pad32[:, :28, :30]) < LOGITS_TOL


def test_float32_is_the_previous_computation(runs):
  """compute_dtype = "float32", or no field (configs and checkpoints from before it), applies
  ``model.apply`` itself: the very computation from before the option; only bfloat16's state
  applies the model through the cast."""
  config = _config("float32")
  model = models.model_from_config(config.model)
  assert train.model_apply(config, model) == model.apply
  assert train.model_apply(_config(None), model) == model.apply
  assert not isinstance(runs["float32"].init.apply_fn, train.MixedPrecisionApply)
  assert isinstance(runs["bfloat16"].init.apply_fn, train.MixedPrecisionApply)


def test_old_checkpoint_config_upgrades_to_float32():
  old = _config(None).to_dict()
  assert checkpoints.upgrade_config(old).compute_dtype == "float32"


@pytest.mark.parametrize("bad", ["float16", "bf16", "fp32"])
def test_unknown_compute_dtype_names_the_field(bad):
  config = _config(bad)
  with pytest.raises(ConfigError, match=r"config\.compute_dtype") as e:
    train.create_train_state(config, models.model_from_config(config.model), 10,
                             input_pipeline.make_mesh())
  assert e.value.where == "config.compute_dtype" and repr(bad) in e.value.what
  assert "bfloat16" in e.value.what and "float32" in e.value.what
