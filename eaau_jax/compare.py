"""``--mode=compare``: checkpoints (trained or imported) and classical detectors on one split, under
one protocol, as one report beside the paper's Table 3 (and its Figures 5 and 9).

  python main.py --mode compare --workdir OUT --config configs/sirst.py --protocol acm \
      --checkpoints acm_unet=DIR1,alcnet=DIR2 [--detectors fast|all|tophat,mpcm,...]

Every method goes through the shared scoring: ``train.evaluate`` over an
``input_pipeline.EvalLoader`` (``metrics.SegmentationMetrics`` + ``metrics.PdFa``; logit > 0 is
the detection). A checkpoint is evaluated with its own input (its ``dataset.color``, channels,
normalisation from its meta, its eval padding) on the compare config's dataset, split and
``input.base_size``. A classical detector scores
the grey image (0..255), unpadded (``pad_multiple`` 1, batches of one exact size), and
``classical.score_to_logits`` turns the scores into logits > 0 exactly on the paper's adaptive mask.

Detectors: ``fast`` (default) = tophat, maxmedian, rlcm, mpcm, fkrw (<= ~50 ms/image on a CPU core
at native size); ligp, mgdwe, ipi and ript take 0.3 to 10+ s/image on a CPU: name them, or ``all``.

Writes ``compare_<split>_<protocol>.{md,json}`` and ``_pr.png``, ``_roc.png``, ``_farea.png``
(Figure 5's bars) and ``_grid.png`` (Figure 9: image, mask, each method's detection).
ms/image: median over the first few batches of the jitted forward (compile excluded) on the CPU,
and on the GPU when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from eaau_jax import checkpoints as ckpts
from eaau_jax import classical, errors, evaluate, input_pipeline, metrics, train, xla_options

FAST_DETECTORS = ("tophat", "maxmedian", "rlcm", "mpcm", "fkrw")

# Table 3 of the paper (SIRST): (IoU, nIoU, CPU s/image, "Para" as MB of fp32 weights).
# The CNN rows are copied there from the ACM and ALCNet papers (their `acm` protocol).
PAPER_TABLE3 = {
    **{k: v + (None,) for k, v in classical.PAPER_TABLE3.items()},
    "fpn": (0.721, 0.704, 0.075, 1.6), "unet": (0.736, 0.723, 0.144, 2.2),
    "tbc_net": (0.734, 0.713, 0.049, 6.93), "acm_fpn": (0.736, 0.722, 0.067, 1.6),
    "acm_unet": (0.745, 0.727, 0.156, 2.2), "alcnet": (0.757, 0.728, 0.378, 1.44),
    "eaau_net": (0.771, 0.746, 0.179, 2.07),
}


@dataclasses.dataclass
class Method:
  """One row: how to evaluate it (a loader and a jitted eval step for ``train.evaluate``) and how
  to run its forward alone (timing and the grid)."""
  label: str
  kind: str  # "cnn" | "classical"
  paper_key: str
  loader: input_pipeline.EvalLoader
  p_eval: Callable  # (state, global batch) -> (SegmentationMetrics, logits)
  forward: Callable  # (state, images, valid) -> logits (N, H, W, 1)
  state: object = None
  num_params: int = 0
  source: str = ""  # the checkpoint (and the released file it was imported from)


def parse_checkpoints(values) -> list[tuple[str, str]]:
  """``label=path`` or ``path`` (label: the path's base name) -> [(label, path)]."""
  out = []
  for v in values or []:
    label, _, path = v.rpartition("=")
    out.append((label or os.path.basename(os.path.normpath(path)), path))
  return out


def checkpoint_method(label: str, path: str, dataset_cfg, split: str, protocol: str,
                      base_size: int, mesh) -> Method:
  """A restored checkpoint, read with its own colour/channels/normalisation on the given dataset."""
  state, cfg, meta, step = evaluate.restore(path, mesh)
  ds = ml_collections.ConfigDict(dataset_cfg.to_dict())
  ds.color = cfg.dataset.get("color", "grey")
  source = input_pipeline.open_source(ds, split)
  loader = input_pipeline.EvalLoader(
      source, cfg.input.eval_batch_size, meta["mean"], meta["std"], cfg.input.eval_pad_multiple,
      cfg.input.channels, jax.process_index(), jax.process_count(), protocol, base_size)
  _, p_eval = train.compile_steps(cfg, mesh)
  source = f"{os.path.abspath(path)} (step {step})" + (
      f", imported from {meta['imported_from']}" if meta.get("imported_from") else "")
  return Method(label, "cnn", cfg.model.get("name", "eaau_net"), loader, p_eval,
                xla_options.jit(train.predict_logits), state, meta["num_params"], source)


def detector_method(name: str, dataset_cfg, split: str, protocol: str, base_size: int,
                    batch_size: Optional[int] = None) -> Method:
  """A classical detector on the grey image in 0..255 (mean 0, std 1), never padded.

  Batches (default): ``acm``, 8 images of the one shape; ``native``, one image per device. Natively
  nearly every batch holds one exact size (93 of SIRST idx_320 test's 96), and a batch of 8 was
  one image and 7 blank fillers that the vmapped detector scored all the same: 8x the work (IPI
  and RIPT's while loops run for the batch's slowest image). IPI and RIPT get one image per
  device under ``acm`` too (``classical.BATCH_SENSITIVE``: their float32 solutions depend on the
  batch; on a 2-core CPU a batch of 4 IPI images took as long as the 4 one at a time)."""
  if batch_size is None:
    batch_size = (8 if protocol == "acm" and name not in classical.BATCH_SENSITIVE
                  else jax.device_count())
  if name not in classical.DETECTORS:
    raise errors.ConfigError(f"unknown detector {name!r}", "--detectors",
                             f"expected fast, all, none or some of {', '.join(classical.DETECTORS)}")
  ds = ml_collections.ConfigDict(dataset_cfg.to_dict())
  ds.color = "grey"
  loader = input_pipeline.EvalLoader(input_pipeline.open_source(ds, split), batch_size, 0.0, 1.0,
                                     1, 1, jax.process_index(), jax.process_count(), protocol,
                                     base_size)
  detect = classical.compiled(name, batched=True)

  def forward(_, images, valid):
    return classical.score_to_logits(detect(images[..., 0]), valid=valid[..., 0])[..., None]

  def eval_step(_, batch):
    logits = forward(None, batch["image"], batch["valid"])
    seg = metrics.SegmentationMetrics.from_model_output(logits, batch["mask"], batch["valid"],
                                                        image_weight=batch["weight"])
    return seg, logits

  return Method(name, "classical", name, loader, jax.jit(eval_step), jax.jit(forward))


def ms_per_image(method: Method, device) -> float:
  """The forward's ms per real image on ``device`` (``evaluate.ms_per_image``)."""
  state = jax.device_put(method.state, device) if method.state is not None else None
  return evaluate.ms_per_image(method.forward, state, method.loader,
                               lambda arrays: jax.device_put(arrays, device))


def evaluate_method(method: Method, mesh) -> tuple[dict, dict]:
  """(metrics + params/MB/timings, curves) of one method."""
  result, _, curves = train.evaluate(method.state, method.loader, method.p_eval, mesh)
  result["num_params"] = method.num_params
  result["mb"] = method.num_params * 4 / 1e6  # fp32 weights, as Table 3's "Para"
  result["cpu_ms_per_image"] = ms_per_image(method, jax.devices("cpu")[0])
  if jax.default_backend() == "gpu":
    result["gpu_ms_per_image"] = ms_per_image(method, jax.devices()[0])
  logging.info("compare %s: IoU %.4f nIoU %.4f Pd %.4f Fa %.3g F-area %.4f", method.label,
               result["iou"], result["niou"], result["pd"], result["fa"], result["f_area"])
  return result, {k: np.asarray(v).tolist() for k, v in curves.items()}


def grid_predictions(methods: list[Method], indices: list[int]) -> dict:
  """{"image": [...], "mask": [...], label: [binary detections]} of a few examples, as evaluated."""
  out = {"image": [], "mask": []}
  for k, i in enumerate(indices):
    for m in methods:
      image, mask = m.loader.prepare(m.loader.source[i])
      valid = np.ones(mask.shape, np.float32)[None]
      logits = np.asarray(m.forward(m.state, jnp.asarray(image[None]), jnp.asarray(valid)))
      out.setdefault(m.label, []).append(logits[0, ..., 0] > 0)
      if m.kind == "classical" and len(out["image"]) == k:  # the grey image, 0..255
        out["image"].append(image[..., 0])
        out["mask"].append(mask[..., 0])
  if len(out["image"]) < len(indices):  # no classical method: the first method's input, channel 0
    for i in indices:
      image, mask = methods[0].loader.prepare(methods[0].loader.source[i])
      out["image"].append(image[..., 0])
      out["mask"].append(mask[..., 0])
  return out


def _fmt(v, spec: str) -> str:
  return "-" if v is None else format(v, spec)


def best_threshold_iou(curves: dict) -> tuple[float, float]:
  """(the largest dataset IoU over the PR curve's thresholds, that logit threshold).

  IoU = TP / (TP + FP + FN) = P R / (P + R - P R) at each threshold. For a classical detector the
  curve sweeps every image's threshold within its own score range (``score_to_logits``), so this
  is the best IoU any threshold of the adaptive family could give: what separates a gap caused
  by the paper's threshold from one in the score map itself."""
  p, r = np.asarray(curves["precision"], np.float64), np.asarray(curves["recall"], np.float64)
  denom = p + r - p * r
  iou = np.where(denom > 0, p * r / np.where(denom > 0, denom, 1.0), 0.0)
  k = int(np.argmax(iou))
  return float(iou[k]), float(np.asarray(curves["thresholds"])[k])


def markdown_table(rows: list[dict], title: str) -> str:
  """The report's table: our figures, then Table 3's (IoU, nIoU, CPU s, MB) beside them."""
  head = ("| method | IoU | IoU, best thr | nIoU | Pd | Fa (1e-6) | P | R | F (b2=0.3) | AP | F-area "
          "| params | MB | CPU ms/img | GPU ms/img | paper IoU | paper nIoU | paper CPU s | paper MB |")
  lines = [f"# {title}", "", head, "|" + "---|" * 19]
  for r in rows:
    m, p = r["metrics"], PAPER_TABLE3.get(r["paper_key"], (None,) * 4)
    best = best_threshold_iou(r["curves"])[0] if r.get("curves") else None
    lines.append(
        f"| {r['label']} | {m['iou']:.4f} | {_fmt(best, '.4f')} | {m['niou']:.4f} | {m['pd']:.4f} "
        f"| {m['fa'] * 1e6:.2f} "
        f"| {m['precision']:.4f} | {m['recall']:.4f} | {m['f_measure']:.4f} | {m['ap']:.4f} "
        f"| {m['f_area']:.4f} | {m['num_params'] or '-'} | {_fmt(m['mb'] or None, '.2f')} "
        f"| {m['cpu_ms_per_image']:.1f} | {_fmt(m.get('gpu_ms_per_image'), '.2f')} "
        f"| {_fmt(p[0], '.3f')} | {_fmt(p[1], '.3f')} | {_fmt(p[2], 'g')} | {_fmt(p[3], 'g')} |")
  return "\n".join(lines) + "\n"


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_curves(rows: list[dict], stem: str, title: str) -> list[str]:
  """PR and ROC curves of every method (two PNGs) and the F-area bars (Figure 5)."""
  plt = _pyplot()
  paths = []
  for kind, (x, y), axes in (("pr", ("recall", "precision"), dict(xlim=(0, 1), ylim=(0, 1.02))),
                             ("roc", ("fpr", "tpr"), dict(xscale="log", ylim=(0, 1.02)))):
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for r in rows:
      ax.plot(r["curves"][x], r["curves"][y], "-" if r["kind"] == "cnn" else "--", label=r["label"])
    ax.set(xlabel=x, ylabel=y, title=f"{kind.upper()}: {title}", **axes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(f"{stem}_{kind}.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows)), 4))
  values = [r["metrics"]["f_area"] for r in rows]
  ax.bar(range(len(rows)), values, color=["C0" if r["kind"] == "cnn" else "C1" for r in rows])
  for i, v in enumerate(values):
    ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
  ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=45, ha="right", fontsize=7)
  ax.set(ylabel="F-area = AP x F (b2 = 0.3)", title=f"F-area: {title}")
  fig.tight_layout()
  paths.append(f"{stem}_farea.png")
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)
  return paths


def plot_grid(grid: dict, labels: list[str], path: str) -> str:
  """Figure 9: a row per image: the image, its mask, each method's detection."""
  plt = _pyplot()
  cols = ["image", "mask"] + labels
  n = len(grid["image"])
  fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
  for i in range(n):
    for j, c in enumerate(cols):
      ax = axes[i, j]
      ax.imshow(grid[c][i], cmap="gray", vmin=0, vmax=None if c == "image" else 1)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(c, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def run(checkpoints: list[tuple[str, str]], dataset_cfg, split: str, protocol: str,
        base_size: int, detectors: list[str], out_dir: str, grid_images: int = 4) -> dict:
  """Evaluates every method, writes compare_<split>_<protocol>.{md,json} and the PNGs."""
  input_pipeline.check_protocol(protocol, "--protocol")
  mesh = input_pipeline.make_mesh()
  methods = [checkpoint_method(label, path, dataset_cfg, split, protocol, base_size, mesh)
             for label, path in checkpoints]
  methods += [detector_method(d, dataset_cfg, split, protocol, base_size) for d in detectors]
  if not methods:
    raise errors.ConfigError("nothing to compare: give --checkpoints and/or --detectors",
                             "--checkpoints")
  rows = []
  for m in methods:
    result, curves = evaluate_method(m, mesh)
    # native: one executable per image size and method. A native run of the detectors aborted in
    # LLVM ("Cannot allocate memory") after ~300 compiles; dropping each method's executables
    # bounds what one process holds (not yet re-run natively to confirm it suffices).
    jax.clear_caches()
    rows.append({"label": m.label, "kind": m.kind, "paper_key": m.paper_key, "source": m.source,
                 "metrics": result,
                 "curves": curves, "paper_table3": PAPER_TABLE3.get(m.paper_key)})
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f"compare_{split}_{protocol}")
  split_name = f"{dataset_cfg.name} {dataset_cfg.get('split_folder') or ''} {split}".strip()
  text = evaluate.PROTOCOL_TEXT[protocol].format(base=base_size)
  title = f"{split_name}, {protocol} protocol"
  n = len(methods[0].loader.source)
  indices = sorted({int(round(k)) for k in np.linspace(0, n - 1, min(grid_images, n))})
  pngs = plot_curves(rows, stem, title)
  pngs.append(plot_grid(grid_predictions(methods, indices), [m.label for m in methods],
                        stem + "_grid.png"))
  report = {"dataset": dataset_cfg.name, "split_folder": dataset_cfg.get("split_folder"),
            "split": split, "protocol": protocol, "protocol_text": text,
            "device": jax.devices()[0].device_kind, "checkpoints": dict(checkpoints),
            "rows": rows, "pngs": [os.path.basename(p) for p in pngs], "grid_indices": indices}
  report["title"] = title
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=1)
  write_markdown(report, stem + ".md")
  logging.info("compare: wrote %s.{md,json} and %d PNGs", stem, len(pngs))
  return report


