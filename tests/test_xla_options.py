"""xla_options.jit: on the CPU, convolutions compile to XLA's own rather than YNNPACK's (issue 10),
with the same values; the memory-optimised schedule, fewer temporaries to the same bits; the train
state's initialisation at a lower LLVM level, to the same bits; nothing on other platforms; a
user's XLA_FLAGS and an older jaxlib respected, option by option.
"""

import re

import jax
import numpy as np
import pytest

from configs import acm_unet, alcnet, sirst, tiny
from conftest import compiled_train_step_hlo
from eaau_jax import input_pipeline, models, train, xla_options

LEVEL = xla_options.LEVEL_OPTION

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")


def _ynn_convolutions(hlo: str) -> int:
  """Convolutions inside computations that a YNNPACK fusion calls."""
  ynn_calls = {m.group(1) for line in hlo.splitlines() if '"kind":"__ynn_fusion"' in line
               for m in [re.search(r"calls=%([\w.\-]+)", line)] if m}
  count = 0
  for block in hlo.split("\n\n"):  # one computation each
    m = re.match(r"\s*%([\w.\-]+) ", block)
    if m and m.group(1) in ynn_calls:
      count += len(re.findall(r" convolution\(", block))
  return count


def _all_convolutions(hlo: str) -> int:
  return len(re.findall(r" convolution\(", hlo))


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_cpu_convolutions_leave_ynnpack_with_the_same_values():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 16, 16, 32)).astype(np.float32)
  w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
  plain, ours = jax.jit(_conv), xla_options.jit(_conv)
  plain_hlo = plain.lower(x, w).compile().as_text()
  ours_hlo = ours.lower(x, w).compile().as_text()
  assert _ynn_convolutions(plain_hlo) == 1  # this jaxlib's default: YNNPACK takes it
  assert _all_convolutions(ours_hlo) == 1 and _ynn_convolutions(ours_hlo) == 0
  np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-4)


def test_train_and_eval_steps_compile_with_the_options():
  hlo = compiled_train_step_hlo(tiny.get_config())
  assert _all_convolutions(hlo) > 0 and _ynn_convolutions(hlo) == 0


def test_options_by_platform_and_user_flags():
  ynn, scheduler = xla_options.YNN_OPTION, xla_options.SCHEDULER_OPTION
  assert set(xla_options.CPU_OPTIONS) == {ynn, scheduler}
  assert xla_options.compiler_options("gpu") is None
  assert xla_options.compiler_options("cpu", environ={}) == xla_options.CPU_OPTIONS
  user = {"XLA_FLAGS": f"--{ynn}=+individual_convolution"}  # theirs; the scheduler still ours
  assert xla_options.compiler_options("cpu", environ=user) == {
      scheduler: xla_options.CPU_OPTIONS[scheduler]}
  user = {"XLA_FLAGS": f"--{scheduler}=CPU_SCHEDULER_TYPE_DEFAULT"}
  assert xla_options.compiler_options("cpu", environ=user) == {ynn: xla_options.CPU_OPTIONS[ynn]}
  both = {"XLA_FLAGS": f"--{ynn}=+individual_convolution --{scheduler}=CPU_SCHEDULER_TYPE_DEFAULT"}
  assert xla_options.compiler_options("cpu", environ=both) is None
  other = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_options.compiler_options("cpu", environ=other) == xla_options.CPU_OPTIONS


def test_an_option_this_jaxlib_lacks_compiles_without_it(monkeypatch, caplog):
  scheduler = xla_options.SCHEDULER_OPTION
  known = {scheduler: xla_options.CPU_OPTIONS[scheduler]}
  monkeypatch.setattr(xla_options, "CPU_OPTIONS", {"xla_cpu_no_such_option": "1", **known})
  with caplog.at_level("WARNING"):
    assert xla_options.compiler_options("cpu", environ={}) == known  # the others kept
  assert "xla_cpu_no_such_option=1" in caplog.text and "compiling without it" in caplog.text
  assert scheduler not in caplog.text
  monkeypatch.setattr(xla_options, "CPU_OPTIONS", {"xla_cpu_no_such_option": "1"})
  assert xla_options.compiler_options("cpu", environ={}) is None
  f = xla_options.jit(lambda v: v * 2, platform="cpu")
  np.testing.assert_array_equal(f(np.arange(3.0)), [0.0, 2.0, 4.0])


def test_memory_optimised_schedule_fewer_temporaries_same_bits(monkeypatch):
  """configs/tiny.py's train step as the project compiles it against the same step without the
  scheduler option (XLA's default order): fewer bytes of temporaries (about 0.74x here; 0.74x for
  configs/sirst.py's at 256 x 256, BENCHMARKS.md), and two steps to the same bits."""
  config = tiny.get_config()
  mesh = input_pipeline.make_mesh()
  model = models.model_from_config(config.model)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 32, config.input.channels)).astype(np.float32)
  t = (rng.uniform(size=(2, 32, 32, 1)) > 0.99).astype(np.float32)
  batch = input_pipeline.to_global(mesh, {"image": x, "mask": t})
  runs = {}
  for name, options in (("ours", xla_options.CPU_OPTIONS),
                        ("default", {xla_options.YNN_OPTION:
                                     xla_options.CPU_OPTIONS[xla_options.YNN_OPTION]})):
    monkeypatch.setattr(xla_options, "CPU_OPTIONS", options)
    p_train, _ = train.compile_steps(config, mesh)
    state = train.create_train_state(config, model, 10, mesh)
    compiled = p_train.lower(state, batch).compile()  # run as measured: one compilation
    for _ in range(2):
      state, step_metrics = compiled(state, batch, p_train.key)
    runs[name] = (compiled.memory_analysis().temp_size_in_bytes,
                  jax.tree_util.tree_leaves((state, step_metrics)))
  (ours_temp, ours), (default_temp, default) = runs["ours"], runs["default"]
  assert ours_temp < 0.9 * default_temp, (ours_temp, default_temp)
  assert len(ours) == len(default) > 50
  for a, b in zip(ours, default):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_once_options_by_platform_and_user_flags():
  assert xla_options.compiler_options("gpu", once=True) is None
  assert xla_options.compiler_options("cpu", environ={}, once=True) == {LEVEL: 2}
  ynn = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
  assert xla_options.compiler_options("cpu", environ=ynn, once=True) == {LEVEL: 2}
  user = {"XLA_FLAGS": f"--{LEVEL}=1"}
  assert xla_options.compiler_options("cpu", environ=user, once=True) is None
  assert xla_options.compiler_options("cpu", environ=user) == xla_options.CPU_OPTIONS


