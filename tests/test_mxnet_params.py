"""The MXNet .params reader and the importer into Flax variables (no MXNet needed)."""

import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eaau_jax import baselines, models
from eaau_jax import mxnet_params as mp


def tiny_writer(path, arrays, magic=0xF993FAC9, flags=None, list_magic=0x112, extra=b""):
  """An independent writer of MXNet's NDArray-list format (see the reader's docstring)."""
  flags = flags or {}
  codes = {np.dtype(t): i for i, t in enumerate(
      [np.float32, np.float64, np.float16, np.uint8, np.int32, np.int8, np.int64])}
  b = struct.pack("<QQQ", list_magic, 0, len(arrays))
  for name, a in arrays.items():
    ndim_fmt = "I" if magic == 0xF993FAC9 else "i"
    b += struct.pack(f"<Ii{ndim_fmt}", magic, 0, a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
    b += struct.pack("<iii", 2, 1, flags.get(name, codes[a.dtype]))
    b += a.astype(a.dtype.newbyteorder("<")).tobytes()
  b += struct.pack("<Q", len(arrays))
  for name in arrays:
    b += struct.pack("<Q", len(name)) + name.encode()
  with open(path, "wb") as f:
    f.write(b + extra)
  return path


ARRAYS = {"a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
          "a.bias": np.array([1.5, -2.0], np.float64),
          "b.half": np.array([0.25, 8.0], np.float16),
          "c.int": np.array([[1, -7]], np.int32), "d.u8": np.array([255, 0], np.uint8),
          "e.i64": np.array([2 ** 40], np.int64)}


@pytest.mark.parametrize("magic", [0xF993FAC9, 0xF993FACA])
def test_reader_reads_every_dtype_in_order(tmp_path, magic):
  got = mp.read_params(tiny_writer(tmp_path / "x.params", ARRAYS, magic=magic))
  assert list(got) == list(ARRAYS)
  for k, v in ARRAYS.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape
    np.testing.assert_array_equal(got[k], v)


def test_module_writer_round_trips(tmp_path):
  mp.write_params(tmp_path / "y.params", ARRAYS)
  got = mp.read_params(tmp_path / "y.params")
  assert list(got) == list(ARRAYS)
  for k, v in ARRAYS.items():
    assert got[k].dtype == v.dtype
    np.testing.assert_array_equal(got[k], v)


def _raises(path, *words):
  with pytest.raises(mp.ParamsFormatError) as e:
    mp.read_params(path)
  msg = str(e.value)
  assert str(path) in msg and "offset" in msg, msg
  for w in words:
    assert w in msg, msg
  return msg


def test_reader_errors_name_file_and_offset(tmp_path):
  small = {"w": np.ones((2, 2), np.float32), "v": np.zeros(3, np.float32)}
  _raises(tiny_writer(tmp_path / "m.params", small, list_magic=0x113), "magic 0x113", "offset 0")
  _raises(tiny_writer(tmp_path / "a.params", small, magic=0x12345678), "array 0", "0x12345678",
          "offset 24")
  _raises(tiny_writer(tmp_path / "d.params", small, flags={"v": 99}), "array 1", "dtype flag 99")
  _raises(tiny_writer(tmp_path / "t.params", small, extra=b"\0\0"), "trailing")
  full = open(tiny_writer(tmp_path / "full.params", small), "rb").read()
  for cut in (5, 30, 60, len(full) - 1):  # header, shape, data, names
    p = tmp_path / f"cut{cut}.params"
    p.write_bytes(full[:cut])
    _raises(p, "truncated")
  dup = tmp_path / "dup.params"
  one = struct.pack("<Q", 1)
  dup.write_bytes(full.replace(one + b"v", one + b"w"))  # the second name becomes "w" too
  _raises(dup, "duplicate name 'w'")


# ---------------------------------------------------------------- kernel layouts

def torch_conv_transpose(x, w, b, stride, pad):
  """PyTorch/MXNet transposed conv by its scatter definition; x (C_in, H, W), w (C_in, C_out, k, k):
  out[o, s*i + a - p, s*j + c - p] += x[ci, i, j] * w[ci, o, a, c]."""
  cin, h, wd = x.shape
  k = w.shape[2]
  full = np.zeros((w.shape[1], (h - 1) * stride + k, (wd - 1) * stride + k))
  for i in range(h):
    for j in range(wd):
      full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
          "c,coab->oab", x[:, i, j], w)
  return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad] + b[:, None, None]


def torch_conv(x, w, stride, pad):
  """Cross-correlation, w (C_out, C_in, k, k), zero padding ``pad`` each side."""
  k = w.shape[2]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
  ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
  out = np.zeros((w.shape[0], ho, wo))
  for i in range(ho):
    for j in range(wo):
      patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
      out[:, i, j] = np.einsum("cab,ocab->o", patch, w)
  return out


# ACM-U-Net's deconvolutions (baselines.ACMUNet.deconv_layer) are TransposedConvUpsample with a
# bias, in the backend's form; nn.ConvTranspose padded 2 per side is the layer they replaced.
DECONV_LAYERS = {
    "conv_transpose": nn.ConvTranspose(2, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2))),
    "phases_2x2": models.TransposedConvUpsample(2, window=2, use_bias=True),
    "phases_3x3": models.TransposedConvUpsample(2, window=3, use_bias=True),
    "acm_unet": baselines.ACMUNet.deconv_layer(2, "deconv1"),
}


