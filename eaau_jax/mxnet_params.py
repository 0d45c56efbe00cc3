"""MXNet ``.params`` files without MXNet: a reader, and an importer into Flax variables.

The format is MXNet's NDArray-list serialisation (``mx.nd.save`` / Gluon ``save_parameters``;
``src/ndarray/ndarray.cc``, ``NDArray::Save`` and ``MXNDArraySave``), little-endian:

  uint64 0x112 (list magic), uint64 0 (reserved), uint64 count, then per array:
    uint32 magic 0xF993FAC9 (V2) or 0xF993FACA (V3, NumPy shape semantics)
    int32  storage type (0 = dense; sparse arrays are refused)
    shape: V2: uint32 ndim, V3: int32 ndim; then int64 dims[ndim] (ndim 0 in V2, -1 in V3: an empty
           array, nothing further follows)
    int32  dev_type, int32 dev_id (the context it was saved from; ignored)
    int32  dtype flag (mshadow: 0 f32, 1 f64, 2 f16, 3 u8, 4 i32, 5 i8, 6 i64, 7 bool)
    raw data, prod(dims) * itemsize bytes
  then uint64 count and per name uint64 length + UTF-8 bytes.

Gluon's ``save_parameters`` names every array by its attribute path ("layer1.0.body.0.weight").
``import_into`` maps those names onto a Flax variables tree whose module path, joined with ".", is
that attribute path (the baselines in ``eaau_jax.baselines`` are named so): Conv ``weight``/``bias``
-> ``kernel``/``bias``; BatchNorm ``gamma``/``beta`` -> ``scale``/``bias`` and ``running_mean``/
``running_var`` -> batch_stats ``mean``/``var``. Every name in the file must be used exactly once
and every Flax leaf filled; the first name that does not fit is named in the error.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from eaau_jax.errors import CheckpointError

LIST_MAGIC = 0x112
ARRAY_MAGIC_V2 = 0xF993FAC9
ARRAY_MAGIC_V3 = 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8,
          6: np.int64, 7: np.bool_}


class ParamsFormatError(CheckpointError):
  """A malformed .params file; the message names the file and the byte offset."""


class ImportMismatch(CheckpointError):
  """The arrays do not fit the Flax variables; the message names the first offending name."""


class _Cursor:
  """Little-endian reads over a bytes buffer that fail with the file name and offset."""

  def __init__(self, data: bytes, path: str):
    self.data, self.path, self.pos = data, path, 0

  def fail(self, what: str, pos: Optional[int] = None):
    raise ParamsFormatError(f"{self.path}: offset {self.pos if pos is None else pos}: {what}")

  def take(self, n: int, what: str) -> bytes:
    if n < 0 or self.pos + n > len(self.data):
      self.fail(f"truncated file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def unpack(self, fmt: str, what: str):
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _read_array(cur: _Cursor, index: int) -> np.ndarray:
  """One NDArray record (``NDArray::Save``, V2/V3 dense)."""
  start = cur.pos
  (magic,) = cur.unpack("I", f"array {index} magic")
  if magic not in (ARRAY_MAGIC_V2, ARRAY_MAGIC_V3):
    cur.fail(f"array {index}: bad magic 0x{magic:08X} (expected 0x{ARRAY_MAGIC_V2:08X} or "
             f"0x{ARRAY_MAGIC_V3:08X}; legacy V1 files are not supported)", start)
  (stype,) = cur.unpack("i", f"array {index} storage type")
  if stype != 0:
    cur.fail(f"array {index}: storage type {stype} is not dense (0); sparse arrays unsupported",
             cur.pos - 4)
  (ndim,) = cur.unpack("I" if magic == ARRAY_MAGIC_V2 else "i", f"array {index} ndim")
  if ndim == 0 or (magic == ARRAY_MAGIC_V3 and ndim == -1):
    return np.zeros((0,), np.float32)  # a "none" array: nothing else is written
  if not 0 < ndim <= 32:
    cur.fail(f"array {index}: implausible ndim {ndim}", cur.pos - 4)
  shape = cur.unpack(f"{ndim}q", f"array {index} shape")
  if any(d < 0 for d in shape):
    cur.fail(f"array {index}: negative dimension in shape {shape}", cur.pos - 8 * ndim)
  cur.unpack("ii", f"array {index} context")
  (flag,) = cur.unpack("i", f"array {index} dtype flag")
  if flag not in DTYPES:
    cur.fail(f"array {index}: unknown dtype flag {flag} (known: {sorted(DTYPES)})", cur.pos - 4)
  dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
  raw = cur.take(int(np.prod(shape)) * dtype.itemsize, f"array {index} data {shape}")
  return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_params(path) -> dict[str, np.ndarray]:
  """All arrays of an MXNet ``.params`` file, by name, in file order.

  Raises ``ParamsFormatError`` naming the file and byte offset on any malformation (wrong magic,
  truncation, unknown dtype, sparse storage, duplicate or missing names, trailing bytes).
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    cur = _Cursor(f.read(), path)
  magic, _reserved = cur.unpack("QQ", "header")
  if magic != LIST_MAGIC:
    cur.fail(f"not an MXNet NDArray list: magic 0x{magic:X}, expected 0x{LIST_MAGIC:X}", 0)
  (count,) = cur.unpack("Q", "array count")
  if count > len(cur.data):
    cur.fail(f"implausible array count {count}", 16)
  arrays = [_read_array(cur, i) for i in range(count)]
  names_at = cur.pos
  (n_names,) = cur.unpack("Q", "name count")
  if n_names != count:
    cur.fail(f"{n_names} names for {count} arrays", names_at)
  out: dict[str, np.ndarray] = {}
  for i, arr in enumerate(arrays):
    (length,) = cur.unpack("Q", f"name {i} length")
    at = cur.pos
    try:
      name = cur.take(length, f"name {i}").decode("utf-8")
    except UnicodeDecodeError:
      cur.fail(f"name {i} is not UTF-8", at)
    if name in out:
      cur.fail(f"duplicate name {name!r}", at)
    out[name] = arr
  if cur.pos != len(cur.data):
    cur.fail(f"{len(cur.data) - cur.pos} trailing bytes after the names")
  return out


