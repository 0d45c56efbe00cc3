"""EAAU-Net and its ablation variants as Flax Linen modules (NHWC).

Tong et al., "EAAU-Net: Enhanced Asymmetric Attention U-Net for Infrared Small Target Detection",
Remote Sensing 2021. No official code is public; where the paper is silent the choice made here is a
module field and is said in the docstring (see ../shared/docs/eaau-net.md in the project notes).

Every module is a pure function of its variables: ``params`` and ``batch_stats`` in, logits out.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eaau_jax.errors import ConfigError
from eaau_jax.xla_options import fusion_boundary

# BatchNorm momentum 0.9 is PyTorch/MXNet's 0.1 (theirs weights the new batch, Flax's the old stats).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
conv_init = nn.initializers.kaiming_normal()  # MSRA init, as ACM/ALCNet.


# ---------------------------------------------------------------- valid-pixel masks
# An image evaluated inside a larger padded batch must give the logits it gives alone. Padding
# would otherwise leak in twice: through the global pooling of SA/BAA and SA's GroupNorm
# statistics, and through 3x3 convolutions at the border once BatchNorm's shift has made the
# padded pixels non-zero. So a ``valid`` mask (N, H, W, 1) travels with the features: every layer
# output is zeroed outside it (zero padding, as a convolution sees at an image's own border), and
# every spatial statistic is taken over valid pixels only. ``valid=None`` means every pixel is
# real and costs nothing (training crops).
def apply_mask(x: jax.Array, valid: Optional[jax.Array]) -> jax.Array:
  return x if valid is None else x * valid


def downsample_mask(valid: Optional[jax.Array]) -> Optional[jax.Array]:
  """The mask at half resolution: a stride-2 output pixel is real iff its centre input pixel is."""
  return None if valid is None else valid[:, ::2, ::2, :]


def masked_mean(x: jax.Array, valid: Optional[jax.Array]) -> jax.Array:
  """Mean over H, W (axes 1, 2; keepdims) of the valid pixels only, in ``x``'s dtype, summed in
  float32 at least (a bfloat16 pixel count is exact only up to 256). ``x`` (N, H, W, ...),
  ``valid`` one value per pixel, (N, H, W, 1) or with more unit axes, whatever ``x``'s trailing
  axes.

  With a mask the sum is a dot of the pixels with the mask: XLA's CPU reductions take their
  operands materialised, so ``(x * valid).sum()`` wrote the mask broadcast to ``x``'s shape and read
  it back, where the dot reads ``x`` and the mask once (BENCHMARKS.md, 2026-11-29). HIGHEST: a
  statistic, not a feature map (no TF32 on a GPU)."""
  if valid is None:
    return x.mean(axis=(1, 2), keepdims=True)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  n, h, w, *rest = x.shape
  mask = valid.reshape(n, h * w).astype(x.dtype)
  count = jnp.maximum(mask.sum(axis=1, dtype=acc), 1.0)
  total = jnp.einsum("npc,np->nc", x.reshape(n, h * w, -1), mask, preferred_element_type=acc,
                     precision=jax.lax.Precision.HIGHEST)
  return (total / count[:, None]).reshape(n, 1, 1, *rest).astype(x.dtype)


def broadcast_like(v: jax.Array, x: jax.Array) -> jax.Array:
  """``v`` broadcast to ``x``'s shape (numpy's rules), in ``x``'s dtype: a gate, statistic or
  per-channel parameter applied to a feature map.

  The values are plain broadcasting's; the point is the gradient. ``v``'s gradient is a sum of
  ``x``-shaped values over the broadcast axes, and JAX sums in the broadcast's dtype: in bfloat16
  (config.compute_dtype) a running sum stops growing near 256, so over H x W pixels it keeps a
  fraction of the true value (tests/test_mixed_precision.py). Broadcast in float32 and cast after,
  and that sum accumulates in float32; XLA fuses the casts. In float32 it is a plain broadcast."""
  acc = jnp.promote_types(v.dtype, jnp.float32)
  return jnp.broadcast_to(v.astype(acc), x.shape).astype(x.dtype)


def batch_norm(train: bool, name: Optional[str] = None, **kw) -> nn.BatchNorm:
  # No axis_name: under jit with the batch sharded (train.py) the statistics are already global.
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      name=name, **kw)


class ResidualBlock(nn.Module):
  """Basic residual block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus shortcut, ReLU.

  The shortcut is a 1x1 conv + BN when the stride or the width changes (ResNet option B).
  """
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool, valid=None):
    """``x`` is zero outside the input's valid pixels; ``valid`` is the mask at output resolution."""
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init)
    y = conv(self.features, (3, 3), strides=self.strides, padding=1)(x)
    y = apply_mask(nn.relu(batch_norm(train)(y)), valid)
    y = conv(self.features, (3, 3), padding=1)(y)
    y = batch_norm(train)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), strides=self.strides)(x)
      x = batch_norm(train)(x)
    # The residual stream: XLA's CPU fusion would recompute every earlier block's output inside
    # each consumer of this one (xla_options.fusion_boundary).
    return fusion_boundary(apply_mask(nn.relu(x + y), valid))


