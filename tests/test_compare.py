"""Baselines through the shared pipeline (issue 8, phase 2): RGB / ImageNet input, the baseline
configs trained and evaluated, released weights imported and evaluated through main.py, and the
compare report (eaau_jax/compare.py) against independent references."""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from eaau_jax import baselines, classical, compare, evaluate, input_pipeline, train
from tests.conftest import SIRST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACM_WEIGHTS = os.path.join(ROOT, "..", "shared", "weights", "acm",
                           "0.7442-ResUNet_AsymBi_DENTIST_Puma1_GPU_0-IoU-288-best.params")
BASELINE_CONFIGS = ("acm_unet", "acm_fpn", "alcnet", "unet", "fpn")


class _RGBFake:
  """Examples with unequal RGB channels (as 159 SIRST images), in the tfds 1.1.0 layout."""

  def __init__(self, n=3, size=(20, 27)):
    rng = np.random.default_rng(0)
    self.rgb = [rng.integers(0, 256, size + (3,), dtype=np.uint8) for _ in range(n)]

  def __len__(self):
    return len(self.rgb)

  def __getitem__(self, i):
    grey = self.rgb[i].mean(-1, keepdims=True).astype(np.uint8)
    mask = np.zeros(grey.shape, np.uint8)
    mask[5:7, 5:7] = 1
    return {"image": grey, "image_rgb": self.rgb[i], "mask": mask, "id": f"x{i}"}


def test_rgb_imagenet_input_is_acms_normalisation():
  """rgb_imagenet: the image_rgb pixels, resized per channel, then baselines.imagenet_normalize
  (ACM's ToTensor + Normalize), whatever config.dataset.mean/std say."""
  fake = _RGBFake()
  src = input_pipeline._RGBSource(fake, imagenet=True)
  mean, std = input_pipeline.mean_std(src)
  loader = input_pipeline.EvalLoader(src, 3, mean, std, 1, 3, protocol="acm", base_size=16)
  batch = next(iter(loader))
  for k in range(3):
    resized = np.stack([np.asarray(Image.fromarray(fake.rgb[k][..., c]).resize((16, 16),
                                                                                Image.BILINEAR))
                        for c in range(3)], -1)
    np.testing.assert_allclose(batch["image"][k], baselines.imagenet_normalize(resized),
                               atol=1e-5)
  assert input_pipeline._RGBSource(fake, imagenet=False).normalization is None


def test_rgb_augment_is_the_grey_transform_per_channel():
  """An RGB image of three equal channels augments to three copies of the grey augmentation."""
  grey = np.random.default_rng(1).integers(0, 256, (30, 41, 1), dtype=np.uint8)
  mask = (grey > 200).astype(np.uint8)
  a, m = input_pipeline.augment(grey, mask, np.random.default_rng(5), 24, 32, blur_p=1.0)
  b, n = input_pipeline.augment(np.repeat(grey, 3, -1), mask, np.random.default_rng(5), 24, 32,
                                blur_p=1.0)
  assert b.shape == (24, 24, 3)
  np.testing.assert_array_equal(m, n)
  for c in range(3):
    np.testing.assert_array_equal(b[..., c], a[..., 0])


def tiny_baseline(name: str):
  """configs/<name>.py shrunk to configs/tiny.py's synthetic setup, one block per stage."""
  from configs import tiny
  config = importlib.import_module(f"configs.{name}").get_config()
  small = tiny.get_config()
  for field in ("dataset", "batch_size", "num_epochs", "eval_every_epochs", "log_every_steps",
                "checkpoint_every_steps", "num_eval_images_logged"):
    config[field] = small[field]
  config.dataset.color = "rgb"  # synthetic images are grey: repeated x 3
  for field in ("crop_size", "base_size", "eval_batch_size", "workers"):
    config.input[field] = small.input[field]
  config.dataset.synthetic.size_range = (40, 41)  # few native shapes: one compile each
  config.num_epochs = 1  # 4 steps and one validation: enough to exercise the code
  config.model.layers = (1, 1, 1)
  config.model.channels = (4, 8, 8, 8)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """{name: workdir} of tiny baseline runs, trained on first use."""
  runs = {}

  def get(name):
    if name not in runs:
      workdir = str(tmp_path_factory.mktemp(name))
      train.train_and_evaluate(tiny_baseline(name), workdir)
      runs[name] = workdir
    return runs[name]
  return get


