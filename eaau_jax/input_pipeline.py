"""Input pipeline: sources, ACM-protocol augmentation, per-process batches, device placement.

Sources are random-access (``len``, ``[i]`` -> dict with uint8 ``image`` (H, W, 1), {0,1} ``mask``,
``id``): ``tfds.data_source`` over the array_record build of ``tfds_sirst`` (no TensorFlow on the
read path), or the embedded synthetic dataset.

Training batches come from a grain pipeline (``TrainLoader``: a ``grain.MapDataset`` read by
grain's prefetch threads and, optionally, worker processes). Determinism: an epoch's order is a
permutation drawn from (seed, epoch); each example's augmentation from (seed, epoch, example index).
So batches are the same whatever the number of threads, worker processes, processes or devices,
and a run resumed at step s sees exactly the batches an uninterrupted run would.

Multi-host: every global batch is cut into ``process_count`` equal rows; process p reads and
augments only its rows, and ``to_global`` assembles the global array on the device mesh.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from typing import Iterator, Optional

import jax
import numpy as np
from absl import flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image, ImageFilter

from eaau_jax import imageio, synthetic
from eaau_jax.errors import ConfigError, DataError

DATA_AXIS = "data"


# ---------------------------------------------------------------- sources
class _TfdsSource:
  """tfds data source with ``id`` as str. ``headers``: the same records with the pixel features
  left undecoded, so ``image_size`` reads the stored ``size`` without decompressing the image."""

  def __init__(self, ds, headers=None):
    self._ds = ds
    self._headers = headers

  def __len__(self):
    return len(self._ds)

  def image_size(self, i: int) -> tuple[int, int]:
    if self._headers is None:  # a build without the `size` feature
      return tuple(self[i]["mask"].shape[:2])
    h, w = self._headers[i]["size"]
    return int(h), int(w)

  def __getitem__(self, i):
    ex = dict(self._ds[i])
    if isinstance(ex["id"], bytes):
      ex["id"] = ex["id"].decode()
    return ex


def tfds_builder(dataset_cfg):
  """The ``tfds_sirst`` builder a ``config.dataset`` names (``sirst``, ``sirst_v2`` or ``folder``)."""
  from tfds_sirst import sirst_dataset_builder as sb  # tfds only where a tfds dataset is used
  name = dataset_cfg.name
  if name == "folder" and dataset_cfg.get("folder"):
    # The `folder` layout's defaults, overridden by the config; tfds wants a name of its own.
    f = {"name": "custom", **dataset_cfg.folder}
    if "split_files" in f:
      f["split_files"] = tuple(tuple(x) for x in f["split_files"])
    config = dataclasses.replace(sb.FOLDER, description="config.dataset.folder", **f)
  elif name == "sirst":
    folders = {"idx_427": "sirst", "idx_320": "sirst_idx320"}
    folder = dataset_cfg.get("split_folder", "idx_427")
    if folder not in folders:
      raise ConfigError(f"config.dataset.split_folder: {folder!r}; SIRST has {sorted(folders)}")
    config = folders[folder]
  elif name in ("sirst_v2", "folder"):
    config = name
  else:
    raise ConfigError(f"config.dataset.name: unknown dataset {name!r}; expected synthetic, sirst, "
                      "sirst_v2 or folder")
  data_dir = os.path.expanduser(dataset_cfg.data_dir)
  return sb.Builder(config=config, data_dir=data_dir, file_format="array_record")


def prepare(dataset_cfg):
  """Builds the tfds dataset once (needs TensorFlow); later runs only read it."""
  builder = tfds_builder(dataset_cfg)
  if not (builder.data_path / "dataset_info.json").exists():
    import tensorflow_datasets as tfds
    manual = dataset_cfg.get("manual_dir") or None
    if manual and not os.path.isdir(os.path.expanduser(manual)):
      raise DataError(f"config.dataset.manual_dir: {manual} is not a directory")
    logging.info("Building %s into %s from %s (once; later runs read it)",
                 builder.builder_config.name, builder.data_path, manual or "the download")
    from eaau_jax import progress  # tfds draws tqdm bars: on a terminal only, as ours
    tfds.display_progress_bar(progress.on_terminal() and progress.is_main_process())
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual) if manual else None))
  return builder


# ``config.dataset.color``: how images are read (absent: grey).
#   grey:         the stored grey image (imageio's rule), normalised with config.dataset.mean/std.
#   rgb:          ACM's read, PIL ``convert('RGB')`` (the tfds ``image_rgb`` feature; 159 SIRST
#                 images have unequal channels), normalised with config.dataset.mean/std.
#   rgb_imagenet: the same pixels, normalised with the ImageNet mean/std (x 255), as ACM/ALCNet
#                 trained and as their released weights expect.
COLORS = ("grey", "rgb", "rgb_imagenet")
IMAGENET_MEAN_U8 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_U8 = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def dataset_color(dataset_cfg) -> str:
  color = dataset_cfg.get("color", "grey")
  if color not in COLORS:
    raise ConfigError(f"config.dataset.color: {color!r}; expected one of {', '.join(COLORS)}")
  return color


class _RGBSource:
  """``image`` <- the example's ``image_rgb`` (uint8 (H, W, 3), tfds_sirst >= 1.1.0); a source
  without one (synthetic) has grey images, repeated x 3.
  ``normalization``: ImageNet's (mean, std) for rgb_imagenet, else None (mean_std computes it)."""

  def __init__(self, base, imagenet: bool):
    self._base = base
    self.normalization = (IMAGENET_MEAN_U8, IMAGENET_STD_U8) if imagenet else None

  def __len__(self):
    return len(self._base)

  def image_size(self, i: int) -> tuple[int, int]:
    return stored_size(self._base, i)

  def __getitem__(self, i):
    ex = dict(self._base[i])
    rgb = ex.pop("image_rgb", None)
    ex["image"] = np.asarray(rgb) if rgb is not None else np.repeat(ex["image"], 3, axis=-1)
    return ex