class Stage(nn.Module):
  """``blocks`` residual blocks; the first one carries the stride."""
  features: int
  blocks: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool, valid=None):
    """``valid``: the mask at the stage's output resolution."""
    for i in range(self.blocks):
      x = ResidualBlock(self.features, self.strides if i == 0 else 1)(x, train, valid)
    return x


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet channel shuffle on the last axis: (g, c/g) -> (c/g, g)."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


class ShuffleAttention(nn.Module):
  """SA-Net's shuffle attention (Zhang & Yang, ICASSP 2021).

  Channels split into ``groups`` groups, each group in two halves: a channel half gated by its
  global average, and a spatial half gated by its GroupNorm with one channel per group (i.e. a
  per-sample, per-channel normalisation over H, W). The GroupNorm carries no affine of its own:
  ``sw * GN(x) + sb`` already is that affine (SA-Net's extra GN scale/bias are redundant with it).
  The halves are concatenated back in order, then channels are shuffled with 2 groups.
  """
  groups: int = 4
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, valid=None):
    """``x`` (N, H, W, C), zero outside ``valid`` (N, H, W, 1); statistics over valid pixels."""
    n, h, w, c = x.shape
    if c % (2 * self.groups):
      raise ValueError(f"ShuffleAttention: channels ({c}) must be divisible by 2 * groups "
                       f"({2 * self.groups}); lower `sa_groups` in the config.")
    half = c // (2 * self.groups)
    cw = self.param("cweight", nn.initializers.zeros, (half,))
    cb = self.param("cbias", nn.initializers.ones, (half,))
    sw = self.param("sweight", nn.initializers.zeros, (half,))
    sb = self.param("sbias", nn.initializers.ones, (half,))

    # Every channel's mean in one pass over the whole map: the channel halves' pooled values and
    # the spatial halves' means. It is the same computation as BAA's pooling of the same map, so
    # XLA computes it once. (Taken per half, each mean first copied its half out of the map.)
    mean = masked_mean(x, valid).reshape(n, 1, 1, self.groups, 2 * half)
    x = x.reshape(n, h, w, self.groups, 2 * half)
    x_channel, x_spatial = x[..., :half], x[..., half:]

    # Every per-sample statistic and per-channel parameter meets the map through broadcast_like:
    # its gradient sums over the pixels in float32 whatever the compute dtype.
    pooled = mean[..., :half]
    gate = nn.sigmoid(broadcast_like(cw, pooled) * pooled + broadcast_like(cb, pooled))
    x_channel = x_channel * broadcast_like(gate, x_channel)

    centred = x_spatial - broadcast_like(mean[..., half:], x_spatial)
    var = masked_mean(jnp.square(centred), valid)
    normed = centred * broadcast_like(jax.lax.rsqrt(var + self.epsilon), x_spatial)
    gate = nn.sigmoid(broadcast_like(sw, normed) * normed + broadcast_like(sb, normed))
    x_spatial = x_spatial * gate  # zero where x_spatial is

    out = jnp.concatenate([x_channel, x_spatial], axis=-1).reshape(n, h, w, c)
    return channel_shuffle(out, 2)


