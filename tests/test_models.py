"""EAAU-Net blocks against independent NumPy computations with the same weights."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eaau_jax import losses, models

RTOL, ATOL = 1e-4, 1e-5


def np_conv(x, k, stride=1, pad=0, bias=None):
  """Direct NHWC cross-correlation, kernel (kh, kw, cin, cout)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, co = k.shape
  n, h, w, _ = x.shape
  oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
  out = np.zeros((n, oh, ow, co))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
      out += patch @ k[i, j]
  return out if bias is None else out + bias


def np_bn(x, p, stats=None, eps=1e-5):
  if stats is None:  # training: biased batch statistics over all but channels
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  else:
    mean, var = stats["mean"], stats["var"]
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def randomize(tree, key, low=-1.0, high=1.0):
  """Replace every leaf by random values (so zero/one inits do not hide mistakes)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  new = [jax.random.uniform(k, l.shape, jnp.float32, low, high) for k, l in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, new)


def np_shuffle_attention(x, p, groups, eps=1e-5):
  """SA-Net written the PyTorch way, on NCHW: reshape into b*G, chunk, GN, concat, shuffle."""
  x = np.transpose(x, (0, 3, 1, 2))
  b, c, h, w = x.shape
  x = x.reshape(b * groups, c // groups, h, w)
  x0, x1 = np.split(x, 2, axis=1)
  cw, cb, sw, sb = (np.asarray(p[k])[None, :, None, None] for k in ("cweight", "cbias", "sweight",
                                                                     "sbias"))
  xn = x0 * sigmoid(cw * x0.mean(axis=(2, 3), keepdims=True) + cb)
  gn = (x1 - x1.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x1.var(axis=(2, 3), keepdims=True) + eps)
  xs = x1 * sigmoid(sw * gn + sb)
  out = np.concatenate([xn, xs], axis=1).reshape(b, c, h, w)
  out = out.reshape(b, 2, c // 2, h, w).transpose(0, 2, 1, 3, 4).reshape(b, c, h, w)
  return np.transpose(out, (0, 2, 3, 1))


def np_baa(x, p, stats=None):
  g = x.mean(axis=(1, 2), keepdims=True)
  g = np_conv(g, np.asarray(p["Conv_0"]["kernel"]), bias=np.asarray(p["Conv_0"]["bias"]))
  g = np.maximum(np_bn(g, p["BatchNorm_0"], stats and stats["BatchNorm_0"]), 0)
  g = np_conv(g, np.asarray(p["Conv_1"]["kernel"]), bias=np.asarray(p["Conv_1"]["bias"]))
  return sigmoid(np_bn(g, p["BatchNorm_1"], stats and stats["BatchNorm_1"]))


@pytest.fixture
def xy():
  kx, ky = jax.random.split(jax.random.key(0))
  return (np.asarray(jax.random.normal(kx, (2, 6, 5, 16))),
          np.asarray(jax.random.normal(ky, (2, 6, 5, 16))))


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_shuffle_attention_matches_numpy(xy, groups):
  x, _ = xy
  sa = models.ShuffleAttention(groups)
  params = randomize(sa.init(jax.random.key(1), x)["params"], jax.random.key(2))
  got = sa.apply({"params": params}, x)
  np.testing.assert_allclose(got, np_shuffle_attention(x, params, groups), RTOL, ATOL)


def test_shuffle_attention_init_is_identity_gate_of_sigmoid_one(xy):
  # cw=0, cb=1, sw=0, sb=1 at init: both halves scaled by sigmoid(1), then channel-shuffled.
  x, _ = xy
  sa = models.ShuffleAttention(2)
  got = sa.apply(sa.init(jax.random.key(1), x), x)
  np.testing.assert_allclose(got, models.channel_shuffle(x * sigmoid(1.0), 2), RTOL, ATOL)


def test_channel_shuffle_order():
  x = np.arange(6.0).reshape(1, 1, 1, 6)
  np.testing.assert_array_equal(models.channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])


def test_shuffle_attention_rejects_indivisible_channels():
  with pytest.raises(ValueError, match=r"channels \(16\) must be divisible by 2 \* groups \(32\)"):
    models.ShuffleAttention(16).init(jax.random.key(0), jnp.zeros((1, 4, 4, 16)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_masked_mean_is_the_mean_of_the_valid_pixels(dtype):
  """Per sample and channel, over the valid pixels only, for SA's 5-D view too; an image with no
  valid pixel gives 0, not NaN."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 7, 5, 4, 2)).astype(np.float32)
  valid = (rng.uniform(size=(3, 7, 5, 1, 1)) > 0.4).astype(np.float32)
  valid[2] = 0.0
  got = models.masked_mean(jnp.asarray(x, dtype), jnp.asarray(valid, dtype))
  assert got.shape == (3, 1, 1, 4, 2) and got.dtype == dtype
  x = np.asarray(jnp.asarray(x, dtype), np.float64)  # the values the function saw
  want = (x * valid).sum((1, 2), keepdims=True) / np.maximum(valid.sum((1, 2), keepdims=True), 1)
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-5 if dtype == jnp.float32
                             else 1e-2, atol=1e-6)
  assert np.all(np.asarray(got[2], np.float32) == 0.0)
  np.testing.assert_allclose(models.masked_mean(jnp.asarray(x[:2], jnp.float32), None),
                             x[:2].mean((1, 2), keepdims=True), rtol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU compiler's HLO")
def test_masked_shuffle_attention_copies_no_half_and_no_broadcast_mask():
  """SA with a mask, compiled: no copy of the mask broadcast to the map's channels and no copy of a
  channel half. Each was a full pass over memory at full resolution (the statistics now read the
  map and the mask as they are: masked_mean's dot; one mean over the whole map)."""
  from eaau_jax import xla_options  # pylint: disable=g-import-not-at-top
  sa = models.ShuffleAttention(4)
  x, valid = jnp.zeros((1, 32, 32, 16)), jnp.ones((1, 32, 32, 1))
  variables = sa.init(jax.random.key(0), x, valid)
  hlo = xla_options.jit(sa.apply).lower(variables, x, valid).compile().as_text()
  entry = hlo[hlo.index("\nENTRY"):].splitlines()
  # Of the map's size (1 x 32 x 32 in any channel layout): the two inputs and the output only.
  copies = [line for line in entry if re.search(r"= f32\[1,32,32,", line)
            and " parameter(" not in line and "ROOT" not in line]
  assert not copies, "\n".join(copies)


@pytest.mark.parametrize("train", [True, False])
def test_bottom_up_global_attention_matches_numpy(xy, train):
  x, _ = xy
  baa = models.BottomUpGlobalAttention(reduction=4)
  v = baa.init(jax.random.key(1), x, train=False)
  params = randomize(v["params"], jax.random.key(2))
  stats = randomize(v["batch_stats"], jax.random.key(3), 0.1, 2.0)
  got = baa.apply({"params": params, "batch_stats": stats}, x, train=train,
                  mutable=["batch_stats"])[0]
  # One value per sample and channel (2, 1, 1, 16), returned broadcast over H, W (x's shape).
  assert got.shape == x.shape and x.shape[0] == 2 and x.shape[-1] == 16
  want = np_baa(x, params, None if train else stats)
  assert want.shape == (2, 1, 1, 16)
  np.testing.assert_allclose(got, np.broadcast_to(want, x.shape), RTOL, ATOL)


def test_eaa_is_sa_x_plus_gate_times_sa_y(xy):
  x, y = xy
  eaa = models.EAA(sa_groups=4, reduction=4)
  v = eaa.init(jax.random.key(1), x, y, train=False)
  params = randomize(v["params"], jax.random.key(2))
  stats = randomize(v["batch_stats"], jax.random.key(3), 0.1, 2.0)
  got = eaa.apply({"params": params, "batch_stats": stats}, x, y, train=False)
  want = (np_shuffle_attention(x, params["sa_low"], 4)
          + np_baa(x, params["baa"], stats["baa"]) * np_shuffle_attention(y, params["sa_high"], 4))
  np.testing.assert_allclose(got, want, RTOL, ATOL)


@pytest.mark.parametrize("name,formula", [
    ("single_sa", lambda x, y, p, s: x + np_baa(x, p["baa"], s["baa"])
     * np_shuffle_attention(y, p["sa_high"], 4)),
    ("only_baa", lambda x, y, p, s: x + np_baa(x, p["baa"], s["baa"]) * y),
    ("only_sa", lambda x, y, p, s: np_shuffle_attention(x, p["sa_low"], 4)
     + np_shuffle_attention(y, p["sa_high"], 4)),
    # Figure 8: SA stays on both branches; TGAM's gate comes from the high level.
    ("tgam", lambda x, y, p, s: np_shuffle_attention(y, p["sa_high"], 4)
     + np_baa(y, p["tgam"], s["tgam"]) * np_shuffle_attention(x, p["sa_low"], 4)),
])
def test_ablation_fusions_match_numpy(xy, name, formula):
  x, y = xy
  m = models.FUSIONS[name](sa_groups=4, reduction=4)
  v = m.init(jax.random.key(1), x, y, train=False)
  params = randomize(v["params"], jax.random.key(2))
  stats = randomize(v.get("batch_stats", {}), jax.random.key(3), 0.1, 2.0)
  got = m.apply({"params": params, "batch_stats": stats}, x, y, train=False)
  np.testing.assert_allclose(got, formula(x, y, params, stats), RTOL, ATOL)


def test_blam_is_pointwise_gate_between_two_sa(xy):
  """Figure 8: Z = SA(X) + L(X) * SA(Y), L the point-wise (unpooled) BAA."""
  x, y = xy
  m = models.BLAM(sa_groups=4, reduction=4)
  v = m.init(jax.random.key(1), x, y, train=False)
  params = randomize(v["params"], jax.random.key(2))
  stats = randomize(v["batch_stats"], jax.random.key(3), 0.1, 2.0)
  got = m.apply({"params": params, "batch_stats": stats}, x, y, train=False)
  p, s = params["blam"], stats["blam"]
  g = np_conv(x, np.asarray(p["Conv_0"]["kernel"]), bias=np.asarray(p["Conv_0"]["bias"]))
  g = np.maximum(np_bn(g, p["BatchNorm_0"], s["BatchNorm_0"]), 0)
  g = np_conv(g, np.asarray(p["Conv_1"]["kernel"]), bias=np.asarray(p["Conv_1"]["bias"]))
  gate = sigmoid(np_bn(g, p["BatchNorm_1"], s["BatchNorm_1"]))
  want = (np_shuffle_attention(x, params["sa_low"], 4)
          + gate * np_shuffle_attention(y, params["sa_high"], 4))
  np.testing.assert_allclose(got, want, RTOL, ATOL)


def test_figure8_sa_block_count():
  """Figure 8 draws seven SA blocks over its five panels: EAA 2, BLAM 2, TGAM 2, single-SA 1,
  only-BAA 0 (only-SA, a sixth variant, has 2)."""
  x = jnp.zeros((1, 4, 4, 16))
  count = lambda name: sum(k.startswith("sa_") for k in models.FUSIONS[name](sa_groups=4).init(
      jax.random.key(0), x, x, train=False)["params"])
  assert {n: count(n) for n in models.FUSIONS} == {
      "eaa": 2, "blam": 2, "tgam": 2, "single_sa": 1, "only_baa": 0, "only_sa": 2}


@pytest.mark.parametrize("strides,cin,cout", [(1, 16, 16), (2, 16, 32)])
def test_residual_block_matches_numpy(strides, cin, cout):
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 8, 7, cin)))
  blk = models.ResidualBlock(cout, strides)
  v = blk.init(jax.random.key(1), x, train=False)
  p = randomize(v["params"], jax.random.key(2), -0.3, 0.3)
  s = randomize(v["batch_stats"], jax.random.key(3), 0.1, 2.0)
  got = blk.apply({"params": p, "batch_stats": s}, x, train=False)
  k = lambda name: np.asarray(p[name]["kernel"])
  y = np.maximum(np_bn(np_conv(x, k("Conv_0"), strides, 1), p["BatchNorm_0"], s["BatchNorm_0"]), 0)
  y = np_bn(np_conv(y, k("Conv_1"), 1, 1), p["BatchNorm_1"], s["BatchNorm_1"])
  short = x
  if "Conv_2" in p:
    short = np_bn(np_conv(x, k("Conv_2"), strides, 0), p["BatchNorm_2"], s["BatchNorm_2"])
  assert ("Conv_2" in p) == (strides != 1 or cin != cout)
  np.testing.assert_allclose(got, np.maximum(short + y, 0), RTOL, 1e-4)