def _headers(builder, split: str):
  """The split's records with ``size`` decoded and the pixel features skipped (None where the
  build has no ``size``)."""
  import tensorflow_datasets as tfds
  features = builder.info.features
  if "size" not in features:
    return None
  skip = {k: tfds.decode.SkipDecoding() for k in ("image", "image_rgb", "mask") if k in features}
  return builder.as_data_source(split=split, decoders=skip)


def open_source(dataset_cfg, split: str):
  """A random-access source of ``split`` of the dataset ``config.dataset`` describes, its images
  in ``config.dataset.color`` (grey (H, W, 1) or RGB (H, W, 3))."""
  color = dataset_color(dataset_cfg)
  if dataset_cfg.name == "synthetic":
    s = dataset_cfg.synthetic
    sizes = {"train": s.num_train, "val": s.num_val, "test": s.num_test}
    if split not in sizes:
      raise ConfigError(f"synthetic dataset: split {split!r} not in {sorted(sizes)}")
    source = synthetic.SyntheticSource(split, sizes[split], s.seed, tuple(s.size_range))
  else:
    builder = prepare(dataset_cfg)
    if split not in builder.info.splits:
      raise ConfigError(f"{builder.builder_config.name}: no split {split!r}; it has "
                        f"{sorted(builder.info.splits)}")
    source = _TfdsSource(builder.as_data_source(split=split), _headers(builder, split))
  return source if color == "grey" else _RGBSource(source, color == "rgb_imagenet")


@dataclasses.dataclass
class FolderSource:
  """The images of a folder as a source (for ``--mode=predict``): each file read (once) when
  asked for, by the same rule as the dataset (imageio; ``rgb``: PIL ``convert('RGB')``, as the
  tfds ``image_rgb`` feature); ``mask`` is all zeros (there is none). An unreadable file raises
  ``DataError`` naming it."""
  paths: list
  rgb: bool = False

  def __len__(self):
    return len(self.paths)

  def image_size(self, i: int) -> tuple[int, int]:
    with Image.open(self.paths[i]) as im:  # the header only
      return im.size[1], im.size[0]

  def __getitem__(self, i: int) -> dict:
    image = imageio.read_image(self.paths[i], self.rgb)
    return {"image": image, "mask": np.zeros(image.shape[:2] + (1,), np.uint8),
            "id": self.paths[i]}