def test_paper_model_initialises_to_the_same_bits_compiled_once():
  """configs/sirst.py's train state as create_train_state compiles it (``once``) against the same
  initialiser at XLA's default level: every parameter, statistic and optimizer array bit for bit
  (the seeds in RESULTS.md start there)."""
  config = sirst.get_config()
  model = models.model_from_config(config.model)
  ours = train.create_train_state(config, model, 6000, input_pipeline.make_mesh())
  default = jax.jit(train._initializer(config, model, 6000),  # pylint: disable=protected-access
                    compiler_options={LEVEL: 3})(train.key_data(config.seed))  # XLA's default
  leaves, ref = jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(default)
  assert len(leaves) == len(ref) > 100
  for a, b in zip(leaves, ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_state_is_initialised_with_the_once_options(monkeypatch):
  calls = []
  real = xla_options.compiler_options
  monkeypatch.setattr(xla_options, "compiler_options",
                      lambda *a, **k: calls.append(k.get("once")) or real(*a, **k))
  config = tiny.get_config()
  train.create_train_state(config, models.model_from_config(config.model), 1,
                           input_pipeline.make_mesh())
  assert calls == [True]


# ------------------------------------------------------------------ fusion_boundary


def _most_convolutions_one_fusion_reads(hlo: str) -> int:
  """The most convolution outputs any top-level fusion of the entry computation reads."""
  entry = hlo[hlo.index("\nENTRY"):]
  ops = {}
  for line in entry.splitlines():
    m = re.match(r"\s*(?:ROOT )?%(\S+) = \S+ (\S+?)\((.*?)\)", line)
    if m:
      ops[m.group(1)] = (m.group(2), set(re.findall(r"%([\w.\-]+)", m.group(3))))
  return max(sum(ops.get(a, ("",))[0] == "convolution" for a in args)
             for op, args in ops.values() if op == "fusion")


def test_residual_stream_is_not_recomputed_in_every_fusion():
  """Without the boundary, XLA's CPU fusion re-reads each earlier block's convolution output in
  every fusion downstream of it (up to 6 in one fusion with three blocks a stage, as here); with
  it, a fusion reads at most the two a block needs (its convolution and its shortcut's)."""
  config = tiny.get_config()
  config.model.blocks = 3
  assert _most_convolutions_one_fusion_reads(compiled_train_step_hlo(config)) <= 2


@pytest.mark.parametrize("name", ["acm_unet", "alcnet"])
def test_baselines_residual_stream_is_not_recomputed_either(name):
  """The baselines' GluonCV blocks (baselines.BasicBlock), three and four a stage here: 7
  convolution outputs in one fusion without the boundary. With it at most 3: a stage's output
  feeds the next stage's first block (its convolution and its 1x1 shortcut) and the decoder's skip
  fusion, and the backward sums those three convolutions' input gradients in one fusion."""
  if name == "acm_unet":
    config = acm_unet.baseline_config("acm_unet", layers=(3, 3, 3), channels=(4, 8, 8, 8),
                                      fuse_mode="AsymBi", tiny=True, dropout=0.1)
  else:
    config = alcnet.get_config()
  assert _most_convolutions_one_fusion_reads(compiled_train_step_hlo(config)) <= 3


def test_fusion_boundary_is_the_identity_with_its_gradient():
  x = np.array([[np.nan, -0.0, np.inf], [1.5, -np.inf, 3.0]], np.float32)
  for v in (x, x[::-1], np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32)):
    out = np.asarray(jax.jit(xla_options.fusion_boundary)(v))  # NaN first, elsewhere, none, empty
    np.testing.assert_array_equal(out, v)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(v))  # -0.0 stays -0.0
  w = np.arange(6.0, dtype=np.float32).reshape(2, 3)
  grad = jax.jit(jax.grad(lambda v: (xla_options.fusion_boundary(v) * w).sum()))(x)
  np.testing.assert_array_equal(grad, w)


def test_fusion_boundary_is_a_conditional_on_the_cpu_only():
  traced = jax.jit(xla_options.fusion_boundary).trace(np.ones((4, 4), np.float32))
  assert "compare" in traced.lower(lowering_platforms=("cpu",)).as_text()  # the predicate
  for platform in ("cuda", "tpu"):
    assert "compare" not in traced.lower(lowering_platforms=(platform,)).as_text()
  compiled = jax.jit(xla_options.fusion_boundary).lower(np.ones((4, 4), np.float32)).compile()
  assert " conditional(" in compiled.as_text()  # kept by XLA's CPU compiler, not folded away