def write_markdown(report: dict, path: str):
  """The .md of a report (also from its .json: ``write_markdown(json.load(f), path)``)."""
  sources = "; ".join(f"{r['label']}: `{r['source']}`" for r in report["rows"] if r.get("source"))
  with open(path, "w") as f:
    f.write(markdown_table(report["rows"], report["title"]) + "\n" + footnote(report) + "\n\n"
            + (f"Checkpoints: {sources}.\n\n" if sources else "")
            + "\n".join(f"![{p}]({p})" for p in report["pngs"]) + "\n")


def footnote(report: dict) -> str:
  rows = report["rows"]
  return (f"{int(rows[0]['metrics']['images'])} images, {rows[0]['metrics']['targets']} targets, "
          f"evaluated {report['protocol_text']}; logit > 0 (CNN) / the paper's adaptive threshold "
          f"T = 0.5 mean + 0.5 max (classical); Pd/Fa: centroid within 3 px; F: beta^2 = 0.3; "
          f"F-area = AP x F; IoU, best thr: the largest IoU over the PR curve's thresholds (for a "
          f"classical detector, over each image's own score range); MB = fp32 params x 4 / 1e6; "
          f"ms/image: median of the jitted forward over the first {evaluate.TIMING_BATCHES} "
          f"batches, fewer once {evaluate.TIMING_BUDGET_S:.0f} s are timed "
          f"({report['device']}). Paper columns: Table 3 "
          f"(CNN rows copied there from the ACM/ALCNet papers; its CPU seconds are on its "
          f"machine).")


