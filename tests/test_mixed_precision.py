"""config.compute_dtype (train.model_apply): bfloat16 compute with float32 params, optimizer state,
BatchNorm statistics, loss and metrics; float32, the default, is the computation from before it.

One train step of configs/tiny.py's model (b = 1, widths 8/16/16) on a batch of 4 at 32 x 32, per
compute dtype, computed once for the module (each is a compilation).
"""

import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from eaau_jax import checkpoints, evaluate, input_pipeline, models, train
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
  """Every convolution of the bf16 forward on a feature map takes and gives bf16, with a padding
  mask too (nothing promotes back to float32 inside); only BAA's gate (1 x 1 maps, N x 1 x 1 x C)
  and the head's 1-channel output conv compute in float32, by design (models.py: their bias
  gradients sum over pixels); the logits come out float32."""
  state, x = runs["bfloat16"].init, np.zeros(SHAPE, np.float32)
  valid = np.ones(SHAPE, np.float32) if masked else None
  jaxpr = str(jax.make_jaxpr(train.predict_logits)(state, x, valid))
  convs = [line for line in jaxpr.splitlines() if "conv_general_dilated[" in line]
  f32 = [line for line in convs if ":bf16[" not in line]
  assert len(convs) - len(f32) >= 10
  n = SHAPE[0]
  gate, head = f":f32[{n},1,1,", f":f32[{n},{SHAPE[1]},{SHAPE[2]},1]"
  assert f32 and all(gate in line or head in line for line in f32), f32
  assert sum(head in line for line in f32) == 1
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


def test_restore_computes_in_the_given_config_s_dtype(runs, tmp_path):
  """A bf16-trained checkpoint evaluated with a float32 config (``--mode=eval --config ...
  --config.compute_dtype=float32``) computes in float32: the logits of the float32 state with the
  same weights, bit for bit; without a config it computes in the checkpoint's bf16."""
  mesh = input_pipeline.make_mesh()
  config = _config("bfloat16")
  state = jax.device_put(runs["bfloat16"].init)  # the same initial weights as float32's
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=1)
  ckpt.save(0, state, {"config": config.to_dict(), "mean": 0.0, "std": 1.0, "num_params": 1})
  ckpt.close()
  x = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
  forward = jax.jit(train.predict_logits)
  own, _, _, _ = evaluate.restore(str(tmp_path), mesh)
  as32, ckpt_config, _, _ = evaluate.restore(str(tmp_path), mesh, _config("float32"))
  assert ckpt_config.compute_dtype == "bfloat16"
  assert isinstance(own.apply_fn, train.MixedPrecisionApply)
  np.testing.assert_array_equal(np.asarray(forward(as32, x)),
                                np.asarray(forward(jax.device_put(runs["float32"].init), x)))
  assert 0 < _rel_err(np.asarray(forward(own, x)), np.asarray(forward(as32, x))) < LOGITS_TOL


# ---------------------------------------------------------------- sums in float32
def _bf16_sums(hlo: str) -> list[str]:
  """The reductions of a lowered program that add in bfloat16 (a bf16 accumulator)."""
  return [line for line in hlo.splitlines() if "stablehlo.reduce(" in line
          and "applies stablehlo.add" in line and ", tensor<bf16>)" in line]


@pytest.mark.parametrize("fusion", sorted(models.FUSIONS))
def test_bfloat16_train_step_sums_in_float32(fusion):
  """No sum of the bf16 train step accumulates in bf16, for every fusion. JAX's gradient of a
  broadcast (a gate or per-channel parameter applied to a feature map) sums in the broadcast's
  dtype, and a bf16 running sum stops growing near 256: before models.broadcast_like configs/sirst.py's
  step had 55 such sums over H x W (or N x H x W) pixels, in ShuffleAttention, the fusions' gates
  and the head's bias."""
  config = _config("bfloat16")
  config.model.fusion = fusion
  mesh = input_pipeline.make_mesh()
  model = models.model_from_config(config.model)
  state = train.abstract_train_state(config, model, 10)
  p_train, _ = train.compile_steps(config, mesh)
  image = jax.ShapeDtypeStruct(SHAPE, np.float32)
  hlo = p_train.lower(state, {"image": image, "mask": image}).as_text()
  assert "bf16" in hlo  # it computes in bf16
  assert _bf16_sums(hlo) == []


