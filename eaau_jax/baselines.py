"""CNN baselines of EAAU-Net's Table 3, layer for layer as their authors' released MXNet/Gluon code.

Sources (fetched snapshots of the public repositories):
  * ACM (Dai et al., WACV 2021), github.com/YimianDai/open-acm: ``model/segmentation.py``
    (``ASKCResUNet``, ``ASKCResNetFPN``), ``model/fusion.py`` (``AsymBiChaFuse[Reduce]``,
    ``DirectAddFuse[Reduce]`` and the ablation fusions), ``train_dentist.py`` (channels
    ``[8, 16, 32, 64]``, ``layers = [blocks] * 3``).
  * ALCNet (Dai et al., TGRS 2021), github.com/YimianDai/open-alcnet: ``model/contrast.py``
    (``MPCMResNetFPN``, ``cal_pcm``/``circ_shift``, ``BottomUpLocal_FPNFuse`` ...).
  * GluonCV 0.x: ``CIFARBasicBlockV1`` (conv3x3-BN-ReLU-conv3x3-BN, ReLU(x + y), 1x1 conv + BN
    shortcut) and ``_FCNHead`` (3x3 conv C -> C/4 no bias, BN, ReLU, Dropout(0.1), 1x1 conv with
    bias).
  * Gluon defaults: BatchNorm momentum 0.9 (Flax's convention is the same number), epsilon 1e-5;
    Conv2D has a bias unless ``use_bias=False``; ``contrib.BilinearResize2D`` aligns corners.

Inputs are NHWC; the released nets were trained on ``convert('RGB')`` images / 255 normalised with
the ImageNet mean/std (``IMAGENET_MEAN``/``IMAGENET_STD``, see ``imagenet_normalize``), and begin
with a BatchNorm on the input (``stem.0``). Every module maps (N, H, W, C) -> (N, H, W, 1) logits.

Flax module paths are the Gluon attribute paths ("layer1" / "0" / "body.0" -> "layer1.0.body.0"), so
``eaau_jax.mxnet_params.import_into`` maps the released ``.params`` names systematically; each
model's ``mxnet_layout()`` says which layers are transposed convs and which names are constants.

Padding (``valid``): every ``__call__`` takes the ``valid`` mask that ``train.predict_logits``
passes, and ignores it. These nets cannot be made independent of a padded batch by masking: the FPN
and ALCNet resize with aligned corners (the sampling grid depends on the map's size), ALCNet's
contrast shifts cyclically by the map's size, and AsymBi pools globally. So native evaluation is
made exact the other way: the baseline configs (configs/acm_unet.py ...) set
``eval_pad_multiple = 1``, so an evaluation batch only ever holds images of one exact size and
nothing is padded (one compile per distinct size); under ``acm`` every image is base x base and
unpadded anyway.

Deviations, all no-ops at the sizes the released nets ran at (multiples of 4, or 16 for non-tiny):
  * a decoder feature larger than its skip (odd sizes) is cropped to the skip (bottom/right);
  * resizes go to the skip's actual size, not ``hei // k`` (which differs from it for odd sizes).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eaau_jax.errors import CheckpointError
from eaau_jax.models import BN_EPSILON, BN_MOMENTUM, TransposedConvUpsample, conv_init
from eaau_jax.xla_options import fusion_boundary

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The input BatchNorm is built with scale=False, center=False: MXNet ignores its gamma (fix_gamma)
# and its beta is never trained, so the Flax layer has neither; the importer checks their values.
STEM_FIXED = {"stem.0.gamma": 1.0, "stem.0.beta": 0.0}


def imagenet_normalize(image_u8: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., H, W, 3) -> float32, as the released nets' ``ToTensor`` + ``Normalize``."""
  x = np.asarray(image_u8, np.float32) / 255.0
  return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


# ---------------------------------------------------------------- small layers

