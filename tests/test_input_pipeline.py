"""Input pipeline, synthetic dataset, and SIRST through the pipeline."""

import os

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from conftest import ROOT, SIRST, needs_sirst
from eaau_jax import input_pipeline as ip
from eaau_jax import metrics, synthetic



class ListSource(list):
  pass


def _examples(n, size=(20, 30), seed=0):
  rng = np.random.default_rng(seed)
  out = ListSource()
  for i in range(n):
    img = rng.integers(0, 255, size + (1,), dtype=np.uint8)
    mask = np.zeros(size + (1,), np.uint8)
    mask[i % size[0], 5] = 1
    out.append({"image": img, "mask": mask, "id": f"ex{i}"})
  return out


# ---------------------------------------------------------------- augmentation
def test_augment_shapes_binary_mask_and_determinism():
  ex = synthetic.make_example(0, "train", 3, (60, 80))
  a1, m1 = ip.augment(ex["image"], ex["mask"], np.random.default_rng(7), 48, 64)
  a2, m2 = ip.augment(ex["image"], ex["mask"], np.random.default_rng(7), 48, 64)
  assert a1.shape == m1.shape == (48, 48, 1) and a1.dtype == np.uint8
  assert set(np.unique(m1)) <= {0, 1}
  np.testing.assert_array_equal(a1, a2)
  np.testing.assert_array_equal(m1, m2)
  a3, _ = ip.augment(ex["image"], ex["mask"], np.random.default_rng(8), 48, 64)
  assert not np.array_equal(a1, a3)


def test_augment_pads_image_smaller_than_crop():
  img = np.full((10, 12, 1), 200, np.uint8)
  mask = np.ones((10, 12, 1), np.uint8)
  a, m = ip.augment(img, mask, np.random.default_rng(0), crop_size=64, base_size=16, blur_p=0.0)
  assert a.shape == (64, 64, 1)
  # long side scaled to [8, 32] <= 64: the content sits top-left, the rest is zero padding
  assert m.sum() > 0 and (m[..., 0] > 0).sum() == (a[..., 0] == 200).sum()
  assert a[-1, -1, 0] == 0 and m[-1, -1, 0] == 0


def _content_sizes(img, **kw):
  """(h, w) of a white image's content in 30 padded augmented crops (content sits top-left)."""
  mask = np.zeros(img.shape, np.uint8)
  sizes = []
  for seed in range(30):
    a, _ = ip.augment(img, mask, np.random.default_rng(seed), crop_size=300, blur_p=0.0, **kw)
    rows, cols = np.nonzero(a[..., 0] > 0)
    sizes.append((rows.max() + 1, cols.max() + 1))
  return sizes


def test_augment_scale_range_follows_base_size():
  """The long side is resized to [0.5, 2] x base, aspect kept (measured inside a padded crop)."""
  sizes = _content_sizes(np.full((100, 200, 1), 255, np.uint8), base_size=64)
  assert all(abs(h - w / 2) <= 1 for h, w in sizes)
  longs = [w for _, w in sizes]
  assert min(longs) >= 32 and max(longs) <= 128 and len(set(longs)) > 10


def test_augment_scale_relative_to_the_image_for_native_training():
  """scale_reference="image": long side in [lo, hi] x the image's own long side, whatever base."""
  img = np.full((50, 100, 1), 255, np.uint8)
  mask = np.zeros((50, 100, 1), np.uint8)
  longs = [w for _, w in _content_sizes(img, base_size=512, scale_range=(0.8, 1.25),
                                        scale_reference="image")]
  assert min(longs) >= 80 and max(longs) <= 125 and len(set(longs)) > 10
  with pytest.raises(ValueError, match="config.input.scale_reference: 'crop'"):
    ip.augment(img, mask, np.random.default_rng(0), 32, 64, scale_reference="crop")


def test_acm_protocol_resizes_to_base_and_native_keeps_the_image():
  """acm: PIL bilinear image / nearest mask to base x base (ACM's _testval_sync_transform)."""
  rng = np.random.default_rng(0)
  img = rng.integers(0, 255, (30, 47, 1), dtype=np.uint8)
  mask = np.zeros((30, 47, 1), np.uint8)
  mask[10:13, 20:23] = 1
  a, m = ip.eval_transform(img, mask, "acm", 64)
  want = np.asarray(Image.fromarray(img[..., 0]).resize((64, 64), Image.BILINEAR))
  np.testing.assert_array_equal(a[..., 0], want)
  want_m = np.asarray(Image.fromarray(mask[..., 0]).resize((64, 64), Image.NEAREST))
  np.testing.assert_array_equal(m[..., 0], want_m)
  assert set(np.unique(m)) == {0, 1}
  a, m = ip.eval_transform(img, mask, "native", 64)
  assert a is img and m is mask
  with pytest.raises(ValueError, match="unknown evaluation protocol 'full'"):
    ip.eval_transform(img, mask, "full", 64)


