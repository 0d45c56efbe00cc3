"""Tests of the SIRST builder: the three layouts, the download path, and every bad-data case."""

import functools
import http.server
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_sirst import sirst_dataset_builder as sb

DUMMY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")


class SirstTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = sb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["sirst"]
  EXAMPLE_DIR = os.path.join(DUMMY, "sirst")
  SPLITS = {"train": 5, "val": 2, "test": 3, "trainval": 7}
  OVERLAPPING_SPLITS = ["trainval"]  # the harness checks every other pair is disjoint
  SKIP_CHECKSUMS = True


class SirstIdx320Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = sb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["sirst_idx320"]
  EXAMPLE_DIR = os.path.join(DUMMY, "sirst")  # the same release, its idx_320/ split folder
  SPLITS = {"train": 4, "val": 2, "test": 3, "trainval": 6}
  OVERLAPPING_SPLITS = ["trainval"]
  SKIP_CHECKSUMS = True


class SirstV2Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = sb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["sirst_v2"]
  EXAMPLE_DIR = os.path.join(DUMMY, "sirst_v2")
  SPLITS = {"train": 6, "val": 2, "test": 4, "trainval": 8, "train_v1": 3, "val_v1": 1,
            "test_v1": 2, "trainval_v1": 4}
  OVERLAPPING_SPLITS = ["trainval", "train_v1", "val_v1", "test_v1", "trainval_v1"]
  SKIP_CHECKSUMS = True


class FolderTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = sb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["folder"]
  EXAMPLE_DIR = os.path.join(DUMMY, "folder")
  SPLITS = {"train": 5, "test": 3}
  SKIP_CHECKSUMS = True


def build(root, data_dir, config="sirst"):
  b = sb.Builder(config=config, data_dir=str(data_dir), file_format="array_record")
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return b


def read_split(data_dir, split, config="sirst"):
  ds = tfds.data_source(f"sirst/{config}", data_dir=str(data_dir), split=split)
  return {ex["id"].decode(): ex for ex in (ds[i] for i in range(len(ds)))}


def test_examples_match_source_pngs_and_conversion_rule(tmp_path):
  build(os.path.join(DUMMY, "sirst"), tmp_path)
  got = read_split(tmp_path, "trainval")
  assert sorted(got) == sorted(sb.read_split_ids(os.path.join(DUMMY, "sirst/idx_427/trainval.txt")))
  for sample_id, ex in got.items():
    src = Image.open(os.path.join(DUMMY, "sirst/images", sample_id + ".png"))
    mask = np.asarray(Image.open(os.path.join(DUMMY, "sirst/masks", sample_id + "_pixels0.png")))
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == mask.shape + (1,)
    assert ex["mask"].sum() == (mask > 0).sum() and set(np.unique(ex["mask"])) <= {0, 1}
    assert tuple(ex["size"]) == mask.shape
    a = np.asarray(src)
    if src.mode == "I;16":  # min-max stretch of the 16-bit values
      a = a.astype(float)
      want = np.round((a - a.min()) * 255 / (a.max() - a.min()))
    elif src.mode in ("RGB", "RGBA"):  # grey in every channel, so luma is that grey
      want = a[..., 0]
    elif src.mode == "P":
      want = np.asarray(src.convert("L"))
    else:
      want = a
    np.testing.assert_array_equal(ex["image"][..., 0], want, err_msg=f"{sample_id} {src.mode}")
    # image_rgb: ACM's convert('RGB'); 16-bit: the grey image repeated (PIL would clip it)
    want_rgb = (np.repeat(ex["image"], 3, -1) if src.mode == "I;16"
                else np.asarray(src.convert("RGB")))
    np.testing.assert_array_equal(ex["image_rgb"], want_rgb, err_msg=f"{sample_id} {src.mode}")


def test_zero_target_images_are_kept_and_counted(tmp_path):
  build(os.path.join(DUMMY, "sirst"), tmp_path)
  got = read_split(tmp_path, "trainval")
  zero = [k for k, ex in got.items() if ex["num_targets"] == 0]
  assert zero and all(got[k]["mask"].sum() == 0 for k in zero)
  assert all(ex["num_targets"] == 1 for k, ex in got.items() if k not in zero)