def conv(features: int, kernel: int, name: str, strides: int = 1, use_bias: bool = True,
         dilation: int = 1) -> nn.Conv:
  """Gluon Conv2D with padding = dilation * (kernel // 2) (every conv of these nets)."""
  return nn.Conv(features, (kernel, kernel), strides=strides, padding=dilation * (kernel // 2),
                 kernel_dilation=dilation, use_bias=use_bias, kernel_init=conv_init, name=name)


def bn(train: bool, name: str, affine: bool = True):
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      use_scale=affine, use_bias=affine, name=name)


def resize_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """MXNet ``contrib.BilinearResize2D(x, height, width)``: bilinear with aligned corners.

  src = dst * (in - 1) / (out - 1); separable, as two small interpolation matrices.
  """
  def matrix(n_in, n_out):
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.float32(scale) * np.arange(n_out, dtype=np.float32)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return jnp.asarray(m)

  (h, w), (oh, ow) = x.shape[1:3], size
  if (h, w) == (oh, ow):
    return x
  x = jnp.einsum("oh,nhwc->nowc", matrix(h, oh), x)
  return jnp.einsum("pw,nowc->nopc", matrix(w, ow), x)


def crop_to(x: jax.Array, ref: jax.Array) -> jax.Array:
  """x cut to ref's spatial size (a 2x upsampling of an odd-sized map is one pixel too big)."""
  return x[:, :ref.shape[1], :ref.shape[2]]


class BasicBlock(nn.Module):
  """GluonCV ``CIFARBasicBlockV1``: names ``body.{0,1,3,4}`` and ``downsample.{0,1}``."""
  channels: int
  strides: int = 1
  downsample: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    y = conv(self.channels, 3, "body.0", self.strides, use_bias=False)(x)
    y = nn.relu(bn(train, "body.1")(y))
    y = conv(self.channels, 3, "body.3", use_bias=False)(y)
    y = bn(train, "body.4")(y)
    if self.downsample:
      x = conv(self.channels, 1, "downsample.0", self.strides, use_bias=False)(x)
      x = bn(train, "downsample.1")(x)
    # As models.ResidualBlock: without the boundary XLA's CPU fusion recomputes every earlier
    # block's output of the stage in each consumer of this one (xla_options.fusion_boundary).
    return fusion_boundary(nn.relu(x + y))


class ResStage(nn.Module):
  """ACM's ``_make_layer``: blocks "0".."n-1"; the first has the stride and, when the declared
  ``in_channels`` or the stride differ from the stage's, the 1x1 shortcut."""
  blocks: int
  channels: int
  strides: int
  in_channels: int

  @nn.compact
  def __call__(self, x, train: bool):
    downsample = self.channels != self.in_channels or self.strides != 1
    for i in range(self.blocks):
      x = BasicBlock(self.channels, self.strides if i == 0 else 1, downsample and i == 0,
                     name=str(i))(x, train)
    return x