def mean_std(source) -> tuple:
  """Pixel mean and std of all images of a source (the train split's, for normalisation), pooled
  over channels; a source with a fixed ``normalization`` (rgb_imagenet) returns it (per channel)."""
  if getattr(source, "normalization", None) is not None:
    return source.normalization
  total = total_sq = count = 0.0
  for i in range(len(source)):
    x = source[i]["image"].astype(np.float64)
    total, total_sq, count = total + x.sum(), total_sq + (x * x).sum(), count + x.size
  mean = total / count
  return float(mean), float(math.sqrt(max(total_sq / count - mean * mean, 1e-12)))


# ---------------------------------------------------------------- augmentation
SCALE_REFERENCES = ("base", "image")


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop_size: int,
            base_size: int, blur_p: float = 0.5, scale_range: tuple = (0.5, 2.0),
            scale_reference: str = "base") -> tuple[np.ndarray, np.ndarray]:
  """ACM's training transform on uint8 (H, W, 1) image and {0,1} mask -> (crop, crop, 1) each.

  Horizontal flip (p = 0.5); resize so the long side is a random integer in
  [lo, hi] x reference, ``scale_range = (lo, hi)``, where the reference is ``base_size``
  (``scale_reference="base"``, ACM: every image to a common scale, as the `acm` protocol tests) or
  the image's own long side (``"image"``: around its native scale, as the `native` protocol
  tests); image bilinear, mask nearest, so it stays binary. Pad right/bottom with 0 up to the crop
  size if smaller (an image smaller than the crop is padded, never an error); random crop;
  Gaussian blur of the image with a random radius in [0, 1) with probability ``blur_p``.
  """
  if scale_reference not in SCALE_REFERENCES:
    raise ConfigError(f"config.input.scale_reference: {scale_reference!r}; expected one of "
                      f"{SCALE_REFERENCES}")
  # RGB images (config.dataset.color) go through PIL as RGB: the same resize/blur per channel.
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  msk = Image.fromarray(mask[..., 0])
  if rng.random() < 0.5:
    img, msk = img.transpose(Image.FLIP_LEFT_RIGHT), msk.transpose(Image.FLIP_LEFT_RIGHT)
  w, h = img.size
  reference = base_size if scale_reference == "base" else max(h, w)
  lo, hi = scale_range
  long_size = int(rng.integers(int(reference * lo), int(reference * hi) + 1))
  if h > w:
    oh, ow = long_size, int(w * long_size / h + 0.5)
  else:
    ow, oh = long_size, int(h * long_size / w + 0.5)
  ow, oh = max(ow, 1), max(oh, 1)
  img, msk = img.resize((ow, oh), Image.BILINEAR), msk.resize((ow, oh), Image.NEAREST)
  a, m = np.asarray(img), np.asarray(msk)
  ph, pw = max(crop_size - oh, 0), max(crop_size - ow, 0)
  if ph or pw:
    a = np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2))
    m = np.pad(m, ((0, ph), (0, pw)))
  y = int(rng.integers(0, a.shape[0] - crop_size + 1))
  x = int(rng.integers(0, a.shape[1] - crop_size + 1))
  a, m = a[y:y + crop_size, x:x + crop_size], m[y:y + crop_size, x:x + crop_size]
  if rng.random() < blur_p:
    a = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(radius=rng.random())))
  return (a[..., None] if a.ndim == 2 else a), m[..., None]


