"""EAAU-Net in PyTorch (NCHW), module for module as eaau_jax/models.py, for comparison only.

Submodules carry the Flax module names (``stem``, ``stage1.ResidualBlock_0.Conv_0``,
``fuse2.baa.BatchNorm_1``, ...), so convert.py maps a Flax variable path to a state_dict key by
joining it with dots. The layers are the ones a PyTorch user would write (``nn.BatchNorm2d``,
``F.group_norm``, ``nn.ConvTranspose2d``, ``nn.PixelShuffle``), so the twin checks the JAX
model's own constructions (transposed conv as phases, depth-to-space, masked statistics) against
PyTorch's stock layers, and times what a PyTorch codebase would run.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1  # PyTorch's weight of the new batch: Flax's momentum 0.9 (models.BN_MOMENTUM)
BN_EPSILON = 1e-5


def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
         bias: bool = False) -> nn.Conv2d:
  """A conv initialised as the JAX model's: He normal over fan-in, zero bias."""
  c = nn.Conv2d(cin, cout, k, stride, padding, bias=bias)
  nn.init.kaiming_normal_(c.weight, mode="fan_in", nonlinearity="relu")
  if bias:
    nn.init.zeros_(c.bias)
  return c


def batch_norm(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class ResidualBlock(nn.Module):
  """3x3 conv-BN-ReLU, 3x3 conv-BN, plus shortcut (1x1 conv + BN when stride or width change)."""

  def __init__(self, cin: int, features: int, stride: int = 1):
    super().__init__()
    self.Conv_0 = conv(cin, features, 3, stride, 1)
    self.BatchNorm_0 = batch_norm(features)
    self.Conv_1 = conv(features, features, 3, 1, 1)
    self.BatchNorm_1 = batch_norm(features)
    self.projects = stride != 1 or cin != features
    if self.projects:
      # A 1x1 stride-2 conv with no padding takes the even pixels, as Flax's "SAME" one does.
      self.Conv_2 = conv(cin, features, 1, stride)
      self.BatchNorm_2 = batch_norm(features)

  def forward(self, x):
    y = F.relu(self.BatchNorm_0(self.Conv_0(x)))
    y = self.BatchNorm_1(self.Conv_1(y))
    if self.projects:
      x = self.BatchNorm_2(self.Conv_2(x))
    return F.relu(x + y)


class Stage(nn.Sequential):
  """``blocks`` residual blocks named ResidualBlock_i; the first one carries the stride."""

  def __init__(self, cin: int, features: int, blocks: int, stride: int = 1):
    super().__init__()
    for i in range(blocks):
      self.add_module(f"ResidualBlock_{i}",
                      ResidualBlock(cin if i == 0 else features, features, stride if i == 0 else 1))


class ShuffleAttention(nn.Module):
  """SA-Net's shuffle attention as its PyTorch code writes it (reshape to N*G, chunk, GN, shuffle),
  with the GroupNorm's own affine dropped as in the JAX model (``sweight``/``sbias`` are it)."""

  def __init__(self, channels: int, groups: int = 4, eps: float = 1e-5):
    super().__init__()
    if channels % (2 * groups):
      raise ValueError(f"ShuffleAttention: channels ({channels}) must be divisible by 2 * groups "
                       f"({2 * groups})")
    half = channels // (2 * groups)
    self.groups, self.eps = groups, eps
    self.cweight = nn.Parameter(torch.zeros(half))
    self.cbias = nn.Parameter(torch.ones(half))
    self.sweight = nn.Parameter(torch.zeros(half))
    self.sbias = nn.Parameter(torch.ones(half))

  def forward(self, x):
    n, c, h, w = x.shape
    half = self.cweight.shape[0]
    x = x.reshape(n * self.groups, 2 * half, h, w)
    x_channel, x_spatial = x[:, :half], x[:, half:]
    col = lambda p: p.view(1, half, 1, 1)
    pooled = x_channel.mean((2, 3), keepdim=True)
    x_channel = x_channel * torch.sigmoid(col(self.cweight) * pooled + col(self.cbias))
    normed = F.group_norm(x_spatial, half, eps=self.eps)  # one channel per group: over H, W
    x_spatial = x_spatial * torch.sigmoid(col(self.sweight) * normed + col(self.sbias))
    out = torch.cat([x_channel, x_spatial], 1).reshape(n, c, h, w)
    return out.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class BottomUpGlobalAttention(nn.Module):
  """BAA: sigmoid(BN(W2 relu(BN(W1 GAP(X))))); BLAM's local gate is the same without the pooling."""
  pool = True

  def __init__(self, channels: int, reduction: int = 4):
    super().__init__()
    mid = max(channels // reduction, 1)
    self.Conv_0 = conv(channels, mid, 1, bias=True)
    self.BatchNorm_0 = batch_norm(mid)
    self.Conv_1 = conv(mid, channels, 1, bias=True)
    self.BatchNorm_1 = batch_norm(channels)

  def forward(self, x):
    g = x.mean((2, 3), keepdim=True) if self.pool else x
    g = F.relu(self.BatchNorm_0(self.Conv_0(g)))
    return torch.sigmoid(self.BatchNorm_1(self.Conv_1(g)))


class BottomUpLocalAttention(BottomUpGlobalAttention):
  pool = False


class EAA(nn.Module):
  """Z = SA(X) + G(X) * SA(Y), X low-level, Y high-level."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    self.sa_low = ShuffleAttention(c, sa_groups)
    self.baa = BottomUpGlobalAttention(c, reduction)
    self.sa_high = ShuffleAttention(c, sa_groups)

  def forward(self, x, y):
    return self.sa_low(x) + self.baa(x) * self.sa_high(y)


class SingleSA(nn.Module):
  """Z = X + G(X) * SA(Y)."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    self.baa = BottomUpGlobalAttention(c, reduction)
    self.sa_high = ShuffleAttention(c, sa_groups)

  def forward(self, x, y):
    return x + self.baa(x) * self.sa_high(y)


class OnlyBAA(nn.Module):
  """Z = X + G(X) * Y."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    del sa_groups
    self.baa = BottomUpGlobalAttention(c, reduction)

  def forward(self, x, y):
    return x + self.baa(x) * y


class OnlySA(nn.Module):
  """Z = SA(X) + SA(Y)."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    del reduction
    self.sa_low = ShuffleAttention(c, sa_groups)
    self.sa_high = ShuffleAttention(c, sa_groups)

  def forward(self, x, y):
    return self.sa_low(x) + self.sa_high(y)


class BLAM(nn.Module):
  """Z = SA(X) + L(X) * SA(Y), L the point-wise (unpooled) gate."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    self.blam = BottomUpLocalAttention(c, reduction)
    self.sa_low = ShuffleAttention(c, sa_groups)
    self.sa_high = ShuffleAttention(c, sa_groups)

  def forward(self, x, y):
    return self.sa_low(x) + self.blam(x) * self.sa_high(y)


class TGAM(nn.Module):
  """Z = SA(Y) + G(Y) * SA(X): the global gate comes from the high level."""

  def __init__(self, c: int, sa_groups: int, reduction: int):
    super().__init__()
    self.sa_high = ShuffleAttention(c, sa_groups)
    self.tgam = BottomUpGlobalAttention(c, reduction)
    self.sa_low = ShuffleAttention(c, sa_groups)

  def forward(self, x, y):
    return self.sa_high(y) + self.tgam(y) * self.sa_low(x)


FUSIONS = {"eaa": EAA, "single_sa": SingleSA, "only_baa": OnlyBAA, "only_sa": OnlySA,
           "blam": BLAM, "tgam": TGAM}


class SubPixelUpsample(nn.Module):
  """3x3 conv to 4F channels + ``nn.PixelShuffle`` (channels ordered (F, row, col); convert.py
  reorders the JAX kernel's (row, col, F) output channels)."""

  def __init__(self, cin: int, features: int):
    super().__init__()
    self.features = features
    self.Conv_0 = conv(cin, 4 * features, 3, 1, 1)
    self.shuffle = nn.PixelShuffle(2)

  def forward(self, x):
    return self.shuffle(self.Conv_0(x))


def upsampler(kind: str, cin: int, features: int) -> nn.Module:
  """``transpose`` and its forms (``transpose_2x2``, ``_3x3``, ``_xla``) are the same layer in the
  JAX model: PyTorch's own 4x4 stride-2 transposed conv (padding 1 gives Flax's "SAME" output,
  2H x 2W)."""
  if kind in ("transpose", "transpose_2x2", "transpose_3x3", "transpose_xla"):
    up = nn.ConvTranspose2d(cin, features, 4, stride=2, padding=1, bias=False)
    nn.init.normal_(up.weight, std=math.sqrt(2.0 / (16 * cin)))  # He over the JAX kernel's fan-in
    return up
  if kind == "subpixel":
    return SubPixelUpsample(cin, features)
  raise ValueError(f"upsampling: unknown {kind!r}")


class EAAUNet(nn.Module):
  """The JAX EAAUNet's graph on NCHW input. Sides that are not multiples of 4 are zero-padded and
  the logits cropped without the JAX model's ``valid`` mask (see __init__.py)."""

  def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64), blocks: int = 3,
               fusion: str = "eaa", sa_groups: int = 4, reduction: int = 4,
               upsampling: str = "transpose", head_dropout: float = 0.1):
    super().__init__()
    if fusion not in FUSIONS:
      raise ValueError(f"fusion: unknown {fusion!r}; expected one of {sorted(FUSIONS)}")
    c1, c2, c3 = widths
    fuse = FUSIONS[fusion]
    self.stem = conv(in_channels, c1, 3, 1, 1)
    self.stem_bn = batch_norm(c1)
    self.stage1 = Stage(c1, c1, blocks, 1)
    self.stage2 = Stage(c1, c2, blocks, 2)
    self.bottleneck = Stage(c2, c3, blocks, 2)
    self.up2 = upsampler(upsampling, c3, c2)
    self.fuse2 = fuse(c2, sa_groups, reduction)
    self.upstage2 = Stage(c2, c2, blocks, 1)
    self.up1 = upsampler(upsampling, c2, c1)
    self.fuse1 = fuse(c1, sa_groups, reduction)
    self.upstage1 = Stage(c1, c1, blocks, 1)
    self.head_conv = conv(c1, max(c1 // 4, 1), 3, 1, 1)
    self.head_bn = batch_norm(max(c1 // 4, 1))
    self.head_dropout = nn.Dropout(head_dropout)
    self.head_out = conv(max(c1 // 4, 1), 1, 1, bias=True)

  def forward(self, x):
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % 4, 0, -h % 4))
    x = F.relu(self.stem_bn(self.stem(x)))
    s1 = self.stage1(x)
    s2 = self.stage2(s1)
    x = self.bottleneck(s2)
    x = self.upstage2(self.fuse2(s2, self.up2(x)))
    x = self.upstage1(self.fuse1(s1, self.up1(x)))
    x = F.relu(self.head_bn(self.head_conv(x)))
    return self.head_out(self.head_dropout(x))[..., :h, :w]


def soft_iou_loss(logits: torch.Tensor, masks: torch.Tensor, reduction: str = "batch",
                  smooth: float = 1.0) -> torch.Tensor:
  """losses.soft_iou_loss without ``valid``: 1 - (Σpt + s) / (Σp + Σt - Σpt + s), p = sigmoid;
  ``batch`` sums over the whole batch, ``image`` averages per-image ratios. In float32 at least
  (as the JAX loss), float64 for float64 logits (the twin test's exact comparison)."""
  if reduction not in ("batch", "image"):
    raise ValueError(f"reduction must be batch or image, got {reduction!r}")
  dtype = torch.promote_types(logits.dtype, torch.float32)
  p = torch.sigmoid(logits.to(dtype))
  t = masks.to(dtype)
  dims = tuple(range(p.ndim)) if reduction == "batch" else tuple(range(1, p.ndim))
  inter = (p * t).sum(dims)
  union = p.sum(dims) + t.sum(dims) - inter
  return 1.0 - ((inter + smooth) / (union + smooth)).mean()