def run_from_flags(config: Optional[ml_collections.ConfigDict], workdir: str, flags) -> dict:
  """main.py --mode=compare: the dataset/split/base size of --config (default: the first
  checkpoint's config); reports into --output (default WORKDIR)."""
  if flags.merge:
    with open(flags.merge[0]) as f:
      first = json.load(f)
    out = flags.output or workdir
    os.makedirs(out, exist_ok=True)
    return merge_reports(flags.merge, os.path.join(
        out, f"compare_{first['split']}_{first['protocol']}"))
  checkpoints = parse_checkpoints(flags.checkpoints)
  if config is None:
    if not checkpoints:
      raise errors.ConfigError("--mode=compare needs --config or --checkpoints", "--config")
    manager, step = ckpts.locate(checkpoints[0][1])
    config = ml_collections.ConfigDict(ckpts.read_meta(manager, step)["config"])
  detectors = list(flags.detectors or ["fast"])
  if detectors == ["fast"]:
    detectors = list(FAST_DETECTORS)
  elif detectors == ["all"]:
    detectors = list(classical.DETECTORS)
  elif detectors == ["none"]:
    detectors = []
  protocol = (flags.protocol or [config.eval.protocol])[0]
  return run(checkpoints, config.dataset, flags.split or config.dataset.test_split, protocol,
             config.input.base_size, detectors, flags.output or workdir, flags.grid_images)


