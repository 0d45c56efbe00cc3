"""CNN baselines (eaau_jax.baselines): shapes, gradients, the released layers' arithmetic, and the
released ACM-U-Net / ALCNet weights through the MXNet importer."""

import importlib.util
import os
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eaau_jax import baselines, mxnet_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SIRST = os.path.join(SHARED, "datasets", "sirst")
ACM_WEIGHTS = os.path.join(SHARED, "weights", "acm",
                           "0.7442-ResUNet_AsymBi_DENTIST_Puma1_GPU_0-IoU-288-best.params")
# ALCNet's released weights live only in a fetched snapshot of github.com/YimianDai/open-alcnet
# (a bare git directory); they are read from there, never copied into the project.
ALCNET_MIRROR = "/work/.mirror/YimianDai+open-alcnet/repo"
ALCNET_PARAMS = "params/BottomUpLocal_r_1_b_4_0.7614.params"


def test_registry_names():
  assert set(baselines.BASELINES) == {"acm_unet", "acm_fpn", "alcnet", "unet", "fpn"}
  assert baselines.UNet().fuse_mode == "DirectAdd" and baselines.FPN().fuse_mode == "DirectAdd"
  assert baselines.ACMUNet().fuse_mode == "AsymBi" and baselines.ACMFPN().fuse_mode == "AsymBi"


# Fewer blocks than the released 4 per stage keep compile times down: block count changes no code
# path (the released depth runs in the weights tests below).
SMALL = {"layers": (2, 1, 1)}
VARIANTS = [(name, SMALL) for name in sorted(baselines.BASELINES)] + [
    ("acm_unet", {"tiny": False, **SMALL}),
    ("acm_fpn", {"tiny": False, "layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64, 128)}),
    ("acm_fpn", {"fuse_mode": "TopDownLocal", **SMALL}),
    ("alcnet", {"scale_mode": "Single", "pyramid_fuse": "asymbi", **SMALL}),
]


def random_variables(model, x, seed=0):
  """Variables of the model's shapes from NumPy (compiling ``model.init``'s many RNG calls costs
  more than the test itself on a small CPU); running variances positive."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  fill = lambda path, s: (np.abs(rng.normal(1.0, 0.1, s.shape)) if path[-1].key == "var"
                          else rng.normal(0.0, 0.2, s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name,fields", VARIANTS)
def test_forward_and_gradient_at_odd_size(name, fields):
  model = baselines.BASELINES[name](**fields)
  x = jax.random.normal(jax.random.key(0), (2, 37, 50, 3))
  variables = random_variables(model, x)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    return jnp.mean(jax.nn.sigmoid(logits)), logits

  @jax.jit
  def run(variables):
    (value, train_logits), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return model.apply(variables, x), train_logits, value, grads

  logits, train_logits, value, grads = run(variables)
  assert logits.shape == train_logits.shape == (2, 37, 50, 1)
  assert bool(jnp.isfinite(logits).all()) and np.isfinite(float(value))
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.isfinite(g).all()) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize("name", ["acm_unet", "unet"])
def test_u_nets_upsample_without_xla_transposed_convolution(name):
  """ACM-U-Net's and U-Net's deconvolutions compile, in inference, to convolutions to their four
  output phases, not to XLA's input-dilated transposed convolution (baselines.ACMUNet.deconv_layer;
  their arithmetic: tests/test_mxnet_params.py). The net's other convolutions are not dilated."""
  model = baselines.BASELINES[name](layers=(1, 1, 1))
  x = jnp.zeros((1, 16, 16, 3))
  variables = random_variables(model, x)
  hlo = jax.jit(model.apply).lower(variables, x).compile().as_text()
  assert len(re.findall(r" convolution\(", hlo)) >= 10
  assert "lhs_dilate" not in hlo


def test_resize_align_corners_keeps_corners_and_lines():
  x = jnp.arange(5.0)[None, :, None, None] * 2 + jnp.arange(7.0)[None, None, :, None]
  y = baselines.resize_align_corners(x, (9, 12))
  assert y.shape == (1, 9, 12, 1)
  expect = np.linspace(0, 8, 9)[:, None] + np.linspace(0, 6, 12)[None, :]  # a plane stays a plane
  np.testing.assert_allclose(np.asarray(y[0, ..., 0]), expect, atol=1e-5)
  assert baselines.resize_align_corners(x, (5, 7)) is x


def released_circ_shift_pcm(cen, shift):
  """ALCNet's ``circ_shift`` + ``cal_pcm`` transcribed literally (NumPy, NCHW)."""
  _, _, hei, wid = cen.shape
  cat = np.concatenate

  def quad(r, c):  # rows starting at r, columns starting at c, then the wrapped parts
    return cat([cat([cen[:, :, r:, c:], cen[:, :, r:, :c]], 3),
                cat([cen[:, :, :r, c:], cen[:, :, :r, :c]], 3)], 2)

  b = [quad(shift, shift), cat([cen[:, :, shift:], cen[:, :, :shift]], 2),
       quad(shift, wid - shift), cat([cen[:, :, :, wid - shift:], cen[:, :, :, :wid - shift]], 3),
       quad(hei - shift, wid - shift), cat([cen[:, :, hei - shift:], cen[:, :, :hei - shift]], 2),
       quad(hei - shift, shift), cat([cen[:, :, :, shift:], cen[:, :, :, :shift]], 3)]
  s = [(b[i] - cen) * (b[i + 4] - cen) for i in range(4)]
  return np.minimum(np.minimum(np.minimum(s[0], s[1]), s[2]), s[3])


@pytest.mark.parametrize("shape,shift",
                         [((2, 3, 20, 31), 13), ((1, 2, 40, 40), 17), ((1, 1, 9, 11), 3)])
def test_cal_pcm_matches_released_slicing(shape, shift):
  cen = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = baselines.cal_pcm(jnp.asarray(cen.transpose(0, 2, 3, 1)), shift)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2),
                             released_circ_shift_pcm(cen, shift), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- released weights