def test_eval_loader_under_acm_has_one_bucket_of_base_size():
  src = _examples(5, size=(20, 31))
  loader = ip.EvalLoader(src, 4, 0.0, 1.0, 32, protocol="acm", base_size=48)
  batches = list(loader)
  assert [b["image"].shape for b in batches] == [(4, 48, 48, 1)] * 2
  assert [s for b in batches for s in b["sizes"]][:5] == [(48, 48)] * 5
  assert [s for b in batches for s in b["orig_sizes"]][:5] == [(20, 31)] * 5
  assert batches[0]["valid"].sum() == 4 * 48 * 48


def test_normalize_and_channels():
  x = np.array([[[10], [30]]], np.uint8)
  np.testing.assert_allclose(ip.normalize(x, 20.0, 10.0)[..., 0], [[-1.0, 1.0]])
  assert ip.normalize(x, 20.0, 10.0, channels=3).shape == (1, 2, 3)


def test_mean_std_matches_numpy():
  src = _examples(5)
  pixels = np.concatenate([e["image"].ravel() for e in src]).astype(np.float64)
  mean, std = ip.mean_std(src)
  assert mean == pytest.approx(pixels.mean()) and std == pytest.approx(pixels.std())


# ---------------------------------------------------------------- training batches
def _loader(src, **kw):
  args = dict(global_batch=4, crop_size=16, base_size=24, mean=100.0, std=50.0, seed=3)
  args.update(kw)
  return ip.TrainLoader(src, **args)


def _reference_batch(loader, epoch, k):
  """Batch k of ``epoch`` (this process's rows) computed directly from the loader's definition,
  as the thread-pool loader before grain computed it: rows of the (seed, epoch) permutation,
  example i augmented with default_rng([seed, epoch, i])."""
  rows = loader.epoch_order(epoch)[k]
  lo = loader.process_index * loader.local_batch
  pairs = [ip.augment(loader.source[int(i)]["image"], loader.source[int(i)]["mask"],
                      np.random.default_rng([loader.seed, epoch, int(i)]), loader.crop_size,
                      loader.base_size, loader.blur_p) for i in rows[lo:lo + loader.local_batch]]
  return {"image": ip.normalize(np.stack([p[0] for p in pairs]), loader.mean, loader.std),
          "mask": np.stack([p[1] for p in pairs]).astype(np.float32)}


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys() == {"image", "mask"}
    for k in x:
      assert x[k].dtype == y[k].dtype == np.float32
      np.testing.assert_array_equal(x[k], y[k])


def test_same_batches_for_any_threads_and_the_pre_grain_definition():
  src = _examples(10)
  a = list(_loader(src).batches(0))
  assert len(a) == 2  # 10 // 4, last partial batch dropped
  _assert_same_batches(a, [_reference_batch(_loader(src), 0, k) for k in range(2)])
  for kw in (dict(workers=0), dict(workers=1, prefetch=0), dict(workers=3, prefetch=1)):
    _assert_same_batches(a, list(_loader(src, **kw).batches(0)))
  loader = _loader(src)
  assert not np.array_equal(loader.epoch_order(0), loader.epoch_order(1))
  assert sorted(loader.epoch_order(0).ravel()) == sorted(set(loader.epoch_order(0).ravel()))
  assert not np.array_equal(a[0]["image"], list(_loader(src, seed=4).batches(0))[0]["image"])


def test_resume_mid_epoch_gives_the_remaining_batches():
  src = _examples(13)
  full = list(_loader(src).batches(2))
  rest = list(_loader(src).batches(2, start=1))
  _assert_same_batches(full[1:], rest)
  # The run's iterator (what training reads) resumed at any step, across epoch boundaries: the
  # uninterrupted run's batches from there on (the pipeline's position is the step).
  run = list(_loader(src).iterator(0, 3))
  assert len(run) == 3 * 3
  _assert_same_batches(run[6:9], full)
  for step in (1, 3, 5):
    _assert_same_batches(run[step:], list(_loader(src, workers=2).iterator(step, 3)))