# ---------------------------------------------------------------- evaluation protocols
# How an image is presented for evaluation (and prediction); every report names one.
#   acm:    image resized to base_size x base_size (PIL bilinear), mask nearest, whatever the aspect
#           ratio: ACM's ``_testval_sync_transform``. Table 3's CNN rows (copied from the ACM and
#           ALCNet papers) were measured this way, so EAAU-Net's 0.771 compares under it.
#   native: the image as stored; metrics over its own pixels.
PROTOCOLS = ("acm", "native")


def check_protocol(protocol: str, field: str = "config.eval.protocol") -> str:
  if protocol not in PROTOCOLS:
    raise ConfigError(f"{field}: unknown evaluation protocol {protocol!r}; expected one of "
                      f"{', '.join(PROTOCOLS)}")
  return protocol


def eval_transform(image: np.ndarray, mask: Optional[np.ndarray], protocol: str,
                   base_size: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """uint8 (H, W, C) image and {0,1} (H, W, 1) mask (or None) as the protocol evaluates them."""
  if check_protocol(protocol) == "native":
    return image, mask
  size = (base_size, base_size)
  channels = [np.asarray(Image.fromarray(image[..., c]).resize(size, Image.BILINEAR))
              for c in range(image.shape[-1])]
  image = np.stack(channels, axis=-1)
  if mask is not None:
    mask = np.asarray(Image.fromarray(mask[..., 0]).resize(size, Image.NEAREST))[..., None]
  return image, mask


def normalize(image: np.ndarray, mean, std, channels: int = 1) -> np.ndarray:
  """uint8 (..., 1) or (..., 3) -> float32 (..., channels): (x - mean) / std, a grey image repeated
  for 3 channels. ``mean``/``std``: scalars, or one per channel (rgb_imagenet)."""
  if image.shape[-1] not in (1, channels):
    raise ValueError(f"image has {image.shape[-1]} channels; config.input.channels is {channels}")
  x = (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return np.repeat(x, channels, axis=-1) if x.shape[-1] != channels else x


# ---------------------------------------------------------------- training batches
# A grain pipeline (https://google-grain.readthedocs.io): a ``grain.MapDataset`` of this
# process's records of the run (its rows of every global batch, in order), read and augmented by
# grain's prefetch threads (``to_iter_dataset``) and, optionally, worker processes
# (``mp_prefetch``), then batched. Record r is a pure function of (seed, r), so grain's threads
# and processes change only how fast the batches come, and resuming at step s is starting the
# pipeline at record s x local_batch. That is also why a checkpoint needs no iterator state of
# grain's: its step is the pipeline's position, valid for any number of processes, workers or
# devices (grain's own state is per process and, with ``mp_prefetch``, per worker).


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, n: int, epoch: int) -> np.ndarray:
  """The order of ``epoch``: drawn from (seed, epoch). Cached, as every record of the epoch
  looks itself up in it (each thread or worker process computes it at most once per epoch);
  read-only, as it is shared."""
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.setflags(write=False)
  return perm


@dataclasses.dataclass(frozen=True)
class _ProcessRecords:
  """Record r of this process's run -> (epoch, source index). A global batch is ``process_count``
  rows of ``local_batch`` records; this process's record r is slot r % local_batch of row
  ``process_index`` of step r // local_batch, so each process reads only its rows."""
  seed: int
  num_examples: int
  steps_per_epoch: int
  local_batch: int
  process_index: int
  process_count: int

  def __call__(self, r: int) -> tuple[int, int]:
    step, j = divmod(int(r), self.local_batch)
    epoch, k = divmod(step, self.steps_per_epoch)
    position = (k * self.process_count + self.process_index) * self.local_batch + j
    return epoch, int(_permutation(self.seed, self.num_examples, epoch)[position])


@dataclasses.dataclass(frozen=True)
class _Augmented:
  """(epoch, index) -> the example's augmented (crop, mask). Its random stream is
  ``default_rng([seed, epoch, index])``, a pure function of the record, rather than grain's
  ``random_map`` stream (seeded by the position in the pipeline): the same draws as before the
  pipeline moved to grain, so runs and checkpoints made before it go on with the same batches."""
  source: object
  seed: int
  crop_size: int
  base_size: int
  blur_p: float
  scale_range: tuple
  scale_reference: str

  def __call__(self, record: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    epoch, index = record
    ex = self.source[index]
    rng = np.random.default_rng([self.seed, epoch, index])
    return augment(ex["image"], ex["mask"], rng, self.crop_size, self.base_size, self.blur_p,
                   self.scale_range, self.scale_reference)


@dataclasses.dataclass(frozen=True)
class _Normalized:
  """A stacked (crops, masks) pair -> the model's float32 batch dict (new arrays)."""
  mean: object
  std: object
  channels: int

  def __call__(self, pair: tuple[np.ndarray, np.ndarray]) -> dict:
    images, masks = pair
    return {"image": normalize(images, self.mean, self.std, self.channels),
            "mask": masks.astype(np.float32)}


@dataclasses.dataclass
class TrainLoader:
  """Per-process training batches (local (image, mask) dicts) on grain.

  ``iterator(step, num_epochs)``: the run's batches from ``step`` on (what training reads);
  ``batches(epoch, start)``: one epoch's. ``workers``: grain's prefetch threads per process;
  ``prefetch``: batches ready ahead (``workers`` or ``prefetch`` 0: read in the caller's thread);
  ``worker_processes``: grain worker processes (``mp_prefetch``), each with ``workers`` threads and
  ``prefetch`` batches, for hosts where the GIL rather than the cores limits the threads.
  """
  source: object
  global_batch: int
  crop_size: int
  base_size: int
  mean: float
  std: float
  seed: int = 0
  channels: int = 1
  blur_p: float = 0.5
  process_index: int = 0
  process_count: int = 1
  workers: int = 4
  scale_range: tuple = (0.5, 2.0)
  scale_reference: str = "base"
  prefetch: int = 2
  worker_processes: int = 0

  def __post_init__(self):
    if self.global_batch % self.process_count:
      raise ConfigError(f"{self.global_batch} is not divisible by the {self.process_count} "
                        "processes", "config.batch_size")
    if len(self.source) < self.global_batch:
      raise ConfigError(f"the training split has {len(self.source)} examples, fewer than one "
                        f"batch of {self.global_batch}", "config.batch_size")

  @property
  def local_batch(self) -> int:
    return self.global_batch // self.process_count

  @property
  def steps_per_epoch(self) -> int:
    return len(self.source) // self.global_batch  # the last partial batch is dropped

  def epoch_order(self, epoch: int) -> np.ndarray:
    """(steps, global_batch) example indices of an epoch."""
    perm = _permutation(self.seed, len(self.source), epoch)
    return perm[:self.steps_per_epoch * self.global_batch].reshape(self.steps_per_epoch, -1)

  def dataset(self, num_epochs: int):
    """The ``grain.MapDataset`` of this process's records of ``num_epochs`` epochs: uint8
    (crop, mask) pairs, computed when read, by whichever thread or worker process reads them;
    records [s, s + 1) x ``local_batch`` are its rows of the batch of step s."""
    import grain  # here: evaluation and prediction run without grain installed
    records = _ProcessRecords(self.seed, len(self.source), self.steps_per_epoch,
                              self.local_batch, self.process_index, self.process_count)
    augmented = _Augmented(self.source, self.seed, self.crop_size, self.base_size, self.blur_p,
                           tuple(self.scale_range), self.scale_reference)
    return (grain.MapDataset.range(num_epochs * self.steps_per_epoch * self.local_batch)
            .map(records).map(augmented))

  def iterator(self, step: int, num_epochs: int):
    """grain's iterator over this process's batches from global ``step`` to the end of epoch
    ``num_epochs``; ``close()`` it (it stops grain's threads and worker processes)."""
    import grain
    local = self.local_batch
    ds = self.dataset(num_epochs)[step * local:]
    # As the thread pool before grain: ``workers`` threads on the records of the next batch,
    # and one thread stacking and normalising ``prefetch`` batches ahead of the training loop.
    # (A batch per thread cost 10-15% more CPU per image here; batching in the loop's thread,
    # ~3 ms per batch of 8 at 480^2, 5-10% of the images/s.)
    ahead = max(self.workers, local) if self.workers else 0
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.workers,
                                              prefetch_buffer_size=ahead))
    if self.worker_processes:
      if not flags.FLAGS.is_parsed():  # outside an absl app (tests, scripts): grain reads its
        flags.FLAGS.mark_as_parsed()   # flags to start workers, so take their defaults
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.worker_processes, per_worker_buffer_size=local))
    # Batched and normalised in this process: worker processes pass uint8 records through
    # shared memory (a quarter of float32's bytes), and stacking them copies them out of it
    # (grain frees that memory when its array is collected; JAX may keep a view of a host array).
    ds = ds.batch(local, drop_remainder=True).map(_Normalized(self.mean, self.std, self.channels))
    if self.workers and self.prefetch:
      ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=self.prefetch)
    return iter(ds)

  def batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
    """Local batches of ``epoch`` from its step ``start`` on."""
    it = self.iterator(epoch * self.steps_per_epoch + start, epoch + 1)
    try:
      yield from it
    finally:
      it.close()