PHASE_FORMS = ("transpose_2x2", "transpose_3x3", "transpose")


@pytest.mark.parametrize("kind", PHASE_FORMS)
@pytest.mark.parametrize("shape,cout", [((2, 5, 7, 3), 4), ((1, 8, 8, 16), 8), ((1, 1, 1, 2), 2)])
def test_transposed_conv_as_conv_and_depth_to_space_equals_conv_transpose(shape, cout, kind):
  """The paper's layer computed by phases equals nn.ConvTranspose, same parameter shape."""
  x = jax.random.normal(jax.random.key(0), shape)
  xla = models.upsampler("transpose_xla", cout, "t")
  phases = models.upsampler(kind, cout, "t")
  vx, vp = xla.init(jax.random.key(1), x), phases.init(jax.random.key(1), x)
  assert jax.tree_util.tree_map(jnp.shape, vx) == jax.tree_util.tree_map(jnp.shape, vp)
  kernel = {"params": {"kernel": jax.random.normal(jax.random.key(2), (4, 4, shape[-1], cout))}}
  want = xla.apply(kernel, x)
  assert want.shape == (shape[0], 2 * shape[1], 2 * shape[2], cout)
  np.testing.assert_allclose(phases.apply(kernel, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", PHASE_FORMS)
def test_transposed_conv_gradients_equal_conv_transpose_and_compile_to_its_windows(kind):
  """Each phase form's kernel and input gradients equal nn.ConvTranspose's; compiled, its
  convolutions have the form's window (2x2: each phase's 4 taps, no zero ones; `transpose`: the
  backend's form) and the 2x2 form's kernel gradient, on the CPU, no reversed window (the form
  XLA's CPU computes ~20x slower)."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
  kernel = jax.random.normal(jax.random.key(1), (4, 4, 3, 4))
  ct = jax.random.normal(jax.random.key(2), (2, 12, 10, 4))
  loss = lambda kind: lambda k, x: jnp.sum(
      models.upsampler(kind, 4, "t").apply({"params": {"kernel": k}}, x) * ct)
  want = jax.grad(loss("transpose_xla"), argnums=(0, 1))(kernel, x)
  grad = jax.jit(jax.grad(loss(kind), argnums=(0, 1)))
  for g, w in zip(grad(kernel, x), want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  hlo = grad.lower(kernel, x).compile().as_text()
  windows = re.findall(r" convolution\(.*window=\{size=([\dx]+)", hlo)
  n = models.transposed_conv_window(jax.default_backend()) if kind == "transpose" else int(kind[-1])
  # The input gradient's window is the layer's; the kernel gradient's spans the input.
  assert f"{n}x{n}" in windows and f"{5 - n}x{5 - n}" not in windows, windows
  if n == 2 and jax.default_backend() == "cpu":
    assert "rhs_reversal" not in hlo


def test_transposed_conv_form_by_backend():
  """The 2x2 form where it measured faster (the CPU), the 3x3 one elsewhere (H200: BENCHMARKS.md)."""
  assert [models.transposed_conv_window(b) for b in ("cpu", "gpu", "cuda", "tpu")] == [2, 3, 3, 3]
  x = jnp.ones((1, 4, 4, 2))
  with pytest.raises(models.ConfigError, match="TransposedConvUpsample.window: 4"):
    models.TransposedConvUpsample(2, window=4).init(jax.random.key(0), x)


def test_whole_model_same_with_either_transposed_conv():
  x = jax.random.normal(jax.random.key(0), (2, 24, 20, 1))
  a, b = models.EAAUNet(blocks=1), models.EAAUNet(blocks=1, upsampling="transpose_xla")
  v = a.init(jax.random.key(1), x)
  np.testing.assert_allclose(a.apply(v, x), b.apply(v, x), rtol=1e-4, atol=1e-4)


def test_subpixel_upsample_spans_transposed_conv():
  """A 4x4 stride-2 transposed conv is a sub-pixel conv with some 3x3 taps at zero."""
  x = np.asarray(jax.random.normal(jax.random.key(0), (1, 5, 6, 3)))
  tconv = models.upsampler("transpose", 2, "t")
  vt = tconv.init(jax.random.key(1), x)
  want = np.asarray(tconv.apply(vt, x))
  assert want.shape == (1, 10, 12, 2)
  # Fit the sub-pixel kernel by least squares on random inputs; the residual must vanish.
  sub = models.SubPixelUpsample(2)
  vs = sub.init(jax.random.key(2), x)
  f = lambda k, inp: sub.apply({"params": {"Conv_0": {"kernel": k}}}, inp)
  xs = jax.random.normal(jax.random.key(3), (8, 5, 6, 3))
  targets = tconv.apply(vt, xs)
  k0 = jnp.zeros_like(vs["params"]["Conv_0"]["kernel"])
  jac = jax.jacobian(lambda k: f(k, xs).ravel())(k0).reshape(-1, k0.size)
  sol, *_ = np.linalg.lstsq(np.asarray(jac), np.asarray(targets).ravel(), rcond=None)
  np.testing.assert_allclose(f(sol.reshape(k0.shape), x), want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fusion", sorted(models.FUSIONS))
def test_every_variant_jits_forward_and_backward(fusion):
  # One odd shape: a batch of 2, sides not multiples of 4, so the model's own padding is masked.
  # The unpadded path (training crops) of every variant runs in tests/test_torch_twin.py, its
  # logits and gradients against the twin's; a 64 x 64 case here cost ~12 s a variant.
  shape = (2, 37, 50, 1)
  model = models.EAAUNet(widths=(16, 32, 64), blocks=1, fusion=fusion)
  v = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  x = jax.random.normal(jax.random.key(1), shape)
  t = (jax.random.uniform(jax.random.key(2), shape) > 0.98).astype(jnp.float32)

  @jax.jit
  def loss_and_grad(params, stats):
    def loss(p):
      logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
      return losses.soft_iou_loss(logits, t), (logits, new)
    return jax.value_and_grad(loss, has_aux=True)(params)

  (val, (logits, new)), grads = loss_and_grad(v["params"], v["batch_stats"])
  assert logits.shape == shape
  assert np.isfinite(val) and np.all(np.isfinite(logits))
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(grads))
  # batch statistics moved in training mode
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(new),
                                                   jax.tree_util.tree_leaves(v["batch_stats"])))
  eval_logits = jax.jit(lambda v_, x_: model.apply(v_, x_, train=False))(v, x)
  assert eval_logits.shape == shape and np.all(np.isfinite(eval_logits))


def _inference_variables(model, key):
  """Init variables with random SA gates and BatchNorm statistics, so every global statistic and
  border effect shows in the logits (the init's zero SA weights would make the gates constant)."""
  v = model.init(key, jnp.zeros((1, 16, 16, 1)))
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (jax.random.uniform(jax.random.fold_in(key, hash(jax.tree_util.keystr(path))
                                                             % 2**31), x.shape, x.dtype, -1, 1)
                       if any(getattr(k, "key", "").startswith("sa_") for k in path) else x),
      v["params"])
  means = randomize(v["batch_stats"], jax.random.fold_in(key, 1), -0.2, 0.2)
  variances = randomize(v["batch_stats"], jax.random.fold_in(key, 2), 0.5, 2.0)
  stats = jax.tree_util.tree_map_with_path(
      lambda path, m, var: var if path[-1].key == "var" else m, means, variances)
  return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("fusion", ["eaa", "blam", "tgam", "only_baa"])
def test_logits_do_not_depend_on_padding_or_batch_mates(fusion):
  """An image's logits inside a padded evaluation batch equal its logits alone at its own size."""
  model = models.EAAUNet(blocks=1, fusion=fusion)
  v = _inference_variables(model, jax.random.key(0))
  image = jax.random.normal(jax.random.key(1), (1, 37, 50, 1))
  alone = model.apply(v, image)
  batch = jax.random.normal(jax.random.key(2), (3, 128, 128, 1))  # batch-mates: full images
  batch = batch.at[1].set(0.0).at[1, :37, :50].set(image[0])
  valid = jnp.ones((3, 128, 128, 1)).at[1].set(0.0).at[1, :37, :50].set(1.0)
  inside = model.apply(v, batch, valid=valid)
  assert float(jnp.abs(alone).std()) > 0.1  # logits that vary, so the comparison means something
  np.testing.assert_allclose(inside[1, :37, :50], alone[0], rtol=1e-4, atol=1e-4)
  # The batch-mate's logits do not depend on the padded image either.
  other = model.apply(v, batch[:1])
  np.testing.assert_allclose(inside[0], other[0], rtol=1e-4, atol=1e-4)


def test_own_padding_to_a_multiple_of_four_is_masked():
  """A 37x50 input equals the same input zero-padded to 40x52 with those pixels marked invalid,
  and differs from it with the padding taken as real pixels (so the mask matters)."""
  model = models.EAAUNet(blocks=1)
  v = _inference_variables(model, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (1, 37, 50, 1))
  padded = jnp.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)))
  valid = jnp.pad(jnp.ones((1, 37, 50, 1)), ((0, 0), (0, 3), (0, 2), (0, 0)))
  got = model.apply(v, x)
  assert got.shape == (1, 37, 50, 1)
  np.testing.assert_allclose(got, model.apply(v, padded, valid=valid)[:, :37, :50], 1e-4, 1e-4)
  assert not np.allclose(got, model.apply(v, padded)[:, :37, :50], 1e-3, 1e-3)