@pytest.mark.parametrize("name", BASELINE_CONFIGS)
def test_baseline_config_trains_and_evaluates(name, trained, tmp_path):
  """Each baseline config, through the unforked training and --mode=eval code; native batches
  hold one exact size (eval_pad_multiple = 1), so no padding ever reaches the net."""
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.model.name == name and config.input.channels == 3
  assert config.input.eval_pad_multiple == 1 and config.dataset.color == "rgb"
  workdir = trained(name)
  protocols = ["acm", "native"] if name == "alcnet" else ["acm"]  # native: a compile per size
  reports = evaluate.run_eval(workdir, "test", str(tmp_path), None, protocols)
  for p in protocols:
    m = reports[p]["metrics"]
    assert m["images"] == 8 and 0.0 <= m["iou"] <= 1.0 and np.isfinite(m["ap"])
  if "native" in protocols:
    cfg = tiny_baseline(name)
    loader = train.make_eval_loader(cfg, input_pipeline.open_source(cfg.dataset, "test"), 0.0,
                                    1.0, "native")
    for batch in loader:
      assert batch["valid"][batch["weight"] > 0].all()  # nothing padded


def test_compare_report_matches_eval_and_an_independent_detector_score(trained, tmp_path):
  """The compare row of a checkpoint equals --mode=eval's figures; top-hat's IoU equals a direct
  NumPy count of the paper's adaptive mask on each (acm-resized) grey image; PNGs are written."""
  workdir = trained("unet")
  cfg = tiny_baseline("unet")
  report = compare.run([("unet", workdir)], cfg.dataset, "test", "acm", cfg.input.base_size,
                       ["tophat"], str(tmp_path), grid_images=2)
  rows = {r["label"]: r["metrics"] for r in report["rows"]}
  ours = evaluate.run_eval(workdir, "test", str(tmp_path / "eval"), None, ["acm"])["acm"]
  for k in ("iou", "niou", "pd", "fa", "ap", "f_area"):
    assert rows["unet"][k] == pytest.approx(ours["metrics"][k], abs=1e-9), k
  assert rows["unet"]["mb"] == pytest.approx(rows["unet"]["num_params"] * 4e-6)
  inter = union = 0
  source = input_pipeline.open_source(cfg.dataset, "test")
  for i in range(len(source)):
    image, mask = input_pipeline.eval_transform(source[i]["image"], source[i]["mask"], "acm",
                                                cfg.input.base_size)
    pred = np.asarray(classical.adaptive_mask(classical.top_hat(image[..., 0].astype(np.float32))))
    truth = mask[..., 0] > 0
    inter, union = inter + (pred & truth).sum(), union + (pred | truth).sum()
  assert rows["tophat"]["iou"] == pytest.approx(inter / union, abs=1e-9)
  for r in report["rows"]:  # logit 0 is on the curve grid: the best threshold is at least as good
    assert compare.best_threshold_iou(r["curves"])[0] >= r["metrics"]["iou"] - 1e-9
  for png in report["pngs"]:
    assert os.path.getsize(tmp_path / png) > 1000
  md = open(tmp_path / "compare_test_acm.md").read()
  assert "| unet |" in md and "0.736" in md  # the paper's U-Net IoU beside ours
  # a second run (detectors only), merged with the first: one table of both
  compare.run([], cfg.dataset, "test", "acm", cfg.input.base_size, ["fkrw"], str(tmp_path / "b"),
              grid_images=1)
  merged = compare.merge_reports([str(tmp_path / "compare_test_acm.json"),
                                  str(tmp_path / "b" / "compare_test_acm.json")],
                                 str(tmp_path / "m" / "compare_test_acm"))
  assert [r["label"] for r in merged["rows"]] == ["unet", "tophat", "fkrw"]
  assert all(os.path.exists(tmp_path / "m" / p) for p in merged["pngs"])