# ---------------------------------------------------------------- evaluation batches
def bucket_shape(h: int, w: int, multiple: int) -> tuple[int, int]:
  return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def stored_size(source, i: int) -> tuple[int, int]:
  """(H, W) of example ``i`` as stored: from the source's ``image_size`` where it has one (the
  tfds ``size`` feature, a file's header, the synthetic seed), else by decoding the example."""
  size_of = getattr(source, "image_size", None)
  if size_of is not None:
    return tuple(size_of(i))
  return tuple(source[i]["mask"].shape[:2])


def evaluated_size(source, i: int, protocol: str, base_size: int) -> tuple[int, int]:
  """(H, W) at which example ``i`` is evaluated."""
  if protocol == "acm":
    return base_size, base_size
  return stored_size(source, i)


@dataclasses.dataclass
class EvalLoader:
  """Evaluation (and prediction) batches under a protocol: the one preprocessing path.

  Each example goes through ``eval_transform`` (the protocol) and ``normalize``, then into a batch
  of a few bucket shapes so ``jit`` compiles once per bucket instead of once per image size
  (native SIRST has 381 sizes; multiples of 128 give a dozen; ``acm`` has one). The padding never
  reaches the logits (the model masks it, see models.apply_mask) nor the metrics.

  Each batch: ``image`` (B, Hb, Wb, C), zero-padded after normalisation; ``mask``; ``valid`` (1 on
  real pixels); ``weight`` (B,) (0 for filler images of a bucket's last batch); and host-side
  ``index`` (source index, -1 for fillers), ``ids``, ``sizes`` (evaluated) and ``orig_sizes``.

  ``cache_bytes`` > 0 keeps the batches of the first complete pass, read-only, when their arrays
  fit in that many bytes, and later passes yield them again: training validates the same split
  dozens of times, and reading, resizing and normalising it was most of a validation's host time.
  """
  source: object
  batch_size: int
  mean: float
  std: float
  pad_multiple: int = 128
  channels: int = 1
  process_index: int = 0
  process_count: int = 1
  protocol: str = "native"
  base_size: int = 512
  cache_bytes: int = 0
  _cache: Optional[list] = dataclasses.field(default=None, init=False, repr=False)

  def __post_init__(self):
    check_protocol(self.protocol)
    if self.batch_size % self.process_count:
      raise ConfigError(f"{self.batch_size} is not divisible by the {self.process_count} processes",
                        "config.input.eval_batch_size")

  def bucket(self, h: int, w: int) -> tuple[int, int]:
    """The batch shape of an image evaluated at (h, w); acm: every image is base x base already,
    one shape and no padding."""
    return (h, w) if self.protocol == "acm" else bucket_shape(h, w, self.pad_multiple)

  @functools.cached_property
  def plan(self) -> list:
    """[(bucket shape, source indices)] per batch. Computed on first use, so a loader that only
    batches single examples (``single``, predict) never sizes the whole source."""
    buckets = collections.defaultdict(list)
    for i in range(len(self.source)):
      buckets[self.bucket(*evaluated_size(self.source, i, self.protocol, self.base_size))].append(i)
    plan = [(shape, idx[k:k + self.batch_size]) for shape, idx in sorted(buckets.items())
            for k in range(0, len(idx), self.batch_size)]
    logging.info("eval (%s protocol): %d images in %d bucket shapes, %d batches", self.protocol,
                 len(self.source), len(buckets), len(plan))
    return plan

  def prepare(self, ex: dict) -> tuple[np.ndarray, np.ndarray]:
    """One example as evaluated: (normalised image (H, W, C), mask (H, W, 1))."""
    image, mask = eval_transform(ex["image"], ex["mask"], self.protocol, self.base_size)
    return normalize(image, self.mean, self.std, self.channels), mask

  def __iter__(self) -> Iterator[dict]:
    if self._cache is not None:
      yield from self._cache
      return
    local = self.batch_size // self.process_count
    lo = self.process_index * local
    kept, size = ([] if self.cache_bytes > 0 else None), 0
    for (bh, bw), idx in self.plan:
      idx = list(idx) + [None] * (self.batch_size - len(idx))
      batch = self._batch(idx[lo:lo + local], bh, bw)
      if kept is not None:
        arrays = [v for v in batch.values() if isinstance(v, np.ndarray)]
        size += sum(a.nbytes for a in arrays)
        if size > self.cache_bytes:
          logging.info("eval (%s protocol): batches past %d MB, not kept between passes",
                       self.protocol, self.cache_bytes // 2**20)
          kept = None
        else:
          for a in arrays:
            a.flags.writeable = False  # shared by every later pass
          kept.append(batch)
      yield batch
    if kept is not None:  # only a complete pass is kept
      self._cache = kept

  def single(self, ex: dict, index: int = 0) -> dict:
    """A batch of one example already read, in its bucket shape: predict streams a folder this
    way, reading each file once and holding one image at a time."""
    prepared = self.prepare(ex)
    batch = self._empty(1, *self.bucket(*prepared[1].shape[:2]))
    self._put(batch, 0, index, ex, prepared)
    return batch

  def _empty(self, n: int, bh: int, bw: int) -> dict:
    return {"image": np.zeros((n, bh, bw, self.channels), np.float32),
            "mask": np.zeros((n, bh, bw, 1), np.float32),
            "valid": np.zeros((n, bh, bw, 1), np.float32), "weight": np.zeros((n,), np.float32),
            "index": [-1] * n, "ids": [None] * n, "sizes": [(0, 0)] * n,
            "orig_sizes": [(0, 0)] * n}

  def _put(self, batch: dict, k: int, i: int, ex: dict, prepared: tuple):
    image, mask = prepared
    h, w = mask.shape[:2]
    batch["image"][k, :h, :w] = image
    batch["mask"][k, :h, :w] = mask
    batch["valid"][k, :h, :w] = 1
    batch["weight"][k] = 1
    batch["index"][k] = i
    batch["ids"][k] = ex["id"]
    batch["sizes"][k] = (h, w)
    batch["orig_sizes"][k] = tuple(ex["image"].shape[:2])

  def _batch(self, mine: list, bh: int, bw: int) -> dict:
    batch = self._empty(len(mine), bh, bw)
    for k, i in enumerate(mine):
      if i is not None:
        ex = self.source[i]
        self._put(batch, k, i, ex, self.prepare(ex))
    return batch


# ---------------------------------------------------------------- devices
def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh over all devices (of every process), axis ``data``."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def to_global(mesh: Mesh, local: dict) -> dict:
  """Process-local numpy batch -> global arrays sharded over the batch axis of the mesh."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()
          if isinstance(v, np.ndarray)}