def merge_reports(paths: list[str], stem: str) -> dict:
  """One report from several compare JSONs of the same split and protocol (e.g. the CNNs and the
  slow detectors run as separate processes): rows concatenated, a later part's row replacing an
  earlier one of the same label in its place (a method rerun after a fix), the table and the
  PR/ROC/F-area PNGs redrawn; each part's qualitative grid stays its own (predictions are not
  stored)."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  parts = []
  for p in paths:
    with open(p) as f:
      parts.append(json.load(f))
  for p, r in zip(paths[1:], parts[1:]):
    for k in ("dataset", "split_folder", "split", "protocol"):
      if r[k] != parts[0][k]:
        raise errors.ConfigError(f"{p}: {k} {r[k]!r} differs from {paths[0]}'s {parts[0][k]!r}")
  rows = {}  # by label, in first-seen order; dicts keep a replaced key's position
  for p, r in zip(paths, parts):
    for row in r["rows"]:
      if row["label"] in rows:
        logging.info("compare --merge: %s's row %r replaces the earlier one", p, row["label"])
      rows[row["label"]] = row
  report = {**parts[0], "rows": list(rows.values()),
            "merged_from": [os.path.abspath(p) for p in paths]}
  report["pngs"] = [os.path.basename(p) for p in plot_curves(report["rows"], stem, report["title"])]
  grids = {}  # the parts' grids (a merged part's several), numbered beside the merged report
  for p, r in zip(paths, parts):
    for png in r["pngs"]:
      if "_grid" in png:
        name = os.path.basename(stem) + f"_grid{len(report['pngs']) - 2}.png"
        with open(os.path.join(os.path.dirname(p), png), "rb") as f:  # all read before any is
          grids[name] = f.read()  # written: a merge re-merged in place renumbers its own grids
        report["pngs"].append(name)
  for name, data in grids.items():
    with open(os.path.join(os.path.dirname(stem), name), "wb") as f:
      f.write(data)
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=1)
  write_markdown(report, stem + ".md")
  return report