@pytest.mark.parametrize("layer", DECONV_LAYERS)
def test_deconv_kernel_matches_scatter_definition(layer):
  """MXNet Conv2DTranspose(k=4, s=2, p=1) == each of our layers with the flipped kernel."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 5, 7))
  w, b = rng.normal(size=(3, 2, 4, 4)), rng.normal(size=2)
  ref = torch_conv_transpose(x, w, b, 2, 1)
  layer = DECONV_LAYERS[layer]
  got = layer.apply({"params": {"kernel": mp.deconv_kernel(w).astype(np.float32), "bias": b}},
                    jnp.asarray(x.transpose(1, 2, 0)[None], jnp.float32))
  assert got.shape == (1, 10, 14, 2)
  np.testing.assert_allclose(np.asarray(got[0]).transpose(2, 0, 1), ref, atol=1e-4)
  # And the unflipped kernel is wrong (the test can tell the two apart).
  bad = layer.apply({"params": {"kernel": np.transpose(w, (2, 3, 0, 1)).astype(np.float32),
                                "bias": b}},
                    jnp.asarray(x.transpose(1, 2, 0)[None], jnp.float32))
  assert np.abs(np.asarray(bad[0]).transpose(2, 0, 1) - ref).max() > 0.1


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_kernel_matches_oihw_correlation(stride):
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(3, 7, 8)), rng.normal(size=(4, 3, 3, 3))
  ref = torch_conv(x, w, stride, 1)
  layer = nn.Conv(4, (3, 3), strides=stride, padding=1, use_bias=False)
  got = layer.apply({"params": {"kernel": mp.conv_kernel(w)}},
                    jnp.asarray(x.transpose(1, 2, 0)[None], jnp.float32))
  np.testing.assert_allclose(np.asarray(got[0]).transpose(2, 0, 1), ref, atol=1e-4)


# ---------------------------------------------------------------- importer

class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                     name="stem.0")(x)
    x = nn.Conv(4, (3, 3), use_bias=False, name="stem.1")(x)
    x = nn.BatchNorm(use_running_average=not train, name="stem.2")(x)
    return nn.ConvTranspose(2, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), name="up")(x)


def tiny_arrays():
  rng = np.random.default_rng(2)
  f = lambda *s: rng.normal(size=s).astype(np.float32)
  return {"stem.0.gamma": np.ones(3, np.float32), "stem.0.beta": np.zeros(3, np.float32),
          "stem.0.running_mean": f(3), "stem.0.running_var": f(3) ** 2,
          "stem.1.weight": f(4, 3, 3, 3), "stem.2.gamma": f(4), "stem.2.beta": f(4),
          "stem.2.running_mean": f(4), "stem.2.running_var": f(4) ** 2,
          "up.weight": f(4, 2, 4, 4), "up.bias": f(2)}


LAYOUT = {"transposed": ("up",), "fixed": {"stem.0.gamma": 1.0, "stem.0.beta": 0.0}}


def template():
  return jax.eval_shape(Tiny().init, jax.random.key(0), jnp.zeros((1, 6, 6, 3)))


def test_import_places_every_array():
  arrays = tiny_arrays()
  v = mp.import_into(template(), arrays, **LAYOUT)
  np.testing.assert_array_equal(v["batch_stats"]["stem.0"]["mean"], arrays["stem.0.running_mean"])
  np.testing.assert_array_equal(v["params"]["stem.2"]["scale"], arrays["stem.2.gamma"])
  np.testing.assert_array_equal(v["params"]["stem.2"]["bias"], arrays["stem.2.beta"])
  np.testing.assert_array_equal(v["batch_stats"]["stem.2"]["var"], arrays["stem.2.running_var"])
  np.testing.assert_array_equal(v["params"]["stem.1"]["kernel"],
                                mp.conv_kernel(arrays["stem.1.weight"]))
  np.testing.assert_array_equal(v["params"]["up"]["kernel"], mp.deconv_kernel(arrays["up.weight"]))
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(template())
  Tiny().apply(v, jnp.ones((1, 6, 6, 3)))  # usable as is


def _mismatch(arrays, *words, **layout):
  with pytest.raises(mp.ImportMismatch) as e:
    mp.import_into(template(), arrays, source="w.params", **(layout or LAYOUT))
  for w in ("w.params",) + words:
    assert w in str(e.value), str(e.value)


def test_import_names_the_first_offending_name():
  a = tiny_arrays()
  missing = dict(a)
  del missing["stem.2.beta"], missing["up.bias"]
  _mismatch(missing, "missing 'stem.2.beta'")
  extra = dict(a)
  extra["stem.3.weight"] = np.ones(2, np.float32)
  extra["zz.bias"] = np.ones(2, np.float32)
  _mismatch(extra, "'stem.3.weight'", "no place")
  bad = dict(a)
  bad["stem.1.weight"] = np.ones((4, 3, 1, 1), np.float32)
  _mismatch(bad, "'stem.1.weight'", "(1, 1, 3, 4)", "(3, 3, 3, 4)")
  gamma = dict(a)
  gamma["stem.0.gamma"] = np.full(3, 0.5, np.float32)
  _mismatch(gamma, "'stem.0.gamma'", "constant 1.0")
  no_fixed = dict(a)
  del no_fixed["stem.0.beta"]
  _mismatch(no_fixed, "missing 'stem.0.beta'")
  _mismatch(a, "'stem.0.gamma'", "no place", transposed=("up",))  # the constants must be declared
  with pytest.raises(mp.ImportMismatch, match="transposed layer 'nothere'"):
    mp.import_into(template(), a, transposed=("nothere",), fixed=LAYOUT["fixed"])