def _load_benchmark():
  path = os.path.join(ROOT, "benchmarks", "acm_weights_check.py")
  spec = importlib.util.spec_from_file_location("acm_weights_check", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(not (os.path.isfile(ACM_WEIGHTS) and os.path.isdir(SIRST)),
                    reason="released ACM weights or the SIRST copy absent")
def test_acm_weights_check_counts_as_numpy_does():
  """benchmarks/acm_weights_check.py's evaluate, on the released ACM-U-Net and 3 idx_320 test
  images under acm in batches of 2 (the last padded with a zero image): the counts, IoU and nIoU
  of a numpy count over the same images run one at a time. Its figure over the
  whole split (0.7435) is asserted through main.py in tests/test_compare.py, not run twice."""
  check = _load_benchmark()
  model = baselines.ACMUNet()
  variables = baselines.load_released(model, ACM_WEIGHTS)
  ids = check.split_ids(SIRST)[:3]
  r = check.evaluate(model, variables, SIRST, ids, "acm", batch=2)
  inter = union = 0
  ious = []
  # One image at a time, jitted: eager dispatch compiles each of the net's operations on its own
  # (this test took 31 s with it on the 2-core CPU, 20 s jitted).
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  for i in ids:
    x, mask = check.load_example(SIRST, i, "acm")
    pred = np.asarray(forward(variables, jnp.asarray(x[None])))[0] > 0
    truth = mask > 0
    tp, u = int((pred & truth).sum()), int((pred | truth).sum())
    inter, union = inter + tp, union + u
    ious.append(tp / u if u else 1.0)
  assert (r["images"], r["inter"], r["union"]) == (3, inter, union) and union > 0
  assert r["niou"] == pytest.approx(np.mean(ious), abs=1e-6)
  assert r["iou"] == pytest.approx(inter / union, abs=1e-6)


@pytest.fixture(scope="module")
def alcnet_params(tmp_path_factory):
  if not os.path.isdir(ALCNET_MIRROR):
    pytest.skip(f"no open-alcnet snapshot at {ALCNET_MIRROR}")
  out = tmp_path_factory.mktemp("alcnet") / "alcnet.params"
  try:
    blob = subprocess.run(["git", f"--git-dir={ALCNET_MIRROR}", "show", f"HEAD:{ALCNET_PARAMS}"],
                          check=True, capture_output=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f"cannot read {ALCNET_PARAMS} from {ALCNET_MIRROR}: {e}")
  out.write_bytes(blob)
  return out


def test_released_alcnet_weights_fit_exactly(alcnet_params):
  """Every one of the 196 released names is used once by ALCNet(pyramid_fuse="bottomuplocal")."""
  variables = baselines.load_released(baselines.ALCNet(), alcnet_params)
  n = len(jax.tree_util.tree_leaves(variables))
  assert n + len(baselines.STEM_FIXED) == len(mxnet_params.read_params(alcnet_params)) == 196
  with pytest.raises(mxnet_params.ImportMismatch, match="asymbi_fpn_2|bottomuplocal_fpn_2"):
    baselines.load_released(baselines.ALCNet(pyramid_fuse="asymbi"), alcnet_params)


def test_released_alcnet_reproduces_released_predictions(alcnet_params):
  """open-alcnet ships its predictions on SIRST idx_320 test (results/pred, 512 x 512, viridis
  colours: foreground red 253, background 68); ours match them pixel for pixel on a batch of 8.
  (On all 96: IoU 0.7406 = 9982 / 13478 against our masks, the same counts as the shipped PNGs.)"""
  if not os.path.isdir(SIRST):
    pytest.skip("no SIRST copy")
  from PIL import Image
  import io
  check = _load_benchmark()
  ids = check.split_ids(SIRST)[:8]
  model = baselines.ALCNet()
  variables = baselines.load_released(model, alcnet_params)
  x = np.stack([check.load_example(SIRST, i, "acm")[0] for i in ids])
  ours = np.asarray(jax.jit(lambda x: model.apply(variables, x))(jnp.asarray(x)))[..., 0] > 0
  for i, pred in zip(ids, ours):
    png = subprocess.run(["git", f"--git-dir={ALCNET_MIRROR}", "show",
                          f"HEAD:results/pred/{i}.png"], check=True, capture_output=True).stdout
    released = np.asarray(Image.open(io.BytesIO(png)))[..., 0] > 128
    assert released.shape == pred.shape == (512, 512)
    assert (released != pred).sum() == 0, i
