"""SIRST (and SIRST-v2, and any images/ + masks/ folder) as a TensorFlow Datasets builder.

Stored as array_record with zlib-compressed uint8 tensors, so ``tfds.data_source`` reads it back
without TensorFlow (writing it needs TensorFlow, as every tfds build does).

  from tfds_sirst import Builder
  b = Builder(config="sirst", data_dir=DATA, file_format="array_record")
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=SIRST_DIR))
  train = tfds.data_source("sirst/sirst", data_dir=DATA, split="train")
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from eaau_jax import imageio
from eaau_jax.imageio import DataError

SIRST_URL = "https://raw.githubusercontent.com/YimianDai/sirst/master/"
SPLITS = ("train", "val", "test", "trainval")

_DESCRIPTION = """
Single-frame infrared small target (SIRST) segmentation. Each example is a uint8 grayscale image
(H, W, 1), the image as ACM/ALCNet's loaders read it (``image_rgb``: PIL ``convert('RGB')``,
(H, W, 3); 159 SIRST images have slightly unequal channels; 16-bit images: the grey image
repeated), its binary target mask (H, W, 1) in {0, 1}, the image id, the original (height, width),
and the number of 8-connected targets in the mask (0 is allowed and counted).
Image conversion: L as stored; P/RGB/RGBA by ITU-R 601-2 luma with alpha dropped; 16-bit by
per-image min-max stretch (see eaau_jax/imageio.py).
"""

_CITATION = """
@inproceedings{dai21acm,
  title = {Asymmetric Contextual Modulation for Infrared Small Target Detection},
  author = {Yimian Dai and Yiquan Wu and Fei Zhou and Kobus Barnard},
  booktitle = {{IEEE} Winter Conference on Applications of Computer Vision, {WACV} 2021},
  year = {2021}
}
@article{tong21eaau,
  title = {EAAU-Net: Enhanced Asymmetric Attention U-Net for Infrared Small Target Detection},
  author = {Tong, Xiaozhong and Sun, Bei and Wei, Junyu and Zuo, Zhen and Su, Shaojing},
  journal = {Remote Sensing}, volume = {13}, number = {16}, pages = {3200}, year = {2021}
}
"""


@dataclasses.dataclass
class SirstConfig(tfds.core.BuilderConfig):
  """Where a release keeps its files, relative to its root (the manual dir).

  Image of id X: ``{image_dir}/X{ext}``; mask: ``{mask_dir}/X{mask_suffix}{ext}``; split S lists its
  ids one per line in ``{split_dir}/{split_files[S]}``.
  """
  image_dir: str = "images"
  mask_dir: str = "masks"
  mask_suffix: str = "_pixels0"
  ext: str = ".png"
  split_dir: str = "idx_427"
  split_files: tuple[tuple[str, str], ...] = tuple((s, f"{s}.txt") for s in SPLITS)
  download: bool = False  # only the public SIRST release can be downloaded


_V2_SPLITS = tuple((s, f"{s}_full.txt") for s in SPLITS) + tuple(
    (f"{s}_v1", f"{s}_v1.txt") for s in SPLITS)

SIRST = SirstConfig(name="sirst", description="SIRST, official idx_427 split (256/85/86).",
                    download=True)
# The older idx_320 split: 160/64/96 = 5:2:3, the paper's ratio and the split of ACM's released weights.
SIRST_IDX320 = SirstConfig(name="sirst_idx320", split_dir="idx_320", download=True,
                           description="SIRST, idx_320 split (160/64/96 = 5:2:3, the paper's).")
SIRST_V2 = SirstConfig(name="sirst_v2", image_dir="mixed", mask_dir="annotations/masks",
                       split_dir="splits", split_files=_V2_SPLITS,
                       description="SIRST-v2 (open-sirst-v2): 1024 images; *_v1 splits are SIRST.")
FOLDER = SirstConfig(name="folder", mask_suffix="", split_dir=".",
                     split_files=(("train", "trainval.txt"), ("test", "test.txt")),
                     description="Any images/ + masks/ + split lists release (NUDT-SIRST style); "
                     "make your own SirstConfig for other names.")


def read_split_ids(path) -> list[str]:
  """Ids of a split file, one per line (a last line without newline is fine)."""
  path = epath.Path(path)
  if not path.exists():
    raise DataError(f"{path}: split file not found")
  lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
  ids = [x for x in lines if x]
  if not ids:
    raise DataError(f"{path}: split file lists no ids")
  seen = {}
  for line_no, x in enumerate(lines, 1):
    if x and x in seen:
      raise DataError(f"{path}: id {x!r} is listed twice (lines {seen[x]} and {line_no})")
    seen.setdefault(x, line_no)
  return ids


def _find_png_dir(root: epath.Path, probe: str) -> epath.Path:
  """The folder under ``root`` (an extracted zip) that holds ``probe``: root itself or a subfolder."""
  for dirpath, _, files in root.walk():
    if probe in files:
      return dirpath
  raise DataError(f"{root}: no {probe} in the downloaded archive")


def read_rgb(path, grey: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3): ``Image.open(path).convert('RGB')`` as ACM's loader; for 16-bit/float images
  (which PIL's RGB conversion clips) the grey image ``grey`` (imageio's stretch) repeated."""
  with Image.open(path) as im:
    if im.mode in ("L", "1", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr"):
      return np.asarray(im.convert("RGB"), np.uint8)
  return np.repeat(grey, 3, axis=-1)


class Builder(tfds.core.GeneratorBasedBuilder):
  """SIRST-style infrared small target segmentation datasets."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "image_rgb: the image as PIL convert('RGB') reads it (ACM's loader), "
                            "for the CNN baselines' RGB input (config.dataset.color)."}
  BUILDER_CONFIGS = [SIRST, SIRST_IDX320, SIRST_V2, FOLDER]
  DEFAULT_BUILDER_CONFIG_NAME = "sirst"
  URL_BASE = SIRST_URL  # tests point this at a local server
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Pass the release's root folder as the manual dir
  (`tfds.download.DownloadConfig(manual_dir=ROOT)`; default `<data_dir>/downloads/manual`):
    sirst:    ROOT/images/Misc_<n>.png, ROOT/masks/Misc_<n>_pixels0.png,
              ROOT/idx_427/{train,val,test,trainval}.txt     (github.com/YimianDai/sirst).
              With no manual dir, `sirst` downloads images.zip, masks.zip and idx_427 from there.
    sirst_idx320: the same release with its idx_320/ split folder (160/64/96).
    sirst_v2: ROOT/mixed/<id>.png, ROOT/annotations/masks/<id>_pixels0.png,
              ROOT/splits/{train,val,test,trainval}_full.txt and *_v1.txt
              (github.com/YimianDai/open-sirst-v2).
    folder:   ROOT/images/<id>.png, ROOT/masks/<id>.png, ROOT/trainval.txt, ROOT/test.txt, or a
              SirstConfig of your own (image_dir, mask_dir, mask_suffix, split_dir, split_files).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    zlib = tfds.features.Encoding.ZLIB
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding=zlib),
            "image_rgb": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                              encoding=zlib),
            "mask": tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding=zlib),
            "id": tfds.features.Text(),
            "size": tfds.features.Tensor(shape=(2,), dtype=np.int32),  # original (height, width)
            "num_targets": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("image", "mask"),
        homepage="https://github.com/YimianDai/sirst",
        citation=_CITATION,
    )

  def _manual_root(self, dl_manager) -> Optional[epath.Path]:
    try:
      root = epath.Path(dl_manager.manual_dir)
    except AssertionError:  # no manual dir, or an empty one
      return None
    if not (root / self.builder_config.split_dir).is_dir():
      raise DataError(f"{root}: no {self.builder_config.split_dir}/ folder of split lists; "
                      f"layout expected:{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return root

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = self._manual_root(dl_manager)
    if root is not None:
      image_dir, mask_dir = root / cfg.image_dir, root / cfg.mask_dir
      split_paths = {s: root / cfg.split_dir / f for s, f in cfg.split_files}
    elif cfg.download:
      urls = {"images": self.URL_BASE + "images.zip", "masks": self.URL_BASE + "masks.zip"}
      urls.update({s: f"{self.URL_BASE}{cfg.split_dir}/{f}" for s, f in cfg.split_files})
      paths = {k: epath.Path(v) for k, v in dl_manager.download_and_extract(urls).items()}
      split_paths = {s: paths[s] for s, _ in cfg.split_files}
      first = read_split_ids(split_paths[cfg.split_files[0][0]])[0]
      image_dir = _find_png_dir(paths["images"], f"{first}{cfg.ext}")
      mask_dir = _find_png_dir(paths["masks"], f"{first}{cfg.mask_suffix}{cfg.ext}")
    else:
      raise DataError(f"{cfg.name}: no manual dir with the data, and this config cannot be "
                      f"downloaded.{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {s: self._generate_examples(p, image_dir, mask_dir) for s, p in split_paths.items()}

  def _generate_examples(self, split_path, image_dir, mask_dir):
    cfg = self.builder_config
    counts = collections.Counter()
    for sample_id in read_split_ids(split_path):
      image_path = image_dir / (sample_id + cfg.ext)
      if not image_path.exists():
        raise DataError(f"{split_path}: id {sample_id!r} has no image {image_path}")
      mask_path = mask_dir / f"{sample_id}{cfg.mask_suffix}{cfg.ext}"
      image, mask = imageio.read_pair(image_path, mask_path)
      n = imageio.count_targets(mask)
      counts["images"] += 1
      counts["targets"] += n
      counts["zero_target_images"] += n == 0
      yield sample_id, {"image": image, "image_rgb": read_rgb(image_path, image),
                        "mask": mask, "id": sample_id,
                        "size": np.array(image.shape[:2], np.int32), "num_targets": n}
    logging.info("%s: %d images, %d targets, %d images without a target", split_path,
                 counts["images"], counts["targets"], counts["zero_target_images"])