def test_native_detector_batches_hold_no_blank_fillers():
  """Natively a detector's batches are one image per device: each SIRST size is nearly unique, and
  a batch of 8 was one image and 7 blanks, all scored (8x the work of the slow detectors)."""
  cfg = tiny_baseline("unet")
  native = compare.detector_method("tophat", cfg.dataset, "test", "native", cfg.input.base_size)
  assert native.loader.batch_size == jax.device_count()
  batches = list(native.loader)
  assert sum(b["weight"].sum() for b in batches) == len(native.loader.source)
  if jax.device_count() == 1:
    assert all(b["weight"].tolist() == [1.0] for b in batches)
  acm = compare.detector_method("tophat", cfg.dataset, "test", "acm", cfg.input.base_size)
  assert acm.loader.batch_size == 8
  for name in ("ipi", "ript"):  # batch-sensitive float32 solvers: one image per device always
    acm = compare.detector_method(name, cfg.dataset, "test", "acm", cfg.input.base_size)
    assert acm.loader.batch_size == jax.device_count()


def test_merge_into_an_earlier_merge_in_place_keeps_every_grid(tmp_path):
  """Merging new rows into a merged report where it lies (as the slow detectors' rows join
  benchmarks/results/compare): the earlier parts' grids keep their names and contents, the new
  part's grid is numbered after them."""
  cfg = tiny_baseline("unet")
  for d in ("tophat", "fkrw", "maxmedian"):
    compare.run([], cfg.dataset, "test", "acm", cfg.input.base_size, [d], str(tmp_path / d),
                grid_images=1)
  part = lambda d: str(tmp_path / d / "compare_test_acm.json")
  stem = str(tmp_path / "m" / "compare_test_acm")
  compare.merge_reports([part("tophat"), part("fkrw")], stem)
  merged = compare.merge_reports([stem + ".json", part("maxmedian")], stem)
  assert [r["label"] for r in merged["rows"]] == ["tophat", "fkrw", "maxmedian"]
  grids = [p for p in merged["pngs"] if "_grid" in p]
  assert grids == [f"compare_test_acm_grid{i}.png" for i in (1, 2, 3)]
  for d, g in zip(("tophat", "fkrw", "maxmedian"), grids):
    with open(tmp_path / d / "compare_test_acm_grid.png", "rb") as a, open(tmp_path / "m" / g,
                                                                           "rb") as b:
      assert a.read() == b.read(), g
  with open(stem + ".json") as f:
    assert json.load(f)["pngs"] == merged["pngs"]

  # A method rerun (after a fix) replaces its earlier row in place; the others stay as they were.
  with open(part("fkrw")) as f:
    rerun = json.load(f)
  rerun["rows"][0]["metrics"]["ap"] = -1.0  # marks the rerun's row
  with open(tmp_path / "fkrw_rerun.json", "w") as f:
    json.dump(rerun, f)
  os.symlink(tmp_path / "fkrw" / "compare_test_acm_grid.png", tmp_path / "compare_test_acm_grid.png")
  again = compare.merge_reports([stem + ".json", str(tmp_path / "fkrw_rerun.json")], stem)
  assert [r["label"] for r in again["rows"]] == ["tophat", "fkrw", "maxmedian"]
  assert [r["metrics"]["ap"] for r in again["rows"]][1] == -1.0
  assert again["rows"][0] == merged["rows"][0] and again["rows"][2] == merged["rows"][2]


def test_best_threshold_iou_by_hand():
  # IoU = P R / (P + R - P R): 0.2, 0.3 / 0.8 = 0.375, 0.2
  curves = {"thresholds": [2.0, 0.0, -2.0], "precision": [1.0, 0.5, 0.2], "recall": [0.2, 0.6, 1.0]}
  assert compare.best_threshold_iou(curves) == (pytest.approx(0.375), 0.0)
  assert compare.best_threshold_iou({**curves, "precision": [0.0] * 3})[0] == 0.0