class FCNHead(nn.Module):
  """GluonCV ``_FCNHead``: ``block.0`` 3x3 conv C -> C//4 (no bias), ``block.1`` BN, ReLU,
  Dropout (rng "dropout"), ``block.4`` 1x1 conv -> classes with bias."""
  classes: int = 1
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool):
    y = conv(x.shape[-1] // 4, 3, "block.0", use_bias=False)(x)
    y = nn.relu(bn(train, "block.1")(y))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return conv(self.classes, 1, "block.4")(y)


def stem(x, train: bool, stem_width: int, tiny: bool):
  """ACM's ``self.stem`` (names "stem.i" at the top level): input BN without affine, then
  tiny: 3x3 conv -> 2w (stride 1), BN, ReLU;  else: 3x3/2 conv -> w, BN, ReLU, 3x3 conv -> w, BN,
  ReLU, 3x3 conv -> 2w, BN, ReLU, 3x3/2 max-pool (pad 1)."""
  x = bn(train, "stem.0", affine=False)(x)
  if tiny:
    widths, strides = [2 * stem_width], [1]
  else:
    widths, strides = [stem_width, stem_width, 2 * stem_width], [2, 1, 1]
  for j, (width, s) in enumerate(zip(widths, strides)):
    x = conv(width, 3, f"stem.{3 * j + 1}", s, use_bias=False)(x)
    x = nn.relu(bn(train, f"stem.{3 * j + 2}")(x))
  if not tiny:
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
  return x


# ---------------------------------------------------------------- ACM's cross-layer fusions

def gate(x, train: bool, prefix: str, inter: int, out: int, pool: bool):
  """[GAP ->] 1x1 conv (bias) -> BN -> ReLU -> 1x1 conv (bias) -> BN -> sigmoid, as a Gluon
  HybridSequential named ``prefix``: the GlobalAvgPool2D takes index 0 when present."""
  o = int(pool)
  if pool:
    x = x.mean(axis=(1, 2), keepdims=True)
  x = conv(inter, 1, f"{prefix}.{o}")(x)
  x = nn.relu(bn(train, f"{prefix}.{o + 1}")(x))
  x = conv(out, 1, f"{prefix}.{o + 3}")(x)
  return nn.sigmoid(bn(train, f"{prefix}.{o + 4}")(x))


# fuse_mode -> (top-down gate pooled?, bottom-up gate pooled?) of the bi-directional modulations.
BI_MODES = {"AsymBi": (True, False), "BiGlobal": (True, True), "BiLocal": (False, False)}
FUSE_MODES = tuple(BI_MODES) + ("DirectAdd", "Concat", "TopDownGlobal", "TopDownLocal")


class ACMFuse(nn.Module):
  """ACM's ``<mode>ChaFuse`` / ``<mode>Fuse`` (``fusion.py``) of xh (high level, upsampled) and xl.

  reduce=True is the ``...Reduce`` variant of the FPN: ``feature_high`` (1x1 conv with bias, BN,
  ReLU) first maps xh to ``channels``. Then, by ``mode``:
    AsymBi/BiGlobal/BiLocal: td = gate(xh), bu = gate(xl) (r = 4), xs = 2 xl td + 2 xh bu
      (AsymBi: td pooled, bu per pixel; BiGlobal: both pooled; BiLocal: neither);
    DirectAdd: xs = xh + xl;  Concat: xs = [xh, xl];
    TopDownGlobal/Local: xs = xh + xl * sigmoid(BN(conv1x1([GAP] xh)))  (``global_att``);
  and out = ``post``: 3x3 conv (bias) -> BN -> ReLU of xs.
  """
  channels: int
  mode: str = "AsymBi"
  reduce: bool = False
  r: int = 4

  @nn.compact
  def __call__(self, xh, xl, train: bool):
    c = self.channels
    if self.reduce:
      xh = nn.relu(bn(train, "feature_high.1")(conv(c, 1, "feature_high.0")(xh)))
    if self.mode in BI_MODES:
      td_pool, bu_pool = BI_MODES[self.mode]
      td = gate(xh, train, "topdown", c // self.r, c, td_pool)
      bu = gate(xl, train, "bottomup", c // self.r, c, bu_pool)
      xs = 2 * xl * td + 2 * xh * bu
    elif self.mode == "DirectAdd":
      xs = xh + xl
    elif self.mode == "Concat":
      xs = jnp.concatenate([xh, xl], axis=-1)
    elif self.mode in ("TopDownGlobal", "TopDownLocal"):
      pool = self.mode == "TopDownGlobal"
      a = xh.mean(axis=(1, 2), keepdims=True) if pool else xh
      a = bn(train, f"global_att.{int(pool) + 1}")(conv(c, 1, f"global_att.{int(pool)}")(a))
      xs = xh + xl * nn.sigmoid(a)
    else:
      raise ValueError(f"fuse_mode {self.mode!r}: expected one of {', '.join(FUSE_MODES)}")
    return nn.relu(bn(train, "post.1")(conv(c, 3, "post.0")(xs)))


# ---------------------------------------------------------------- ACM-U-Net / ACM-FPN

class _ACMBase(nn.Module):
  """Fields shared by ACM's two nets (``train_dentist.py``: layers = [blocks] * 3, channels =
  [8, 16, 32, 64] * channel_times; the released ACM-U-Net: blocks 4, tiny, AsymBi)."""
  layers: Sequence[int] = (4, 4, 4)
  channels: Sequence[int] = (8, 16, 32, 64)
  fuse_mode: str = "AsymBi"
  tiny: bool = True
  classes: int = 1
  dropout: float = 0.1

  def mxnet_layout(self) -> dict:
    """Keyword arguments of ``mxnet_params.import_into`` for the released weights of this net."""
    return {"transposed": (), "fixed": dict(STEM_FIXED)}

  def stage(self, i: int, name: str, strides: int, in_channels: int) -> ResStage:
    return ResStage(self.layers[i], self.channels[i + 1], strides, in_channels, name=name)

  def encoder(self, x, train: bool):
    x = stem(x, train, self.channels[0], self.tiny)
    c1 = self.stage(0, "layer1", 1, self.channels[1])(x, train)
    c2 = self.stage(1, "layer2", 2, self.channels[1])(c1, train)
    c3 = self.stage(2, "layer3", 2, self.channels[2])(c2, train)
    return c1, c2, c3

  def finish(self, out, size, train: bool):
    pred = FCNHead(self.classes, self.dropout, name="head")(out, train)
    return pred if self.tiny else resize_align_corners(pred, size)


class ACMUNet(_ACMBase):
  """ACM's ``ASKCResUNet``: encoder stem -> layer1 (c1) -> layer2 (c2, /2) -> layer3 (c3, /4);
  decoder ``deconv2`` (4x4/2 transposed conv, pad 1, bias) -> ``fuse2``(., c2) -> ``uplayer2``
  -> ``deconv1`` -> ``fuse1``(., c1) -> ``uplayer1`` -> FCN ``head`` [-> bilinear to input size
  when not tiny]. ``fuse_mode="DirectAdd"`` is the plain U-Net (registry "unet").
  The released weights (tiny, 4 blocks, AsymBi) give IoU 9881 / 13289 = 0.7435 on SIRST idx_320
  test under the acm protocol, as the MXNet net (tests/test_compare.py, through main.py)."""

  def mxnet_layout(self) -> dict:
    return {"transposed": ("deconv2", "deconv1"), "fixed": dict(STEM_FIXED)}

  @staticmethod
  def deconv_layer(features: int, name: str) -> nn.Module:
    """MXNet Conv2DTranspose(k=4, s=2, p=1, bias) == nn.ConvTranspose padded 2 per side (for this
    kernel and stride, "SAME") with the spatially flipped kernel; the flip is done by the importer
    (mxnet_params.deconv_kernel). Computed as EAAU-Net's upsampling is, by a convolution to the
    four output phases + depth-to-space: nn.ConvTranspose's parameters; XLA's transposed conv
    made the whole net 1.20x slower in inference at 512², 1.42x in training at 256² (2-core AVX2
    CPU, BENCHMARKS.md)."""
    return TransposedConvUpsample(features, use_bias=True, name=name)

  def fuse(self, channels: int, name: str) -> ACMFuse:
    return ACMFuse(channels, self.fuse_mode, False, name=name)

  @nn.compact
  def __call__(self, x, train: bool = False, valid=None):
    del valid  # unpadded inputs only (module docstring)
    size, ch = x.shape[1:3], self.channels
    c1, c2, c3 = self.encoder(x, train)
    up = crop_to(self.deconv_layer(ch[2], "deconv2")(c3), c2)
    up = self.fuse(ch[2], "fuse2")(up, c2, train)
    up = self.stage(1, "uplayer2", 1, ch[2])(up, train)
    up = crop_to(self.deconv_layer(ch[1], "deconv1")(up), c1)
    up = self.fuse(ch[1], "fuse1")(up, c1, train)
    up = self.stage(0, "uplayer1", 1, ch[1])(up, train)
    return self.finish(up, size, train)


class ACMFPN(_ACMBase):
  """ACM's ``ASKCResNetFPN``: the same encoder (+ ``layer4`` when 4 stages are given), then
  bilinear (aligned corners) upsampling of the deeper map to the skip's size and a ``...Reduce``
  fusion: [``fuse34``(c4, c3) ->] ``fuse23``(., c2) -> ``fuse12``(., c1) -> FCN ``head``.
  ``fuse_mode="DirectAdd"`` is the plain FPN (registry "fpn")."""

  @nn.compact
  def __call__(self, x, train: bool = False, valid=None):
    del valid  # unpadded inputs only (module docstring)
    size, ch = x.shape[1:3], self.channels
    c1, c2, out = self.encoder(x, train)
    if len(self.layers) == 4:
      c4 = self.stage(3, "layer4", 2, ch[3])(out, train)
      c4 = resize_align_corners(c4, out.shape[1:3])
      out = ACMFuse(ch[3], self.fuse_mode, True, name="fuse34")(c4, out, train)
    out = resize_align_corners(out, c2.shape[1:3])
    out = ACMFuse(ch[2], self.fuse_mode, True, name="fuse23")(out, c2, train)
    out = resize_align_corners(out, c1.shape[1:3])
    out = ACMFuse(ch[1], self.fuse_mode, True, name="fuse12")(out, c1, train)
    return self.finish(out, size, train)


class UNet(ACMUNet):
  """ACM-U-Net's backbone with additive fusion (``DirectAddFuse``): the plain U-Net baseline."""
  fuse_mode: str = "DirectAdd"


class FPN(ACMFPN):
  """ACM-FPN's backbone with additive fusion (``DirectAddFuseReduce``): the plain FPN baseline."""
  fuse_mode: str = "DirectAdd"


# ---------------------------------------------------------------- ALCNet

def _cycle(x, rows: int, cols: int):
  """``concat(x[s:], x[:s])`` along H by ``rows`` and along W by ``cols``, NumPy slice semantics
  (what ALCNet's ``circ_shift`` slices do, also when a shift exceeds the map)."""
  if rows:
    x = jnp.concatenate([x[:, rows:], x[:, :rows]], axis=1)
  if cols:
    x = jnp.concatenate([x[:, :, cols:], x[:, :, :cols]], axis=2)
  return x


def cal_pcm(cen: jax.Array, shift: int) -> jax.Array:
  """ALCNet's ``cal_pcm``: min over the 4 directions d of (B_d - cen) * (B_{d+4} - cen), where
  B_1..B_8 are ``circ_shift``'s 8 cyclic shifts of ``cen`` by ``shift`` (NHWC here)."""
  h, w, s = cen.shape[1], cen.shape[2], shift
  pairs = [((s, s), (h - s, w - s)),   # B1 / B5: the two diagonal neighbours
           ((s, 0), (h - s, 0)),       # B2 / B6: vertical
           ((s, w - s), (h - s, s)),   # B3 / B7: anti-diagonal
           ((0, w - s), (0, s))]       # B4 / B8: horizontal
  out = None
  for a, b in pairs:
    d = (_cycle(cen, *a) - cen) * (_cycle(cen, *b) - cen)
    out = d if out is None else jnp.minimum(out, d)
  return out


PYRAMID_FUSES = ("bottomuplocal", "bottomupglobal", "topdownlocal", "asymbi", "add", "max")


class ALCFuse(nn.Module):
  """ALCNet's ``<mode>_FPNFuse`` of x (upsampled deeper map) and residual (this level):
  ``bn1``(x), ``bn2``(residual), then
    bottomuplocal:  x * gate(residual) + residual   (gate per pixel, inner width C // 1)
    bottomupglobal: the same with a pooled gate;
    topdownlocal:   x + gate(x) * residual;
    asymbi:         pooled gate(x) * residual + per-pixel gate(residual) * x (inner C // 2)."""
  channels: int
  mode: str = "bottomuplocal"

  @nn.compact
  def __call__(self, x, residual, train: bool):
    c = self.channels
    x, residual = bn(train, "bn1")(x), bn(train, "bn2")(residual)
    if self.mode in ("bottomuplocal", "bottomupglobal"):
      wei = gate(residual, train, "bottomup_att", c, c, self.mode == "bottomupglobal")
      return wei * x + residual
    if self.mode == "topdownlocal":
      return x + gate(x, train, "topdown_att", c, c, False) * residual
    if self.mode == "asymbi":
      td = gate(x, train, "topdown_att", c // 2, c, True)
      return td * residual + gate(residual, train, "bottomup_att", c // 2, c, False) * x
    raise ValueError(f"pyramid_fuse {self.mode!r}: expected one of {', '.join(PYRAMID_FUSES)}")


class ALCNet(nn.Module):
  """ALCNet's ``MPCMResNetFPN`` (pyramid_mode "Dec"): tiny stem, layer1..3 (c1..c3 at /1, /2, /4),
  local contrast of each level (``scale_mode`` "Multiple": max of ``cal_pcm`` at shifts 13 and 17,
  ``cal_mpcm``; "Single": ``cal_pcm`` at ``shift``), ``dec_c3``/``dec_c2`` (1x1 conv no bias -> C1,
  BN, ReLU), bilinear (aligned corners) upsampling and bottom-up fusion into c1's contrast map
  (``<pyramid_fuse>_fpn_2`` then ``_fpn_1``; "add"/"max" have no weights), FCN ``head``.
  The released ``BottomUpLocal_r_1_b_4`` weights: blocks 4, pyramid_fuse "bottomuplocal", scale_mode
  "Multiple" (with it, and not with "Single", our outputs equal the predictions open-alcnet ships in
  ``results/pred`` pixel for pixel)."""
  layers: Sequence[int] = (4, 4, 4)
  channels: Sequence[int] = (8, 16, 32, 64)
  scale_mode: str = "Multiple"
  shift: int = 13
  pyramid_fuse: str = "bottomuplocal"
  classes: int = 1
  dropout: float = 0.1

  def mxnet_layout(self) -> dict:
    return {"transposed": (), "fixed": dict(STEM_FIXED)}

  def contrast(self, x):
    if self.scale_mode == "Multiple":
      return jnp.maximum(cal_pcm(x, 13), cal_pcm(x, 17))
    if self.scale_mode == "Single":
      return cal_pcm(x, self.shift)
    raise ValueError(f"scale_mode {self.scale_mode!r}: expected 'Multiple' or 'Single'")

  def fuse(self, x, residual, level: int, train: bool):
    if self.pyramid_fuse == "add":
      return x + residual
    if self.pyramid_fuse == "max":
      return jnp.maximum(x, residual)
    return ALCFuse(self.channels[1], self.pyramid_fuse,
                   name=f"{self.pyramid_fuse}_fpn_{level}")(x, residual, train)

  def dec(self, x, name: str, train: bool):
    x = conv(self.channels[1], 1, f"{name}.0", use_bias=False)(x)
    return nn.relu(bn(train, f"{name}.1")(x))

  @nn.compact
  def __call__(self, x, train: bool = False, valid=None):
    del valid  # unpadded inputs only (module docstring)
    ch = self.channels
    x = stem(x, train, ch[0], True)
    c1 = ResStage(self.layers[0], ch[1], 1, ch[1], name="layer1")(x, train)
    c2 = ResStage(self.layers[1], ch[2], 2, ch[1], name="layer2")(c1, train)
    c3 = ResStage(self.layers[2], ch[3], 2, ch[2], name="layer3")(c2, train)
    c3pcm = resize_align_corners(self.dec(self.contrast(c3), "dec_c3", train), c2.shape[1:3])
    c2pcm = self.dec(self.contrast(c2), "dec_c2", train)
    c23 = resize_align_corners(self.fuse(c3pcm, c2pcm, 2, train), c1.shape[1:3])
    out = self.fuse(c23, self.contrast(c1), 1, train)
    return FCNHead(self.classes, self.dropout, name="head")(out, train)


BASELINES: dict[str, type[nn.Module]] = {
    "acm_unet": ACMUNet,
    "acm_fpn": ACMFPN,
    "alcnet": ALCNet,
    "unet": UNet,
    "fpn": FPN,
}


def load_released(model: nn.Module, path, input_channels: int = 3) -> dict:
  """Variables of ``model`` from an MXNet ``.params`` file of its released weights.

  The template comes from ``jax.eval_shape`` of ``model.init`` (no compute); every name of the
  file must fit (``mxnet_params.import_into`` with the model's ``mxnet_layout()``).
  """
  from eaau_jax import mxnet_params
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, input_channels), jnp.float32))
  arrays = mxnet_params.read_params(path)
  return mxnet_params.import_into(shapes, arrays, source=str(path), **model.mxnet_layout())


# ---------------------------------------------------------------- released weights as a checkpoint

def imported_state(config, path, mesh):
  """(train state, meta) of released ``.params`` weights under ``config`` (its ``model`` must be
  the released net's, its ``dataset.color`` RGB): the state ``train.create_train_state`` builds,
  with the file's params and BatchNorm statistics, and the meta ``train.py`` writes (config,
  normalisation, parameter count), so evaluation treats it like a trained run's checkpoint.

  The normalisation is always ImageNet's (x 255, per channel): the released nets' running
  statistics were gathered under it, whatever ``config.dataset.mean/std`` say.
  """
  from jax.sharding import NamedSharding, PartitionSpec
  from eaau_jax import input_pipeline, models, train  # train imports this module's registry
  color = input_pipeline.dataset_color(config.dataset)
  if color == "grey" or config.input.channels != 3:
    raise CheckpointError(f"{path}: released weights take RGB input; the config has "
                          f"config.dataset.color = {color!r}, config.input.channels = "
                          f"{config.input.channels} (expected rgb_imagenet and 3)")
  model = models.model_from_config(config.model)
  if not hasattr(model, "mxnet_layout"):
    raise CheckpointError(f"{path}: config.model.name = {config.model.name!r} has no released "
                          f"MXNet weights; expected one of {sorted(BASELINES)}")
  variables = load_released(model, path, config.input.channels)
  state = train.create_train_state(config, model, 1, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  state = state.replace(params=jax.device_put(variables["params"], replicated),
                        batch_stats=jax.device_put(variables["batch_stats"], replicated))
  meta = {"config": config.to_dict(), "mean": list(input_pipeline.IMAGENET_MEAN_U8),
          "std": list(input_pipeline.IMAGENET_STD_U8),
          "num_params": models.count_params(state.params), "imported_from": str(path),
          "normalization": "imagenet (the released weights')"}
  return state, meta


def write_imported(config, path, workdir: str) -> str:
  """Imports released weights into an orbax checkpoint ``<workdir>/checkpoints/0`` (step 0, as
  ``checkpoints.Checkpoints`` writes a trained run's), for ``--mode=eval/predict --workdir``."""
  from eaau_jax import checkpoints, input_pipeline
  state, meta = imported_state(config, path, input_pipeline.make_mesh())
  ckpt = checkpoints.Checkpoints(workdir, keep=1)
  ckpt.save(0, state, meta)
  ckpt.close()
  return ckpt.directory