class _Recording:
  """A source that records which examples it is asked for."""

  def __init__(self, base):
    self.base, self.read = base, []

  def __len__(self):
    return len(self.base)

  def __getitem__(self, i):
    self.read.append(i)
    return self.base[i]


def test_processes_read_only_their_own_rows():
  src = _examples(12)
  whole = list(_loader(src).batches(1))
  parts = []
  for p in range(2):
    recording = _Recording(src)
    loader = _loader(recording, process_index=p, process_count=2)
    parts.append(list(loader.batches(1)))
    mine = loader.epoch_order(1)[:, 2 * p:2 * p + 2]
    assert sorted(recording.read) == sorted(mine.ravel())  # its rows, each read once
  for k, batch in enumerate(whole):
    assert parts[0][k]["image"].shape[0] == 2
    joined = np.concatenate([parts[0][k]["image"], parts[1][k]["image"]])
    np.testing.assert_array_equal(joined, batch["image"])


def test_worker_processes_give_the_same_batches():
  """grain's mp_prefetch (2 worker processes, sources pickled to them), started mid-run: the
  batches the threads give."""
  src = synthetic.SyntheticSource("train", 14, seed=2)
  threads = list(_loader(src, crop_size=32, base_size=48).iterator(2, 2))
  processes = _loader(src, crop_size=32, base_size=48, worker_processes=2, workers=1)
  it = processes.iterator(2, 2)
  try:
    got = list(it)
    # New arrays, not views of the shared memory grain frees when its arrays are collected.
    assert all(type(b[k]) is np.ndarray for b in got for k in b)
  finally:
    it.close()
  assert len(got) == 2 * 3 - 2
  _assert_same_batches(threads, got)


def test_loader_errors():
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    _loader(_examples(8), process_count=3)
  with pytest.raises(ValueError, match="fewer than one batch"):
    _loader(_examples(3))


# ---------------------------------------------------------------- evaluation batches
def test_eval_batches_cover_every_image_once_at_native_size():
  rng = np.random.default_rng(0)
  src = ListSource()
  for i in range(7):
    h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
    src.append({"image": np.full((h, w, 1), i, np.uint8), "mask": np.ones((h, w, 1), np.uint8),
                "id": f"im{i}"})
  loader = ip.EvalLoader(src, batch_size=2, mean=0.0, std=1.0, pad_multiple=32)
  seen = {}
  shapes = set()
  for batch in loader:
    shapes.add(batch["image"].shape[1:3])
    assert batch["image"].shape[0] == 2
    for k, sid in enumerate(batch["ids"]):
      if sid is None:
        assert batch["weight"][k] == 0 and batch["valid"][k].sum() == 0
        continue
      h, w = batch["sizes"][k]
      i = int(sid[2:])
      assert (h, w) == src[i]["mask"].shape[:2]
      assert batch["valid"][k].sum() == h * w == batch["mask"][k].sum()
      assert np.all(batch["image"][k, :h, :w] == i) and batch["image"][k, h:].sum() == 0
      seen[sid] = seen.get(sid, 0) + 1
  assert seen == {f"im{i}": 1 for i in range(7)}
  assert shapes <= {(a, b) for a in (32, 64, 96) for b in (32, 64, 96)}


def test_eval_batches_split_over_processes():
  src = _examples(5)
  whole = list(ip.EvalLoader(src, 4, 0.0, 1.0, 32))
  halves = [list(ip.EvalLoader(src, 4, 0.0, 1.0, 32, process_index=p, process_count=2))
            for p in range(2)]
  for k, batch in enumerate(whole):
    joined = np.concatenate([halves[0][k]["image"], halves[1][k]["image"]])
    np.testing.assert_array_equal(joined, batch["image"])
    assert halves[0][k]["ids"] + halves[1][k]["ids"] == batch["ids"]


# ---------------------------------------------------------------- synthetic
def test_synthetic_examples_are_deterministic_small_and_dim():
  a = synthetic.SyntheticSource("train", 40, seed=1)
  b = synthetic.SyntheticSource("train", 40, seed=1)
  np.testing.assert_array_equal(a[5]["image"], b[5]["image"])
  assert not np.array_equal(a[5]["image"], synthetic.SyntheticSource("val", 40, 1)[5]["image"])
  counts = []
  for i in range(40):
    ex = a[i]
    h, w, _ = ex["image"].shape
    assert 96 <= h <= 160 and 96 <= w <= 160 and ex["image"].dtype == np.uint8
    assert set(np.unique(ex["mask"])) <= {0, 1}
    labels, n = metrics.label_components(ex["mask"][..., 0] > 0)
    assert n == ex["num_targets"]
    counts.append(n)
    for k in range(1, n + 1):
      ys, xs = np.nonzero(labels == k)
      # targets are small: at most ~9 px across (two may touch, so allow a merged pair)
      assert np.ptp(ys) + 1 <= 18 and np.ptp(xs) + 1 <= 18
  assert 0 in counts and max(counts) >= 2  # some images without target, some with several