# ---------------------------------------------------------------- the download path
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@pytest.fixture
def release_server(tmp_path):
  """Serves images.zip, masks.zip and idx_427/*.txt, built from the dummy data, on 127.0.0.1."""
  served = tmp_path / "served"
  (served / "idx_427").mkdir(parents=True)
  src = os.path.join(DUMMY, "sirst")
  for name in ("images", "masks"):
    with zipfile.ZipFile(served / f"{name}.zip", "w") as z:
      for f in sorted(os.listdir(os.path.join(src, name))):
        z.write(os.path.join(src, name, f), f"{name}/{f}")
  for f in os.listdir(os.path.join(src, "idx_427")):
    shutil.copy(os.path.join(src, "idx_427", f), served / "idx_427" / f)
  handler = functools.partial(_QuietHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/"
  server.shutdown()
  server.server_close()


def test_download_from_release_urls(tmp_path, release_server, monkeypatch):
  monkeypatch.setattr(sb.Builder, "URL_BASE", release_server)
  b = sb.Builder(config="sirst", data_dir=str(tmp_path / "data"), file_format="array_record")
  b.download_and_prepare()  # no manual dir: downloads
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {
      "train": 5, "val": 2, "test": 3, "trainval": 7}
  manual = read_split(tmp_path / "data", "test")
  build(os.path.join(DUMMY, "sirst"), tmp_path / "manual")
  for k, ex in read_split(tmp_path / "manual", "test").items():
    np.testing.assert_array_equal(manual[k]["image"], ex["image"])
    np.testing.assert_array_equal(manual[k]["mask"], ex["mask"])


def test_config_without_download_and_no_data_says_what_to_do(tmp_path):
  b = sb.Builder(config="folder", data_dir=str(tmp_path), file_format="array_record")
  with pytest.raises(sb.DataError, match="(?s)cannot be downloaded.*Pass the release's root folder"):
    b.download_and_prepare()


# ---------------------------------------------------------------- bad data
@pytest.fixture
def release(tmp_path):
  root = tmp_path / "release"
  shutil.copytree(os.path.join(DUMMY, "sirst"), root)
  return root


def _first_train_id(root):
  return sb.read_split_ids(root / "idx_427" / "train.txt")[0]


def _expect_build_error(root, tmp_path, pattern):
  with pytest.raises(sb.DataError, match=pattern):
    build(root, tmp_path / "out")


def test_missing_mask(release, tmp_path):
  sid = _first_train_id(release)
  os.remove(release / "masks" / f"{sid}_pixels0.png")
  _expect_build_error(release, tmp_path, rf"masks/{sid}_pixels0.png: mask file not found")


def test_missing_image_for_split_id(release, tmp_path):
  with open(release / "idx_427" / "val.txt", "a") as f:
    f.write("\nMisc_999")
  _expect_build_error(release, tmp_path, r"val.txt: id 'Misc_999' has no image .*Misc_999.png")


def test_mask_image_size_mismatch(release, tmp_path):
  sid = _first_train_id(release)
  Image.fromarray(np.zeros((5, 6), np.uint8)).save(release / "masks" / f"{sid}_pixels0.png")
  _expect_build_error(release, tmp_path, rf"{sid}_pixels0.png: mask size 6x5 differs from image")


def test_non_binary_mask(release, tmp_path):
  sid = _first_train_id(release)
  path = release / "masks" / f"{sid}_pixels0.png"
  m = np.asarray(Image.open(path)).copy()
  m[0, 0] = 128
  Image.fromarray(m).save(path)
  _expect_build_error(release, tmp_path, rf"{sid}_pixels0.png: mask is not binary: values \{{0, 128, 255\}}")


def test_corrupt_png(release, tmp_path):
  sid = _first_train_id(release)
  path = release / "images" / f"{sid}.png"
  path.write_bytes(path.read_bytes()[:40])
  _expect_build_error(release, tmp_path, rf"images/{sid}.png: unreadable or corrupt image")


def test_empty_split_file(release, tmp_path):
  (release / "idx_427" / "test.txt").write_text("\n\n")
  _expect_build_error(release, tmp_path, r"test.txt: split file lists no ids")


def test_duplicate_ids(release, tmp_path):
  ids = sb.read_split_ids(release / "idx_427" / "train.txt")
  (release / "idx_427" / "train.txt").write_text("\n".join(ids + [ids[1]]))
  _expect_build_error(release, tmp_path, rf"train.txt: id '{ids[1]}' is listed twice \(lines 2 and 6\)")


def test_missing_split_folder(release, tmp_path):
  shutil.rmtree(release / "idx_427")
  _expect_build_error(release, tmp_path, r"no idx_427/ folder of split lists")


def test_sixteen_bit_constant_image_becomes_zero(tmp_path):
  from eaau_jax import imageio
  p = tmp_path / "flat.png"
  Image.fromarray(np.full((4, 5), 1000, np.uint16)).save(p)
  np.testing.assert_array_equal(imageio.read_grayscale(p), np.zeros((4, 5, 1), np.uint8))
  Image.fromarray(np.array([[0, 4095]], np.uint16)).save(p)
  np.testing.assert_array_equal(imageio.read_grayscale(p)[..., 0], [[0, 255]])
