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

# BatchNorm momentum 0.9 is PyTorch/MXNet's 0.1 (theirs weights the new batch, Flax's the old stats).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
conv_init = nn.initializers.kaiming_normal()  # MSRA init, as ACM/ALCNet.


def batch_norm(train: bool, axis_name: Optional[str], name: Optional[str] = None, **kw) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      axis_name=axis_name, name=name, **kw)


class ResidualBlock(nn.Module):
  """Basic residual block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus shortcut, ReLU.

  The shortcut is a 1x1 conv + BN when the stride or the width changes (ResNet option B).
  """
  features: int
  strides: int = 1
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init)
    y = conv(self.features, (3, 3), strides=self.strides, padding=1)(x)
    y = nn.relu(batch_norm(train, self.axis_name)(y))
    y = conv(self.features, (3, 3), padding=1)(y)
    y = batch_norm(train, self.axis_name)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), strides=self.strides)(x)
      x = batch_norm(train, self.axis_name)(x)
    return nn.relu(x + y)


class Stage(nn.Module):
  """``blocks`` residual blocks; the first one carries the stride."""
  features: int
  blocks: int
  strides: int = 1
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.blocks):
      x = ResidualBlock(self.features, self.strides if i == 0 else 1, self.axis_name)(x, train)
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
  def __call__(self, x):
    *lead, h, w, c = x.shape
    if c % (2 * self.groups):
      raise ValueError(f"ShuffleAttention: channels ({c}) must be divisible by 2 * groups "
                       f"({2 * self.groups}); lower `sa_groups` in the config.")
    half = c // (2 * self.groups)
    x = x.reshape(*lead, h, w, self.groups, 2 * half)
    x_channel, x_spatial = x[..., :half], x[..., half:]

    cw = self.param("cweight", nn.initializers.zeros, (half,))
    cb = self.param("cbias", nn.initializers.ones, (half,))
    sw = self.param("sweight", nn.initializers.zeros, (half,))
    sb = self.param("sbias", nn.initializers.ones, (half,))

    pooled = x_channel.mean(axis=(-4, -3), keepdims=True)
    x_channel = x_channel * nn.sigmoid(cw * pooled + cb)

    mean = x_spatial.mean(axis=(-4, -3), keepdims=True)
    var = x_spatial.var(axis=(-4, -3), keepdims=True)
    normed = (x_spatial - mean) * jax.lax.rsqrt(var + self.epsilon)
    x_spatial = x_spatial * nn.sigmoid(sw * normed + sb)

    out = jnp.concatenate([x_channel, x_spatial], axis=-1).reshape(*lead, h, w, c)
    return channel_shuffle(out, 2)


class BottomUpGlobalAttention(nn.Module):
  """BAA: G(X) = sigmoid(BN(W2 relu(BN(W1 GAP(X))))), shape (N, 1, 1, C), broadcast over H, W."""
  reduction: int = 4
  axis_name: Optional[str] = None
  pool = True  # a class constant: BottomUpLocalAttention is the same gate without the pooling

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    g = x.mean(axis=(1, 2), keepdims=True) if self.pool else x
    g = nn.Conv(max(c // self.reduction, 1), (1, 1), kernel_init=conv_init)(g)
    g = nn.relu(batch_norm(train, self.axis_name)(g))
    g = nn.Conv(c, (1, 1), kernel_init=conv_init)(g)
    return nn.sigmoid(batch_norm(train, self.axis_name)(g))


class BottomUpLocalAttention(BottomUpGlobalAttention):
  """BLAM's gate (ALCNet): BAA without the pooling, so one weight per pixel and channel."""
  pool = False


class Fusion(nn.Module):
  """Base of the cross-layer fusions: low-level X and high-level Y (same shape) -> Z."""
  sa_groups: int = 4
  reduction: int = 4
  axis_name: Optional[str] = None

  def sa(self, name):
    return ShuffleAttention(self.sa_groups, name=name)

  def baa(self, name="baa"):
    return BottomUpGlobalAttention(self.reduction, self.axis_name, name=name)


class EAA(Fusion):
  """Enhanced asymmetric attention: Z = SA(X) + G(X) * SA(Y); the two SA have their own weights."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return self.sa("sa_low")(x) + self.baa()(x, train) * self.sa("sa_high")(y)


class SingleSA(Fusion):
  """Ablation: SA on the high-level branch only: Z = X + G(X) * SA(Y)."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return x + self.baa()(x, train) * self.sa("sa_high")(y)


class OnlyBAA(Fusion):
  """Ablation: no shuffle attention: Z = X + G(X) * Y."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return x + self.baa()(x, train) * y


class OnlySA(Fusion):
  """Ablation: no cross-layer modulation: Z = SA(X) + SA(Y)."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return self.sa("sa_low")(x) + self.sa("sa_high")(y)


class BLAM(Fusion):
  """Ablation: bottom-up local attention (point-wise, no pooling): Z = X + L(X) * Y."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return x + BottomUpLocalAttention(self.reduction, self.axis_name, name="blam")(x, train) * y


class TGAM(Fusion):
  """Ablation: top-down global attention: Z = Y + G(Y) * X (the gate comes from the high level)."""

  @nn.compact
  def __call__(self, x, y, train: bool):
    return y + self.baa("tgam")(y, train) * x


FUSIONS: dict[str, type[Fusion]] = {
    "eaa": EAA, "single_sa": SingleSA, "only_baa": OnlyBAA, "only_sa": OnlySA,
    "blam": BLAM, "tgam": TGAM,
}


class SubPixelUpsample(nn.Module):
  """x2 upsampling as a 3x3 conv to 4C channels + depth-to-space (pixel shuffle).

  Spans every 4x4 stride-2 transposed convolution (each output phase sees a 2x2 input window, all
  inside the 3x3 one) without XLA's slow transposed-conv path; see benchmarks/upsampling.py.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    n, h, w, _ = x.shape
    y = nn.Conv(4 * self.features, (3, 3), padding=1, use_bias=False, kernel_init=conv_init)(x)
    y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * w, self.features)


def upsampler(kind: str, features: int, name: str) -> nn.Module:
  if kind == "transpose":  # ACM-U-Net's 4x4 stride-2 transposed conv, output exactly 2H x 2W.
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                            kernel_init=conv_init, name=name)
  if kind == "subpixel":
    return SubPixelUpsample(features, name=name)
  raise ValueError(f"unknown upsampling {kind!r}; expected 'transpose' or 'subpixel'")