@pytest.mark.skipif(not (os.path.isfile(ACM_WEIGHTS) and os.path.isdir(SIRST)),
                    reason="released ACM weights or the SIRST copy absent")
def test_released_acm_unet_imported_and_evaluated_through_main(sirst_dataset, tmp_path):
  """main.py --mode=import, then --mode=eval --workdir on idx_320 test under acm: the MXNet net's
  IoU 9881 / 13289 = 0.7435 (benchmarks/acm_weights_check.py, ../shared/docs/protocol.md)."""
  data = [f"--config.dataset.manual_dir={SIRST}",
          f"--config.dataset.data_dir={sirst_dataset.data_dir}"]
  workdir = str(tmp_path / "acm_unet")
  main = [sys.executable, os.path.join(ROOT, "main.py"), f"--workdir={workdir}"]
  subprocess.run(main + ["--mode=import", "--config=" + os.path.join(ROOT, "configs/acm_unet.py"),
                         f"--import-weights={ACM_WEIGHTS}"] + data, check=True, cwd=ROOT)
  subprocess.run(main + ["--mode=eval", "--protocol=acm"], check=True, cwd=ROOT)
  with open(os.path.join(workdir, "eval", "eval_test_acm.json")) as f:
    m = json.load(f)["metrics"]
  print(f"\nimported ACM-U-Net, idx_320 test, acm: IoU {m['iou']:.4f} nIoU {m['niou']:.4f} "
        f"Pd {m['pd']:.4f} Fa {m['fa'] * 1e6:.2f}e-6")
  assert m["images"] == 96
  assert abs(m["iou"] - 0.7435) <= 0.0005
  assert abs(m["niou"] - 0.7235) <= 0.002


def test_folder_source_reads_rgb_for_rgb_checkpoints(tmp_path):
  """--mode=predict of an RGB checkpoint reads images as ACM did (convert('RGB')); grey as before.
  """
  rgb = np.random.default_rng(2).integers(0, 256, (9, 13, 3), dtype=np.uint8)
  path = str(tmp_path / "a.png")
  Image.fromarray(rgb).save(path)
  np.testing.assert_array_equal(input_pipeline.FolderSource([path], rgb=True)[0]["image"], rgb)
  grey = input_pipeline.FolderSource([path])[0]
  assert grey["image"].shape == (9, 13, 1) and grey["mask"].shape == (9, 13, 1)


def _counting_method(counter, seconds_per_run, n_batches=4):
  """A Method whose forward counts its executions (a host callback) and advances a fake clock."""
  def forward(_, images, valid):
    jax.debug.callback(lambda: counter.append(seconds_per_run))
    return images * valid

  batches = [{"image": np.ones((2, 4, 4, 1), np.float32), "valid": np.ones((2, 4, 4, 1), np.float32),
              "weight": np.array([1.0, 1.0 if i else 0.0], np.float32)} for i in range(n_batches)]
  return compare.Method("fake", "classical", "fake", batches, None, jax.jit(forward))


@pytest.mark.parametrize("per_run,runs,timed", [(0.001, 6, 3), (40.0, 1, 1), (12.0, 3, 3),
                                                (20.0, 2, 2)])
def test_ms_per_image_reruns_fast_batches_and_stops_slow_ones_at_the_budget(monkeypatch, per_run,
                                                                             runs, timed):
  """Fast first runs are repeated and the repeat timed (TIMING_BATCHES batches); slow ones are
  timed once each and timing stops once TIMING_BUDGET_S (30 s) are spent, so a low-rank detector
  is not run for minutes more than its evaluation. The clock advances by what the forward ran."""
  counter, clock = [], [0.0]
  monkeypatch.setattr(evaluate.time, "perf_counter", lambda: clock[0] + sum(counter))
  method = _counting_method(counter, per_run)
  ms = compare.ms_per_image(method, jax.devices("cpu")[0])
  assert len(counter) == runs
  # the first batch holds one real image (weight 0 for its filler), the rest two
  expected = sorted([per_run * 1e3] + [per_run * 1e3 / 2] * (timed - 1))
  assert ms == pytest.approx(float(np.median(expected)))