class BottomUpGlobalAttention(nn.Module):
  """BAA: G(X) = sigmoid(BN(W2 relu(BN(W1 GAP(X))))), one value per sample and channel, returned
  broadcast over H, W (``x``'s shape and dtype: broadcast_like).

  The gate computes in float32 at least whatever the compute dtype: it is (N, 1, 1, C), and its
  convs' bias gradients sum over the batch (over every pixel in BLAM's local form)."""
  reduction: int = 4
  pool = True  # a class constant: BottomUpLocalAttention is the same gate without the pooling

  @nn.compact
  def __call__(self, x, train: bool, valid=None):
    c = x.shape[-1]
    g = masked_mean(x, valid) if self.pool else x
    conv = functools.partial(nn.Conv, kernel_size=(1, 1), kernel_init=conv_init,
                             dtype=jnp.promote_types(x.dtype, jnp.float32))
    g = conv(max(c // self.reduction, 1))(g)
    g = nn.relu(batch_norm(train)(g))
    g = conv(c)(g)
    return broadcast_like(nn.sigmoid(batch_norm(train)(g)), x)


class BottomUpLocalAttention(BottomUpGlobalAttention):
  """BLAM's gate (ALCNet): BAA without the pooling, so one weight per pixel and channel."""
  pool = False


class Fusion(nn.Module):
  """Base of the cross-layer fusions: low-level X and high-level Y (same shape) -> Z.

  ``valid`` is the mask of the fusion's resolution; X and Y arrive zero outside it.
  """
  sa_groups: int = 4
  reduction: int = 4

  def sa(self, name):
    return ShuffleAttention(self.sa_groups, name=name)

  def baa(self, name="baa"):
    return BottomUpGlobalAttention(self.reduction, name=name)


class EAA(Fusion):
  """Enhanced asymmetric attention: Z = SA(X) + G(X) * SA(Y); the two SA have their own weights."""

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    return (self.sa("sa_low")(x, valid)
            + self.baa()(x, train, valid) * self.sa("sa_high")(y, valid))


class SingleSA(Fusion):
  """Ablation: SA on the high-level branch only: Z = X + G(X) * SA(Y)."""

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    return x + self.baa()(x, train, valid) * self.sa("sa_high")(y, valid)


class OnlyBAA(Fusion):
  """Ablation: no shuffle attention: Z = X + G(X) * Y."""

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    return x + self.baa()(x, train, valid) * y


class OnlySA(Fusion):
  """Ablation: no cross-layer modulation: Z = SA(X) + SA(Y)."""

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    return self.sa("sa_low")(x, valid) + self.sa("sa_high")(y, valid)


class BLAM(Fusion):
  """Ablation (Fig. 8): bottom-up *local* attention: Z = SA(X) + L(X) * SA(Y).

  SA stays on both branches (Figure 8 draws two SA blocks in this panel); only the modulation
  changes: L(X) is BAA without the pooling, one weight per pixel and channel.
  """

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    gate = BottomUpLocalAttention(self.reduction, name="blam")(x, train, valid)
    return self.sa("sa_low")(x, valid) + gate * self.sa("sa_high")(y, valid)


class TGAM(Fusion):
  """Ablation (Fig. 8): top-down global attention: Z = SA(Y) + G(Y) * SA(X).

  SA on both branches as in EAA; the global gate comes from the high level and modulates the low.
  """

  @nn.compact
  def __call__(self, x, y, train: bool, valid=None):
    return (self.sa("sa_high")(y, valid)
            + self.baa("tgam")(y, train, valid) * self.sa("sa_low")(x, valid))


FUSIONS: dict[str, type[Fusion]] = {
    "eaa": EAA, "single_sa": SingleSA, "only_baa": OnlyBAA, "only_sa": OnlySA,
    "blam": BLAM, "tgam": TGAM,
}


def depth_to_space(y: jax.Array, features: int) -> jax.Array:
  """(N, H, W, 2*2*F) with channels ordered (row phase, column phase, F) -> (N, 2H, 2W, F)."""
  n, h, w, _ = y.shape
  y = y.reshape(n, h, w, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, 2 * h, 2 * w, features)


class SubPixelUpsample(nn.Module):
  """x2 upsampling as a 3x3 conv to 4C channels + depth-to-space (pixel shuffle).

  Spans every 4x4 stride-2 transposed convolution (each output phase sees a 2x2 input window, all
  inside the 3x3 one), with 9/4 of its parameters.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(4 * self.features, (3, 3), padding=1, use_bias=False, kernel_init=conv_init)(x)
    return depth_to_space(y, self.features)


# Which taps of the 4x4 transposed-conv kernel feed each output phase. Along one axis, flax's 4x4
# stride-2 "SAME" transposed conv computes out[2m] = K[0] x[m-1] + K[2] x[m] and
# out[2m+1] = K[1] x[m] + K[3] x[m+1]. A 2-tap convolution over x padded by one on each side gives
# z[s] = A[0] x[s-1] + A[1] x[s] for s = 0..H, so phase p is z[m + p] with A = K[PHASE_TAPS[p]].
PHASE_TAPS = np.array([[0, 2], [1, 3]])
# The same as one 3-tap window centred on x[m]: PHASE_TAPS_3[d, p, k] = 1 where input offset
# d - 1 of phase p uses kernel tap k (the other taps of a phase are zero).
PHASE_TAPS_3 = np.zeros((3, 2, 4), np.float32)
PHASE_TAPS_3[0, 0, 0] = PHASE_TAPS_3[1, 0, 2] = PHASE_TAPS_3[1, 1, 1] = PHASE_TAPS_3[2, 1, 3] = 1


def _conv(x, w, padding):
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def transposed_conv_2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The 4x4 stride-2 transposed conv as one 2x2 conv to the four phases + depth-to-space."""
  cin, cout = kernel.shape[2:]
  rows = PHASE_TAPS.T[:, ::-1]  # rows[a, r]: the 4x4 tap of window position a in phase 1 - r
  w2 = kernel[rows[:, None, :, None], rows[None, :, None, :]]  # (a, b, r, s, in, out)
  w2 = w2.transpose(0, 1, 4, 2, 3, 5).reshape(2, 2, cin, 4 * cout)
  # Padded explicitly: with the padding in the convolution, XLA's CPU kernel gradient becomes a
  # reversed-window convolution that it computes ~20x slower.
  z = _conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), w2, "VALID")
  # Phase p of output row m is z's row m + p; with the phases stored in reverse order (r = 1 - p)
  # depth-to-space puts it at row 2m + p + 1, so the output is the interleaved grid less its
  # first and last row and column.
  return depth_to_space(z, cout)[:, 1:-1, 1:-1]