def write_params(path, arrays: Mapping[str, np.ndarray]) -> None:
  """Write ``arrays`` in the format ``read_params`` reads (V2, dense, cpu context); for tests."""
  flags = {np.dtype(v): k for k, v in DTYPES.items()}
  parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
  for a in arrays.values():
    a = np.ascontiguousarray(a)
    parts.append(struct.pack(f"<IiI{a.ndim}q", ARRAY_MAGIC_V2, 0, a.ndim, *a.shape))
    parts.append(struct.pack("<iii", 1, 0, flags[a.dtype]))
    parts.append(a.astype(a.dtype.newbyteorder("<")).tobytes())
  parts.append(struct.pack("<Q", len(arrays)))
  for name in arrays:
    b = name.encode("utf-8")
    parts.append(struct.pack("<Q", len(b)) + b)
  with open(path, "wb") as f:
    f.write(b"".join(parts))


# ---------------------------------------------------------------- import into Flax variables

def conv_kernel(w: np.ndarray) -> np.ndarray:
  """MXNet/PyTorch Conv2D weight (out, in, kH, kW) -> Flax nn.Conv kernel (kH, kW, in, out)."""
  return np.transpose(w, (2, 3, 1, 0))


def deconv_kernel(w: np.ndarray) -> np.ndarray:
  """MXNet/PyTorch Conv2DTranspose weight (in, out, kH, kW) -> Flax nn.ConvTranspose kernel.

  Flax's ConvTranspose (``transpose_kernel=False``) is a dilated *correlation* with a (kH, kW, in,
  out) kernel; the scatter definition of MXNet/PyTorch equals it with the kernel flipped in space
  (tested numerically against a NumPy scatter reference in tests/test_mxnet_params.py).
  """
  return np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1))


