"""``--mode=eval`` and ``--mode=predict``: a restored checkpoint on a split, or on a folder of images."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image
from scipy import ndimage

from eaau_jax import checkpoints, input_pipeline, metrics, models, progress, summary, train
from eaau_jax import xla_options
from eaau_jax.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def _model_differences(a: dict, b: dict) -> list[str]:
  norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v
  return [f"{k}: config {norm(a.get(k))!r} vs checkpoint {norm(b.get(k))!r}"
          for k in sorted(set(a) | set(b)) if norm(a.get(k)) != norm(b.get(k))]


def restore(checkpoint: str, mesh, config: Optional[ml_collections.ConfigDict] = None):
  """(state, checkpoint config, meta, step) of a checkpoint; ``config``'s model must match it.
  The state computes in ``config``'s compute dtype where one is given (a bf16-trained checkpoint
  evaluated in float32, or the reverse), else in the checkpoint's: the weights are float32 in both,
  the dtype is how the step computes, not what it restores."""
  manager, step = checkpoints.locate(checkpoint)
  meta = checkpoints.read_meta(manager, step)
  ckpt_config = checkpoints.upgrade_config(meta["config"])
  if config is not None:
    diff = _model_differences(config.model.to_dict(), ckpt_config.model.to_dict())
    if config.input.channels != ckpt_config.input.channels:
      diff.append(f"input.channels: config {config.input.channels} vs checkpoint "
                  f"{ckpt_config.input.channels}")
    if diff:
      raise checkpoints.CheckpointError(
          "the config's model differs from the checkpoint's: " + "; ".join(diff),
          f"{manager.directory}/{step}", "leave out --config to use the checkpoint's own")
  model = models.model_from_config(ckpt_config.model)
  template = train.abstract_train_state(ckpt_config, model)
  state = checkpoints.restore_state(manager, step, template, mesh)
  if config is not None:
    state = state.replace(apply_fn=train.model_apply(config, model))
  logging.info("Restored %s/%d (%d params)", manager.directory, step, meta["num_params"])
  return state, ckpt_config, meta, step


def _plot_curves(curves: dict, result: dict, path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
  a.plot(curves["recall"], curves["precision"], ".-")
  a.set(xlabel="recall", ylabel="precision", title=f"PR (AP {result['ap']:.4f})", xlim=(0, 1),
        ylim=(0, 1.02))
  b.plot(curves["fpr"], curves["tpr"], ".-")
  b.set(xlabel="false positive rate", ylabel="true positive rate", xscale="log",
        title=f"ROC (AUC {result['roc_auc']:.4f})")
  for ax in (a, b):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


TIMING_BATCHES = 3  # ms/image: the median over (at most) this many first batches
TIMING_BUDGET_S = 30.0  # ... or fewer, once this many seconds of forward runs are timed
RERUN_BELOW_S = 1.0  # a first run faster than this is repeated and the repeat timed


def _seconds(fn, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def ms_per_image(forward, state, batches, place) -> float:
  """Median over the first ``TIMING_BATCHES`` batches of the jitted ``forward(state, image,
  valid)``'s time per real image; ``place({"image", "valid"})`` puts a batch's arrays where
  ``state`` is (on the mesh in eval, on one device in compare). The one timer of the ms/image of
  ``--mode=eval`` and ``--mode=compare``.

  Each shape is compiled ahead of time, untimed. A batch whose first run takes under
  ``RERUN_BELOW_S`` is run again and the second run is timed (one-time costs could dominate a
  fast first run). A slower first run is kept, and timing stops once ``TIMING_BUDGET_S`` of runs
  are measured: a 512 x 512 batch of 8 of ACM-U-Net takes seconds on a 2-core CPU, IPI and RIPT
  minutes, and three batches run twice each cost half as much again as their whole evaluation."""
  compiled, times, spent = {}, [], 0.0
  for batch in itertools.islice(iter(batches), TIMING_BATCHES):
    placed = place({"image": batch["image"], "valid": batch["valid"]})
    x, v = placed["image"], placed["valid"]
    key = (x.shape, v.shape)
    if key not in compiled:
      compiled[key] = forward.lower(state, x, v).compile()
    seconds = _seconds(compiled[key], state, x, v)
    if seconds < RERUN_BELOW_S:
      seconds = _seconds(compiled[key], state, x, v)
    times.append(seconds / max(batch["weight"].sum(), 1) * 1e3)
    spent += seconds
    if spent >= TIMING_BUDGET_S:
      break
  return float(np.median(times))


def _eval_ms_per_image(state, loader, mesh) -> float:
  """``--mode=eval``'s ms/image: the model's forward on the mesh, batches as the eval loads them."""
  return ms_per_image(xla_options.jit(train.predict_logits), state, loader,
                      lambda arrays: input_pipeline.to_global(mesh, arrays))


PROTOCOL_TEXT = {
    "acm": "every image resized to {base} x {base} (bilinear; mask nearest), ACM's testval "
           "transform: the protocol of the paper's Table 3",
    "native": "native resolution (no resizing)",
}
METRIC_NAMES = [("IoU", "iou"), ("nIoU", "niou"), ("Pd", "pd"), ("Fa", "fa"), ("AP", "ap"),
                ("F-measure (b2=0.3)", "f_measure"), ("F-area", "f_area"),
                ("ROC AUC", "roc_auc"), ("params", "num_params"),
                ("inference ms/image", "ms_per_image")]


def _write_report(report: dict, curves: dict, stem: str):
  """``stem``.json, .md and _curves.png of one evaluation."""
  result = report["metrics"]
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=1)
  rows = "\n".join(f"| {n} | {result[k]:.6g} |" for n, k in METRIC_NAMES)
  with open(stem + ".md", "w") as f:
    f.write(f"# {report['dataset']} / {report['split']}, {report['protocol']} protocol: "
            f"{report['checkpoint']}\n\n| metric | value |\n|---|---:|\n{rows}\n\n"
            f"{int(result['images'])} images, {result['targets']} targets, evaluated "
            f"{report['protocol_text']}; computed in {report.get('compute_dtype', 'float32')}, "
            f"inference timed on {report['device']}.\n\n"
            f"![PR and ROC]({os.path.basename(stem)}_curves.png)\n")
  _plot_curves(curves, result, stem + "_curves.png")


def run_eval(checkpoint: str, split: Optional[str], output_dir: Optional[str],
             config: Optional[ml_collections.ConfigDict] = None,
             protocols: Optional[list] = None, import_weights: Optional[str] = None) -> dict:
  """Evaluates a checkpoint on a split under each protocol (default: the config's), writing
  eval_<split>_<protocol>.json/.md and PR/ROC plots. Returns {protocol: report}.
  ``import_weights``: evaluate a released ``.params`` file under ``config`` instead (baselines)."""
  for p in protocols or []:  # a mistyped flag fails before the checkpoint is read
    input_pipeline.check_protocol(p, "--protocol")
  mesh = input_pipeline.make_mesh()
  if import_weights:
    from eaau_jax import baselines  # pylint: disable=g-import-not-at-top
    if config is None:
      raise ConfigError("--import-weights needs the released net's config", "--config",
                        "e.g. --config configs/acm_unet.py")
    state, meta = baselines.imported_state(config, import_weights, mesh)
    ckpt_config, step, checkpoint = config, 0, os.path.abspath(import_weights)
  else:
    state, ckpt_config, meta, step = restore(checkpoint, mesh, config)
  config = config if config is not None else ckpt_config
  protocols = protocols or [input_pipeline.check_protocol(config.eval.protocol)]
  split = split or config.dataset.test_split
  train.check_divisible(config)
  source = input_pipeline.open_source(config.dataset, split)
  _, p_eval = train.compile_steps(config, mesh)
  output_dir = output_dir or os.path.join(os.path.abspath(os.path.expanduser(checkpoint)), "eval")
  os.makedirs(output_dir, exist_ok=True)
  reports = {}
  for protocol in protocols:
    loader = train.make_eval_loader(config, source, meta["mean"], meta["std"], protocol)
    result, _, curves = train.evaluate(state, loader, p_eval, mesh, desc=f"{split}, {protocol}")
    result["ms_per_image"] = _eval_ms_per_image(state, loader, mesh)
    result["num_params"] = meta["num_params"]
    report = {"checkpoint": f"{checkpoint} (step {step})", "dataset": config.dataset.name,
              "split_folder": config.dataset.get("split_folder"), "split": split,
              "protocol": protocol,
              "protocol_text": PROTOCOL_TEXT[protocol].format(base=config.input.base_size),
              "device": jax.devices()[0].device_kind,
              "compute_dtype": config.get("compute_dtype", "float32"), "metrics": result,
              "metric_definitions": metrics.__doc__.split("``SegmentationMetrics")[0]}
    stem = os.path.join(output_dir, f"eval_{split}_{protocol}")
    _write_report(report, curves, stem)
    logging.info("eval %s, %s protocol: %s -> %s.{json,md}", split, protocol,
                 {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}, stem)
    reports[protocol] = report
  summary.emit(summary.evaluation(checkpoint, split, reports, output_dir))
  return reports


def list_images(input_dir: str) -> list[str]:
  if not os.path.isdir(input_dir):
    raise DataError("--input is not a directory", input_dir)
  files = sorted(f for f in os.listdir(input_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found", input_dir)
  return [os.path.join(input_dir, f) for f in files]


def overlay(image: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """RGB uint8: the image as the model read it (grey, or RGB for RGB checkpoints), predicted
  target pixels in red."""
  rgb = (image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)).astype(np.uint8)
  rgb[pred] = (255, 0, 0)
  return rgb


def threshold_logit(threshold: float) -> float:
  """``--threshold`` is a score (sigmoid of the logit) in (0, 1); it is applied as the logit
  log(t / (1 - t)), exactly, where a trained soft-IoU model's saturated scores could not
  separate it (0.5 is logit > 0, the operating point of every metric)."""
  if not 0.0 < threshold < 1.0:
    raise ConfigError(f"{threshold!r} is not a score in (0, 1)", "--threshold",
                      "0.5 (the default) is logit > 0, the operating point of the metrics")
  return math.log(threshold / (1.0 - threshold))


def detections(logits: np.ndarray, cut: float = 0.0) -> list[dict]:
  """The targets of one image's (H, W) logits: each 8-connected component of ``logits > cut``,
  in raster order of its first pixel, as {centroid [x, y] (mean pixel position), bbox
  [x_min, y_min, x_max, y_max] (inclusive pixel indices), area (pixels), peak_score (sigmoid of
  its highest logit), peak_logit}. x is the column, y the row, from the top left pixel."""
  labels, _ = metrics.label_components(logits > cut)
  found = []
  for k, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
    mine = labels[rows, cols] == k  # the box may hold pixels of other targets
    ys, xs = np.nonzero(mine)
    peak = float(logits[rows, cols][mine].max())
    found.append({"centroid": [round(float(xs.mean()) + cols.start, 3),
                               round(float(ys.mean()) + rows.start, 3)],
                  "bbox": [cols.start, rows.start, cols.stop - 1, rows.stop - 1],
                  "area": int(len(xs)), "peak_score": 1.0 / (1.0 + math.exp(-peak)),
                  "peak_logit": peak})
  return found


def image_logits(forward, state, loader: input_pipeline.EvalLoader, ex: dict) -> np.ndarray:
  """(H, W) logits of one read example at its own size: the evaluation preprocessing
  (``loader.single``), and under ``acm`` the logits resized back (bilinear)."""
  batch = loader.single(ex)
  logits = np.asarray(forward(state, jnp.asarray(batch["image"]), jnp.asarray(batch["valid"])))
  (h, w), (oh, ow) = batch["sizes"][0], batch["orig_sizes"][0]
  out = logits[0, :h, :w, 0]
  if (h, w) != (oh, ow):
    out = np.asarray(Image.fromarray(out).resize((ow, oh), Image.BILINEAR))
  return out


def run_predict(checkpoint: str, input_dir: str, output_dir: str, threshold: float = 0.5,
                protocol: Optional[str] = None) -> dict:
  """Writes <name>_mask.png (0/255), <name>_overlay.png and detections.json for the images of
  ``input_dir``, one image in memory at a time; goes on past unreadable files and lists them.

  A pixel is a target where its score is above ``threshold`` (``threshold_logit``).
  detections.json: {checkpoint, protocol, threshold, threshold_logit, images: [{file, height,
  width, targets: [``detections``]}] (one image per line, written as each is done),
  unreadable: [{file, error}]}. Returns {"images", "targets", "failed", "detections"}.
  """
  cut = threshold_logit(threshold)
  paths = list_images(input_dir)
  mesh = input_pipeline.make_mesh(jax.devices()[:1])
  state, config, meta, step = restore(checkpoint, mesh)
  rgb = input_pipeline.dataset_color(config.dataset) != "grey"  # read as the model was trained
  source = input_pipeline.FolderSource(paths, rgb)
  loader = train.make_eval_loader(config, source, meta["mean"], meta["std"], protocol, batch_size=1)
  forward = xla_options.jit(train.predict_logits)
  name = f"{os.path.abspath(os.path.expanduser(checkpoint))} (step {step})"
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, "detections.json")
  counts = {"images": 0, "targets": 0, "with_targets": 0}
  failed = []
  with open(path, "w") as f:
    head = {"checkpoint": name, "protocol": loader.protocol, "threshold": threshold,
            "threshold_logit": cut}
    f.write(json.dumps(head)[:-1] + ', "images": [')
    for i in progress.bar(range(len(paths)), len(paths), "predict", "image"):
      try:
        ex = source[i]
      except DataError as e:  # one bad file must not cost the rest of the folder
        logging.warning("skipped: %s", e)
        failed.append({"file": os.path.basename(paths[i]), "error": e.what})
        continue
      logits = image_logits(forward, state, loader, ex)
      _write_prediction(paths[i], ex["image"], logits > cut, output_dir)
      found = detections(logits, cut)
      f.write(("," if counts["images"] else "") + "\n" + json.dumps(
          {"file": os.path.basename(paths[i]), "height": logits.shape[0],
           "width": logits.shape[1], "targets": found}))
      counts = {"images": counts["images"] + 1, "targets": counts["targets"] + len(found),
                "with_targets": counts["with_targets"] + bool(found)}
    f.write('\n], "unreadable": ' + json.dumps(failed) + "}\n")
  summary.emit(summary.prediction(name, loader.protocol, threshold, counts, failed, output_dir,
                                  path))
  return {**counts, "failed": failed, "detections": path}


def _write_prediction(path: str, image: np.ndarray, pred: np.ndarray, output_dir: str) -> str:
  stem = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0])
  Image.fromarray((pred * 255).astype(np.uint8)).save(stem + "_mask.png")
  Image.fromarray(overlay(image, pred)).save(stem + "_overlay.png")
  return stem