def transposed_conv_3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same as one 3x3 conv (5 zero taps a phase: 9/4 the multiplications) + depth-to-space."""
  cin, cout = kernel.shape[2:]
  taps = jnp.asarray(PHASE_TAPS_3, kernel.dtype)
  w3 = jnp.einsum("apk,bql,klio->abipqo", taps, taps, kernel).reshape(3, 3, cin, 4 * cout)
  return depth_to_space(_conv(x, w3, ((1, 1), (1, 1))), cout)


def transposed_conv_window(backend: str) -> int:
  """The faster of the two exact forms on ``backend``, as measured (BENCHMARKS.md).

  On the 2-core CPUs the 2x2 form is faster (training 1.05x at 256² with AVX-512, forward +
  backward 1.06x with AVX2: 4/9 the multiplications); on an H200 it trained 0.91x as fast at 480²
  (196-198 against 214-217 images/s; why was not traced). TPUs are not measured: they get the 3x3.
  """
  return 2 if backend == "cpu" else 3


class TransposedConvUpsample(nn.Module):
  """The paper's 4x4 stride-2 transposed convolution, computed exactly as a convolution to its four
  output phases + depth-to-space. Through XLA's transposed conv, EAAU-Net's forward and backward
  took 1.19x as long at 256² on a 2-core AVX2 CPU and 1.62x at 480² on an H200
  (benchmarks/upsampling.py, 2026-11-28), and ACM-U-Net's train step 1.42x at 256² on the same
  kind of CPU (benchmarks/tree_speed.py, 2026-11-29; BENCHMARKS.md).

  Each output phase is a 2x2 sub-kernel of the 4x4 kernel over a 2x2 input window, one pixel
  further on for the odd rows (columns): one 2x2 convolution of the input padded by a pixel holds
  all four, and so does one 3x3 convolution with zeros at the other taps. ``window`` picks the
  form (None: ``transposed_conv_window`` of the default backend). The parameter is the 4x4 kernel,
  shape (4, 4, in, out) as ``nn.ConvTranspose``'s, so checkpoints of any form load in all; with
  ``use_bias`` (ACM-U-Net's deconvolutions) a "bias" as ``nn.ConvTranspose``'s too.
  """
  features: int
  window: Optional[int] = None
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features))
    window = self.window if self.window is not None else transposed_conv_window(
        jax.default_backend())
    if window not in (2, 3):
      raise ConfigError(f"TransposedConvUpsample.window: {window!r}; expected 2, 3 or None")
    y = (transposed_conv_2x2 if window == 2 else transposed_conv_3x3)(x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y


# transpose: the faster exact form on this backend; _2x2 / _3x3: that form on every backend.
TRANSPOSE_WINDOWS = {"transpose": None, "transpose_2x2": 2, "transpose_3x3": 3}
UPSAMPLINGS = (*TRANSPOSE_WINDOWS, "transpose_xla", "subpixel")


def upsampler(kind: str, features: int, name: str) -> nn.Module:
  if kind in TRANSPOSE_WINDOWS:
    return TransposedConvUpsample(features, TRANSPOSE_WINDOWS[kind], name=name)
  if kind == "transpose_xla":  # the same layer through XLA's transposed convolution
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                            kernel_init=conv_init, name=name)
  if kind == "subpixel":
    return SubPixelUpsample(features, name=name)
  raise ConfigError(f"config.model.upsampling: unknown {kind!r}; expected one of {UPSAMPLINGS}")


def input_masks(n: int, h: int, w: int, valid: Optional[jax.Array]):
  """Masks at full, 1/2 and 1/4 resolution of the input padded to a multiple of 4.

  None when every pixel is real and no padding is needed (the fast path of training crops);
  otherwise the network's own padding to a multiple of 4 is masked like any other padding, so an
  image gives the same logits alone at its own size and inside a padded batch.
  """
  if valid is None and not (h % 4 or w % 4):
    return None, None, None
  if valid is None:
    valid = jnp.ones((n, h, w, 1), jnp.float32)
  v1 = jnp.pad(valid.astype(jnp.float32), ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)))
  v2 = downsample_mask(v1)
  return v1, v2, downsample_mask(v2)


class EAAUNet(nn.Module):
  """EAAU-Net (paper Table 1): stem, Stage-1/2, bottleneck, two fusion up-stages, head.

  Attributes:
    widths: channels at full, 1/2 and 1/4 resolution (paper: 16/32/64).
    blocks: residual blocks per stage, ``b`` (b = 3 is the paper's "ResNet-20").
    fusion: a key of ``FUSIONS`` (``eaa`` is the paper's module; the rest are its ablations).
    sa_groups: shuffle-attention groups G; every width must be divisible by 2G.
    reduction: BAA/BLAM/TGAM reduction ratio r.
    upsampling: a key of ``UPSAMPLINGS``: ``transpose`` (the paper's 4x4 stride-2 transposed conv,
      computed as conv + depth-to-space in the backend's faster form), ``transpose_2x2`` /
      ``transpose_3x3`` (the same in one form), ``transpose_xla`` (the same through
      ``nn.ConvTranspose``), ``subpixel`` (a 3x3 conv + depth-to-space).
    head_dropout: dropout before the 1x1 classifier (0.1 as ACM's FCN head).

  Call: ``(x, train, valid)``: x (N, H, W, C) of any H, W; ``valid`` (N, H, W, 1) marks the real
  pixels of a padded batch (None: all). Returns (N, H, W, 1) logits; an image's logits do not
  depend on padding or batch-mates in inference mode (see ``apply_mask``). In training mode the
  BatchNorm batch statistics are those of every pixel given (training crops have no padding).
  """
  widths: Sequence[int] = (16, 32, 64)
  blocks: int = 3
  fusion: str = "eaa"
  sa_groups: int = 4
  reduction: int = 4
  upsampling: str = "transpose"
  head_dropout: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool = False, valid=None):
    if self.fusion not in FUSIONS:
      raise ConfigError(f"config.model.fusion: unknown {self.fusion!r}; expected one of "
                        f"{sorted(FUSIONS)}")
    if x.ndim != 4:
      raise ValueError(f"EAAUNet expects (N, H, W, C) input, got shape {x.shape}")
    n, h, w, _ = x.shape
    # The masks in the input's dtype: float32 masks would promote a bfloat16 network to float32.
    v1, v2, v3 = (None if v is None else v.astype(x.dtype) for v in input_masks(n, h, w, valid))
    x = apply_mask(jnp.pad(x, ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0))), v1)
    c1, c2, c3 = self.widths
    fuse = functools.partial(FUSIONS[self.fusion], sa_groups=self.sa_groups, reduction=self.reduction)

    x = nn.Conv(c1, (3, 3), padding=1, use_bias=False, kernel_init=conv_init, name="stem")(x)
    x = apply_mask(nn.relu(batch_norm(train, name="stem_bn")(x)), v1)
    s1 = Stage(c1, self.blocks, 1, name="stage1")(x, train, v1)
    s2 = Stage(c2, self.blocks, 2, name="stage2")(s1, train, v2)
    x = Stage(c3, self.blocks, 2, name="bottleneck")(s2, train, v3)

    x = apply_mask(upsampler(self.upsampling, c2, "up2")(x), v2)
    x = fuse(name="fuse2")(s2, x, train, v2)
    x = Stage(c2, self.blocks, 1, name="upstage2")(x, train, v2)
    x = apply_mask(upsampler(self.upsampling, c1, "up1")(x), v1)
    x = fuse(name="fuse1")(s1, x, train, v1)
    x = Stage(c1, self.blocks, 1, name="upstage1")(x, train, v1)

    x = nn.Conv(max(c1 // 4, 1), (3, 3), padding=1, use_bias=False, kernel_init=conv_init,
                name="head_conv")(x)
    x = nn.relu(batch_norm(train, name="head_bn")(x))
    x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
    # In float32 at least whatever the compute dtype: its bias's gradient sums over every pixel.
    x = nn.Conv(1, (1, 1), dtype=jnp.promote_types(x.dtype, jnp.float32), name="head_out")(x)
    return x[:, :h, :w, :]


def registry() -> dict[str, type[nn.Module]]:
  """Every model by its ``config.model.name``: EAAU-Net here, the CNN baselines in baselines.py."""
  from eaau_jax import baselines  # pylint: disable=g-import-not-at-top  (it imports this module)
  return {"eaau_net": EAAUNet, **baselines.BASELINES}


def model_from_config(config) -> nn.Module:
  """The model a ``config.model`` ConfigDict describes: ``name`` picks it from ``registry()``, the
  other fields are its attributes (unknown fields are an error naming them)."""
  fields = dict(config)
  name = fields.pop("name", "eaau_net")
  models = registry()
  if name not in models:
    raise ConfigError(f"config.model.name: unknown model {name!r}; expected one of "
                      f"{sorted(models)}")
  cls = models[name]
  known = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = set(fields) - known
  if unknown:
    raise ConfigError(f"fields {sorted(unknown)} that {name} does not have; known: "
                      f"{sorted(known)}", "config.model")
  if "widths" in fields:
    fields["widths"] = tuple(fields["widths"])
  return cls(**fields)


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