def test_bf16_sums_finds_a_bfloat16_sum():
  """The check above finds what it looks for: a plain bf16 broadcast's gradient."""
  x = jnp.ones((4, 8, 8, 2), jnp.bfloat16)
  hlo = jax.jit(jax.grad(lambda v: jnp.sum((v * x).astype(jnp.float32)))).lower(
      jnp.ones((2,), jnp.bfloat16)).as_text()
  assert len(_bf16_sums(hlo)) >= 1


def test_broadcast_like_sums_its_gradient_in_float32():
  """broadcast_like's values are broadcasting's; its gradient over 8 x 64 x 64 pixels of 0.01 is
  327.68 to bf16 rounding (a bf16 running sum would stop near 256)."""
  x = jnp.full((8, 64, 64, 3), 0.01, jnp.bfloat16)
  v = jnp.asarray([1.0, 2.0, -0.5], jnp.bfloat16)
  out = models.broadcast_like(v, x)
  assert out.dtype == jnp.bfloat16 and out.shape == x.shape
  np.testing.assert_array_equal(np.asarray(out, np.float32),
                                np.broadcast_to(np.asarray(v, np.float32), x.shape))
  grad = jax.grad(lambda v: jnp.sum((models.broadcast_like(v, x) * x).astype(jnp.float32)))(v)
  exact = 8 * 64 * 64 * float(np.asarray(x[0, 0, 0, 0], np.float32))
  np.testing.assert_allclose(np.asarray(grad, np.float32), exact, rtol=1e-2)


def test_shuffle_attention_bfloat16_gradients_match_float32():
  """ShuffleAttention's parameter and input gradients in bf16 (params and input cast, as
  MixedPrecisionApply does) within 3% of float32's, on positive maps of 8 x 32 x 32 where every
  term of the parameters' sums has one sign (where bf16 sums lose the most)."""
  rng = np.random.default_rng(0)
  x = rng.uniform(0.5, 1.5, size=(8, 32, 32, 16)).astype(np.float32)
  w = rng.uniform(0.5, 1.5, size=x.shape).astype(np.float32)  # the loss's weights: dL/dout
  sa = models.ShuffleAttention(groups=2)
  params = sa.init(jax.random.key(0), x)["params"]
  params = jax.tree_util.tree_map(lambda p: p + 0.3, params)  # away from the zero init

  def grads(dtype):
    def loss(p, x):
      cast = lambda a: a.astype(dtype)
      out = sa.apply({"params": jax.tree_util.tree_map(cast, p)}, cast(x))
      return jnp.sum(out.astype(jnp.float32) * w) * 1e-3
    return jax.grad(loss, argnums=(0, 1))(params, x)

  (p32, x32), (p16, x16) = grads(jnp.float32), grads(jnp.bfloat16)
  for name in p32:
    np.testing.assert_allclose(np.asarray(p16[name], np.float32), p32[name], rtol=3e-2,
                               err_msg=name)
  assert _rel_err(np.asarray(x16, np.float32), np.asarray(x32)) < 3e-2


@pytest.mark.parametrize("name", ["acm_unet", "unet"])
def test_baselines_refuse_bfloat16_naming_the_field(name):
  """The baselines' conv biases and gates would sum their gradients in bf16 (they do not go
  through models.broadcast_like): a bf16 config is refused before anything is built."""
  config = importlib.import_module(f"configs.{name}").get_config()
  config.compute_dtype = "bfloat16"
  model = models.model_from_config(config.model)
  with pytest.raises(ConfigError, match=r"config\.compute_dtype") as e:
    train.abstract_train_state(config, model)
  assert name in e.value.what and "EAAU-Net" in e.value.what