def test_three_channel_input_and_pure_function():
  model = models.EAAUNet(blocks=1)
  v = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  assert v["params"]["stem"]["kernel"].shape == (3, 3, 3, 16)
  x = jax.random.normal(jax.random.key(1), (2, 20, 24, 3))
  np.testing.assert_array_equal(model.apply(v, x), model.apply(v, x))  # no hidden state


def test_unknown_fusion_and_config_fields_are_errors():
  with pytest.raises(ValueError, match="config.model.fusion: unknown 'nope'"):
    models.EAAUNet(fusion="nope").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match=r"fields \['widht'\] that eaau_net does not have"):
    models.model_from_config({"widht": 3})
  with pytest.raises(ValueError, match="config.model.name: unknown model 'resnet'"):
    models.model_from_config({"name": "resnet"})
  with pytest.raises(ValueError, match="config.model.upsampling: unknown 'bicubic'"):
    models.EAAUNet(upsampling="bicubic").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_paper_default_parameter_count():
  """16/32/64, b=3, EAA with transposed convs: count the layers by hand."""
  model = models.EAAUNet(upsampling="transpose")
  n = models.count_params(model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"])
  conv = lambda k, ci, co: k * k * ci * co
  bn = lambda c: 2 * c
  block = lambda ci, co: (conv(3, ci, co) + bn(co) + conv(3, co, co) + bn(co)
                          + (conv(1, ci, co) + bn(co) if ci != co else 0))
  stage = lambda ci, co: block(ci, co) + 2 * block(co, co)
  sa = lambda c, g=4: 4 * (c // (2 * g))
  baa = lambda c: (c * (c // 4) + c // 4) + bn(c // 4) + ((c // 4) * c + c) + bn(c)
  eaa = lambda c: 2 * sa(c) + baa(c)
  want = (conv(3, 1, 16) + bn(16) + stage(16, 16) + stage(16, 32) + stage(32, 64)
          + conv(4, 64, 32) + eaa(32) + stage(32, 32) + conv(4, 32, 16) + eaa(16) + stage(16, 16)
          + conv(3, 16, 4) + bn(4) + 4 + 1)
  assert n == want
