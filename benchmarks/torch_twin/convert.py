"""Flax EAAUNet variables (``params`` + ``batch_stats``) -> the PyTorch twin's state_dict.

A Flax path ``fuse2/baa/Conv_0/kernel`` is the twin's ``fuse2.baa.Conv_0.weight``; the value
changes layout by the kind of the twin's module there:
  Conv2d           kernel (kh, kw, in, out) HWIO -> weight (out, in, kh, kw) OIHW
  ConvTranspose2d  kernel (4, 4, in, out), as TransposedConvUpsample and nn.ConvTranspose store it
                   -> weight (in, out, 4, 4), spatially flipped: Flax's transposed conv applies its
                   kernel unflipped on the dilated input, PyTorch's (a conv's gradient) flipped
  SubPixelUpsample's conv: output channels (row, col, F) -> (F, row, col), nn.PixelShuffle's order
  BatchNorm2d      scale/bias/mean/var -> weight/bias/running_mean/running_var
The same mapping turns a gradient tree (the shape of ``params``) into the twin's layout.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from benchmarks.torch_twin import model as twin

LEAF_NAMES = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}


def flatten(tree: Mapping, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def kernel_to_torch(kernel: np.ndarray, module: nn.Module, parent: nn.Module) -> np.ndarray:
  if isinstance(module, nn.ConvTranspose2d):
    return kernel[::-1, ::-1].transpose(2, 3, 0, 1)
  weight = kernel.transpose(3, 2, 0, 1)
  if isinstance(parent, twin.SubPixelUpsample):
    out, cin, kh, kw = weight.shape
    weight = weight.reshape(4, out // 4, cin, kh, kw).transpose(1, 0, 2, 3, 4)
    weight = weight.reshape(out, cin, kh, kw)
  return weight


def to_torch(tree: Mapping, model: nn.Module) -> dict[str, torch.Tensor]:
  """One collection (params, batch_stats, or gradients of params) as state_dict entries."""
  modules = dict(model.named_modules())
  out = {}
  for keys, value in flatten(tree):
    *path, leaf = keys
    name = ".".join(path)
    if name not in modules:
      raise KeyError(f"the twin has no module {name!r} (Flax path {'/'.join(keys)})")
    value = np.array(value)  # a copy (jax arrays are read-only); float32 or float64 as given
    if leaf == "kernel":
      value = kernel_to_torch(value, modules[name], modules[".".join(path[:-1])])
    out[f"{name}.{LEAF_NAMES.get(leaf, leaf)}"] = torch.from_numpy(np.ascontiguousarray(value))
  return out


def load_flax(model: nn.Module, variables: Mapping) -> nn.Module:
  """Loads ``variables`` into ``model``; every entry of either side must find its match."""
  state = {}
  for collection in ("params", "batch_stats"):
    state.update(to_torch(variables.get(collection, {}), model))
  expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
  if missing or extra:
    raise ValueError(f"Flax -> twin: missing {missing}, unexpected {extra}")
  for key, value in state.items():
    if tuple(value.shape) != tuple(expected[key].shape):
      raise ValueError(f"{key}: Flax gives {tuple(value.shape)}, the twin has "
                       f"{tuple(expected[key].shape)}")
  model.load_state_dict(state, strict=False)
  return model


def twin_of(flax_model, variables: Mapping) -> twin.EAAUNet:
  """The twin of a Flax ``models.EAAUNet`` (same fields), with ``variables`` loaded."""
  in_channels = int(np.shape(variables["params"]["stem"]["kernel"])[2])
  model = twin.EAAUNet(in_channels, tuple(flax_model.widths), flax_model.blocks, flax_model.fusion,
                       flax_model.sa_groups, flax_model.reduction, flax_model.upsampling,
                       flax_model.head_dropout)
  return load_flax(model, variables)