def test_synthetic_source_bounds_and_splits():
  with pytest.raises(IndexError, match="out of range"):
    synthetic.SyntheticSource("val", 3)[3]
  with pytest.raises(ValueError, match="not 'dev'"):
    synthetic.SyntheticSource("dev", 3)


def test_open_source_synthetic_and_unknown_names():
  cfg = tiny.get_config()
  src = ip.open_source(cfg.dataset, "val")
  assert len(src) == cfg.dataset.synthetic.num_val
  with pytest.raises(ValueError, match="split 'trainval' not in"):
    ip.open_source(cfg.dataset, "trainval")
  cfg.dataset.name = "imagenet"
  with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
    ip.open_source(cfg.dataset, "train")


def test_folder_layout_from_the_config(tmp_path):
  """A release with its own folder and split names, described in config.dataset.folder."""
  import shutil
  root = tmp_path / "release"
  src = os.path.join(ROOT, "tfds_sirst", "dummy_data", "folder")
  shutil.copytree(os.path.join(src, "images"), root / "IMG")
  shutil.copytree(os.path.join(src, "masks"), root / "LBL")
  (root / "lists").mkdir()
  shutil.copy(os.path.join(src, "trainval.txt"), root / "lists" / "tr.txt")
  shutil.copy(os.path.join(src, "test.txt"), root / "lists" / "te.txt")
  cfg = tiny.get_config().dataset
  cfg.name, cfg.manual_dir, cfg.data_dir = "folder", str(root), str(tmp_path / "tfds")
  cfg.folder = {"image_dir": "IMG", "mask_dir": "LBL", "split_dir": "lists",
                "split_files": [["train", "tr.txt"], ["test", "te.txt"]]}
  train_src, test_src = ip.open_source(cfg, "train"), ip.open_source(cfg, "test")
  assert (len(train_src), len(test_src)) == (5, 3)
  assert {test_src[i]["id"] for i in range(3)} == {"000005", "000006", "000007"}


class _CountingSource:
  """A source that counts the examples decoded (``image_size`` passes through)."""

  def __init__(self, base):
    self.base, self.decoded = base, 0

  def __len__(self):
    return len(self.base)

  def image_size(self, i):
    return self.base.image_size(i)

  def __getitem__(self, i):
    self.decoded += 1
    return self.base[i]


def test_eval_plan_reads_stored_sizes_without_decoding(tmp_path):
  """EvalLoader's buckets come from each source's stored size: the tfds ``size`` feature (read
  with the pixels left undecoded) and the synthetic seed; the plan is the one decoding gives."""
  from configs import folder
  cfg = folder.get_config().dataset
  cfg.manual_dir = os.path.join(ROOT, "tfds_sirst", "dummy_data", "folder")
  cfg.data_dir = str(tmp_path / "tfds")
  tfds_src = ip.open_source(cfg, "train")
  synth = ip.open_source(tiny.get_config().dataset, "val")
  for source in (tfds_src, synth):
    assert [source.image_size(i) for i in range(len(source))] == [
        source[i]["mask"].shape[:2] for i in range(len(source))]
    counting = _CountingSource(source)
    plan = ip.EvalLoader(counting, 2, 0.0, 1.0, pad_multiple=8).plan
    assert counting.decoded == 0
    decoded = ip.EvalLoader(_Decoded(source), 2, 0.0, 1.0, pad_multiple=8).plan
    assert plan == decoded and len({shape for shape, _ in plan}) > 1


