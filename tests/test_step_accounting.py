"""benchmarks/step_accounting.py: how the train step's operations are sorted, checked against the
shapes XLA gives them, and the table it prints (no profiling here: that is the script's run)."""

import collections
import re

import jax
import pytest

from benchmarks import step_accounting as sa
from configs import tiny
from conftest import compiled_train_step_hlo

BATCH = 2


@pytest.fixture(scope="module")
def compiled_step_hlo() -> str:
  return compiled_train_step_hlo(tiny.get_config(), BATCH)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU convolutions and layouts")
def test_convolutions_are_sorted_by_pass_as_their_shapes_say(compiled_step_hlo):
  """A kernel gradient's result is kernel-shaped (input features, window, output features: no
  batch), a forward or input-gradient convolution's is an activation (the batch first): the
  sorting by window and metadata must agree with that for every convolution of the step."""
  instructions = sa.hlo_instructions(compiled_step_hlo)
  shapes = dict(re.findall(r"^\s*(?:ROOT )?%([\w\-.]+) = f32\[([\d,]*)\]\S* convolution\(",
                           compiled_step_hlo, re.M))
  rows = collections.Counter()
  for name, dims in shapes.items():
    dims = [int(d) for d in dims.split(",")]
    row = sa.jax_category(name, *instructions[name])
    rows[row] += 1
    if row == sa.WGRAD:
      assert dims[1:3] in ([1, 1], [2, 2], [3, 3], [4, 4]), (name, dims)
    else:
      assert row in (sa.CONV_FORWARD, sa.DGRAD), (name, row)
      assert dims[0] == BATCH and dims[1:3] not in ([1, 1], [2, 2], [3, 3], [4, 4]), (name, dims)
  assert rows[sa.CONV_FORWARD] and rows[sa.DGRAD] and rows[sa.WGRAD], rows
  # The stem's convolution reads the image, which needs no gradient: one fewer input gradient.
  assert rows[sa.DGRAD] < rows[sa.CONV_FORWARD]
  copies = [n for n, (op, w) in instructions.items() if sa.jax_category(n, op, w) == sa.LAYOUT]
  assert copies and all(n.startswith("transpose_copy_fusion") for n in copies)


def test_other_instructions_by_source_path():
  step = "jit(train_step)/jvp(EAAUNet)/"
  assert sa.jax_category("add_maximum_fusion.3", step + "stage1/ResidualBlock_0/jit(relu)/max",
                         ()) == sa.NORM
  assert sa.jax_category("ynn_fusion.7", "jit(train_step)/transpose(jvp(EAAUNet))/stage2/"
                         "ResidualBlock_1/BatchNorm_0/reduce_sum", ()) == sa.NORM
  assert sa.jax_category("broadcast_subtract_fusion", step + "stem_bn/sub", ()) == sa.NORM
  assert sa.jax_category("multiply_add_fusion.2", step + "fuse1/sa_high/mul", ()) == sa.REST
  assert sa.jax_category("multiply_fusion", "jit(train_step)/mul", ()) == sa.REST  # optimizer


def test_torch_operations():
  assert sa.torch_category("aten::mkldnn_convolution") == sa.CONV_FORWARD
  assert sa.torch_category("aten::convolution_backward") == sa.CONV_BACKWARD
  assert sa.torch_category("aten::slow_conv_transpose2d") == sa.CONV_FORWARD
  for op in ("aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::clamp_min",
             "aten::threshold_backward"):
    assert sa.torch_category(op) == sa.NORM, op
  for op in ("aten::add", "aten::cat", "aten::native_group_norm", "aten::addcdiv_"):
    assert sa.torch_category(op) == sa.REST, op


def test_table_sums_jax_backward_parts_and_divides_by_steps():
  results = {"jax": {"rows": {sa.CONV_FORWARD: 2.0, sa.DGRAD: 1.0, sa.WGRAD: 1.5, sa.LAYOUT: 0.5,
                              sa.NORM: 1.0, sa.REST: 1.0}, "walls": [3.6, 3.8]},
             "torch": {"rows": {sa.CONV_FORWARD: 2.0, sa.CONV_BACKWARD: 2.0, sa.NORM: 1.0,
                                sa.REST: 1.0}, "walls": [3.0, 3.2, 3.4]}}
  rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
          for line in sa.table(results, steps=2)[2:]}
  assert rows[sa.CONV_BACKWARD.strip()] == ["1.500", "1.000", "1.50 |"]
  assert rows[sa.WGRAD.strip()] == ["0.750", "-", "- |"]
  assert rows["all operations"] == ["3.500", "3.000", "1.17 |"]  # the parts counted once
  assert rows["wall time of a profiled call (median)"] == ["3.700", "3.200", "1.16 |"]


def test_network_parts_by_source_path():
  """Each path falls into the part of the network it names, in either model's spelling."""
  for path, part in (("jit(<lambda>)/EAAUNet/stem_bn/add", "stem"),
                     ("jit(<lambda>)/EAAUNet/stage1/ResidualBlock_0/Conv_0/conv", "stage1"),
                     ("jit(<lambda>)/EAAUNet/upstage1/ResidualBlock_2/add", "upstage1"),
                     ("jit(<lambda>)/EAAUNet/up1/transpose", "up1"),
                     ("jit(train_step)/transpose(jvp(EAAUNet))/fuse2/sa_low/mul", "fuse2"),
                     ("jit(<lambda>)/EAAUNet/head_out/conv_general_dilated", "head"),
                     ("EAAUNet/bottleneck", "bottleneck"), ("EAAUNet/head_bn", "head")):
    assert sa.network_part(path) == part, path
  for path in ("jit(<lambda>)/EAAUNet/mul", "jit(<lambda>)/EAAUNet/jit(relu)/max", "",
               "jit(train_step)/mul", "EAAUNet/stages/x"):
    assert sa.network_part(path) == sa.TOP, path


def test_every_part_of_the_inference_is_found_in_its_hlo():
  """The compiled inference's instructions name every part (the metadata the JAX column reads)."""
  from eaau_jax import models, train, xla_options  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  state = train.abstract_train_state(config, models.model_from_config(config.model))
  x = jax.ShapeDtypeStruct((1, 32, 32, config.input.channels), jax.numpy.float32)
  hlo = xla_options.jit(train.predict_logits).lower(state, x, x).compile().as_text()
  parts = collections.Counter(sa.network_part(op) for op, _ in sa.hlo_instructions(hlo).values())
  assert set(sa.PARTS) <= set(parts), parts


def test_torch_inference_time_lands_in_its_parts():
  """The twin's inference profiled with the part ranges: every part's operations are found, every
  convolution inside a part, and the parts' total equals the sorting by kind."""
  pytest.importorskip("torch")
  from torch import profiler  # pylint: disable=g-import-not-at-top
  spec = {"threads": 1, "device": "cpu", "crop": 32, "dtype": "float32", "infer": True}
  call = sa.torch_inference_call(spec)
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
    call()
  convs = [ev for ev in prof.events() if ev.name == "aten::convolution"]
  assert len(convs) >= 2 * 3 * 5, len(convs)  # 5 stages of 3 blocks, 2 convolutions each
  for ev in convs:
    assert sa.enclosing_part(ev) in sa.PARTS, "a convolution outside every part"
  result = sa.torch_worker({**spec, "steps": 1})
  assert set(sa.PARTS) <= {p for p, s in result["parts"].items() if s > 0}, result["parts"]
  assert sum(result["parts"].values()) == pytest.approx(sum(result["rows"].values()))