# Flax leaf -> MXNet suffix, by module kind. A module with a "kernel" is a (transposed) conv.
_CONV_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias"}
_BN_LEAVES = {("params", "scale"): "gamma", ("params", "bias"): "beta",
              ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _flat(tree: Mapping, prefix=()) -> Iterable[tuple[tuple[str, ...], Any]]:
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flat(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def mxnet_names(variables: Mapping, transposed: Iterable[str] = ()) -> dict[str, tuple]:
  """MXNet name -> (collection, Flax path, converter) for every leaf of ``variables``.

  The module path joined with "." is the MXNet attribute path; ``transposed`` lists the module
  paths (MXNet prefixes) that are Conv2DTranspose layers, whose weights are flipped.
  """
  leaves = {(c,) + p: v for c in ("params", "batch_stats") for p, v in _flat(variables.get(c, {}))}
  modules: dict[tuple, set] = {}
  for full in leaves:
    modules.setdefault(full[1:-1], set()).add((full[0], full[-1]))
  transposed = set(transposed)
  out: dict[str, tuple] = {}
  for mod, kinds in modules.items():
    prefix = ".".join(mod)
    is_conv = ("params", "kernel") in kinds
    table = _CONV_LEAVES if is_conv else _BN_LEAVES
    for coll, leaf in sorted(kinds):
      if (coll, leaf) not in table:
        raise ImportMismatch(f"Flax leaf {coll}/{prefix}/{leaf} has no MXNet counterpart")
      convert = np.asarray
      if leaf == "kernel":
        convert = deconv_kernel if prefix in transposed else conv_kernel
      name = f"{prefix}.{table[coll, leaf]}"
      if name in out:
        raise ImportMismatch(f"two Flax leaves map to the MXNet name {name!r}")
      out[name] = (coll, mod + (leaf,), convert)
  unknown = transposed - {".".join(m) for m in modules}
  if unknown:
    raise ImportMismatch(f"transposed layer {sorted(unknown)[0]!r} is not a module of the model")
  return out


def _describe(a: np.ndarray) -> str:
  return f"shape {tuple(a.shape)}"


def import_into(variables: Mapping, arrays: Mapping[str, np.ndarray], *,
                transposed: Iterable[str] = (), fixed: Optional[Mapping[str, float]] = None,
                source: str = "arrays") -> dict:
  """``variables`` (a Flax template: ``params`` + ``batch_stats``) filled from MXNet ``arrays``.

  Args:
    variables: the model's variables (e.g. from ``model.init``); only their tree and shapes count.
    arrays: MXNet name -> array, e.g. ``read_params(path)``.
    transposed: module paths ("deconv2") that are Conv2DTranspose layers.
    fixed: MXNet names the Flax model has no variable for because the released layer treats them
      as constants: name -> the value every element must have (e.g. the input BatchNorm built with
      ``scale=False, center=False``: its gamma is ignored by MXNet, fix_gamma, and its beta never
      leaves 0). They are checked, then dropped.
    source: how to name the arrays' origin in errors (the file path).

  Every name of ``arrays`` must be used exactly once and every leaf of ``variables`` filled;
  otherwise ``ImportMismatch`` names the first offending name (in file order, then in the model's
  order for missing ones). Returns a new plain dict with the template's dtypes.
  """
  expected = mxnet_names(variables, transposed)
  fixed = dict(fixed or {})
  flat = {(c,) + p: v for c in ("params", "batch_stats") for p, v in _flat(variables.get(c, {}))}
  filled: dict[tuple, np.ndarray] = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    if name in fixed:
      want = fixed.pop(name)
      if not np.all(value == want):
        raise ImportMismatch(f"{source}: {name!r} should be constant {want} (a fixed parameter "
                             f"of the released layer), got {value.ravel()[:4]}")
      continue
    if name not in expected:
      raise ImportMismatch(f"{source}: {name!r} ({_describe(value)}) has no place in the model "
                           f"(first unused name; the model's names start "
                           f"{sorted(expected)[:3]} ...)")
    coll, path, convert = expected.pop(name)
    target = flat[(coll,) + path]
    converted = convert(value)
    if converted.shape != tuple(target.shape):
      raise ImportMismatch(f"{source}: {name!r} has {_describe(value)} -> {converted.shape} "
                           f"for {coll}/{'/'.join(path)} of shape {tuple(target.shape)}")
    filled[(coll,) + path] = np.ascontiguousarray(converted, dtype=target.dtype)
  if expected:
    raise ImportMismatch(f"{source}: missing {next(iter(expected))!r} (and {len(expected) - 1} "
                         f"more names the model needs)")
  if fixed:
    raise ImportMismatch(f"{source}: missing {next(iter(fixed))!r} (a fixed parameter)")
  out: dict = {}
  for full, value in filled.items():
    node = out
    for k in full[:-1]:
      node = node.setdefault(k, {})
    node[full[-1]] = value
  return out