class EAAUNet(nn.Module):
  """EAAU-Net (paper Table 1): stem, Stage-1/2, bottleneck, two fusion up-stages, head.

  Attributes:
    widths: channels at full, 1/2 and 1/4 resolution (paper: 16/32/64).
    blocks: residual blocks per stage, ``b`` (b = 3 is the paper's "ResNet-20").
    fusion: a key of ``FUSIONS`` (``eaa`` is the paper's module; the rest are its ablations).
    sa_groups: shuffle-attention groups G; every width must be divisible by 2G.
    reduction: BAA/BLAM/TGAM reduction ratio r.
    upsampling: ``transpose`` (4x4 stride-2 transposed conv, as ACM-U-Net) or ``subpixel``.
    head_dropout: dropout before the 1x1 classifier (0.1 as ACM's FCN head).
    axis_name: BatchNorm cross-device axis; only needed under shard_map (under plain ``jit`` with
      sharded arrays the batch statistics are already global).

  Input (N, H, W, C) of any H, W: padded with zeros (the normalised mean) to a multiple of 4 and the
  logits cropped back, so the output is (N, H, W, 1) logits.
  """
  widths: Sequence[int] = (16, 32, 64)
  blocks: int = 3
  fusion: str = "eaa"
  sa_groups: int = 4
  reduction: int = 4
  upsampling: str = "subpixel"
  head_dropout: float = 0.1
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.fusion not in FUSIONS:
      raise ValueError(f"unknown fusion {self.fusion!r}; expected one of {sorted(FUSIONS)}")
    if x.ndim != 4:
      raise ValueError(f"EAAUNet expects (N, H, W, C) input, got shape {x.shape}")
    n, h, w, _ = x.shape
    x = jnp.pad(x, ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)))
    c1, c2, c3 = self.widths
    ax = self.axis_name
    fuse = functools.partial(FUSIONS[self.fusion], sa_groups=self.sa_groups, reduction=self.reduction,
                             axis_name=ax)

    x = nn.Conv(c1, (3, 3), padding=1, use_bias=False, kernel_init=conv_init, name="stem")(x)
    x = nn.relu(batch_norm(train, ax, name="stem_bn")(x))
    s1 = Stage(c1, self.blocks, 1, ax, name="stage1")(x, train)
    s2 = Stage(c2, self.blocks, 2, ax, name="stage2")(s1, train)
    x = Stage(c3, self.blocks, 2, ax, name="bottleneck")(s2, train)

    x = upsampler(self.upsampling, c2, "up2")(x)
    x = fuse(name="fuse2")(s2, x, train)
    x = Stage(c2, self.blocks, 1, ax, name="upstage2")(x, train)
    x = upsampler(self.upsampling, c1, "up1")(x)
    x = fuse(name="fuse1")(s1, x, train)
    x = Stage(c1, self.blocks, 1, ax, name="upstage1")(x, train)

    x = nn.Conv(max(c1 // 4, 1), (3, 3), padding=1, use_bias=False, kernel_init=conv_init,
                name="head_conv")(x)
    x = nn.relu(batch_norm(train, ax, name="head_bn")(x))
    x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
    x = nn.Conv(1, (1, 1), name="head_out")(x)
    return x[:, :h, :w, :]


def model_from_config(config) -> EAAUNet:
  """The model a ``config.model`` ConfigDict describes (unknown fields are an error)."""
  fields = dict(config)
  known = set(EAAUNet.__dataclass_fields__) - {"parent", "name"}
  unknown = set(fields) - known
  if unknown:
    raise ValueError(f"config.model has unknown fields {sorted(unknown)}; known: {sorted(known)}")
  if "widths" in fields:
    fields["widths"] = tuple(fields["widths"])
  return EAAUNet(**fields)


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