def test_eval_cache_reads_the_split_once_within_its_budget():
  """Validation repeats its split: with ``cache_bytes`` the first complete pass is kept (read-only)
  and later passes decode nothing and yield the same batches; past the budget, or after a pass
  left unfinished, every pass reads the split again."""
  src = ListSource()
  for i in range(5):
    src.append({"image": np.full((20 + 3 * i, 30, 1), i, np.uint8),
                "mask": np.ones((20 + 3 * i, 30, 1), np.uint8), "id": f"im{i}"})
  src.image_size = lambda i: src[i]["mask"].shape[:2]  # sized without decoding, as tfds is
  plain = list(ip.EvalLoader(src, 2, 0.0, 1.0, pad_multiple=16))
  bytes_needed = sum(v.nbytes for b in plain for v in b.values() if isinstance(v, np.ndarray))

  counting = _CountingSource(src)
  cached = ip.EvalLoader(counting, 2, 0.0, 1.0, pad_multiple=16, cache_bytes=bytes_needed)
  next(iter(cached))  # an unfinished pass (one batch of 2 images) keeps nothing
  first, second = list(cached), list(cached)
  assert counting.decoded == 2 + 5 and len(first) == len(plain) == len(second)
  for a, b, c in zip(plain, first, second):
    assert a["ids"] == b["ids"] == c["ids"]
    for k in ("image", "mask", "valid", "weight"):
      np.testing.assert_array_equal(a[k], c[k])
  assert not second[0]["image"].flags.writeable

  counting = _CountingSource(src)
  over = ip.EvalLoader(counting, 2, 0.0, 1.0, pad_multiple=16, cache_bytes=bytes_needed - 1)
  list(over), list(over)
  assert counting.decoded == 10 and over._cache is None


class _Decoded:
  """A source without ``image_size``: EvalLoader sizes it by decoding every example."""

  def __init__(self, base):
    self.base = base

  def __len__(self):
    return len(self.base)

  def __getitem__(self, i):
    return self.base[i]


def test_folder_config_trains_on_its_splits(tmp_path):
  """configs/folder.py: the `folder` layout (trainval.txt, test.txt; no val list) starts a run;
  configs/sirst.py's val eval split is what failed there."""
  from configs import folder, sirst
  from eaau_jax import train
  release = os.path.join(ROOT, "tfds_sirst", "dummy_data", "folder")
  config = folder.get_config()
  config.dataset.manual_dir, config.dataset.data_dir = release, str(tmp_path / "tfds")
  train_src, eval_src, mean, std = train.data_and_stats(config)
  assert (len(train_src), len(eval_src)) == (5, 3) and std > 0
  assert config.dataset.eval_split == config.dataset.test_split == "test"
  old = sirst.get_config()
  old.dataset.name, old.dataset.manual_dir = "folder", release
  old.dataset.data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match="no split 'val'"):
    train.data_and_stats(old)


# ---------------------------------------------------------------- real SIRST
@needs_sirst
@pytest.mark.parametrize("folder,counts", [
    ("idx_320", {"train": 160, "val": 64, "test": 96, "trainval": 224}),  # 5:2:3, the paper's
    ("idx_427", {"train": 256, "val": 85, "test": 86, "trainval": 341})])
def test_sirst_split_folders_through_the_pipeline(sirst_dataset, folder, counts):
  cfg = sirst_dataset
  cfg.split_folder = folder
  got = {}
  for split in counts:
    src = ip.open_source(cfg, split)
    got[split] = len(src)
    ids = {src[i]["id"] for i in range(len(src))}
    with open(os.path.join(SIRST, folder, f"{split}.txt")) as f:
      assert ids == {line.strip() for line in f if line.strip()}
  assert got == counts
  if folder != "idx_427":
    return
  test = ip.open_source(cfg, "test")
  for i in range(len(test)):
    ex = test[i]
    png = np.asarray(Image.open(os.path.join(SIRST, "masks", ex["id"] + "_pixels0.png")))
    assert ex["mask"].sum() == (png > 0).sum(), ex["id"]
  # Normalisation: the pooled pixel mean/std of the train PNGs (as luma), computed independently.
  mean, std = ip.mean_std(ip.open_source(cfg, "train"))
  with open(os.path.join(SIRST, "idx_427", "train.txt")) as f:
    pixels = np.concatenate([
        np.asarray(Image.open(os.path.join(SIRST, "images", line.strip() + ".png")).convert("L"),
                   np.float64).ravel() for line in f if line.strip()])
  assert mean == pytest.approx(pixels.mean()) and std == pytest.approx(pixels.std())


def test_unknown_split_folder_is_an_error():
  cfg = tiny.get_config().dataset
  cfg.name, cfg.split_folder = "sirst", "idx_999"
  with pytest.raises(ValueError, match=r"config.dataset.split_folder: 'idx_999'"):
    ip.tfds_builder(cfg)
