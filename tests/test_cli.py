"""The command line as a person meets it: one-line errors with exit status 2, progress on and off a
terminal, closing summaries, predict's detections, and the package's metadata.

Runs in-process where it can; the subprocesses here fail before JAX is imported (well under a
second each). The end-to-end runs (training, predict, errors after a checkpoint is read) extend
the tiny-run tests of tests/test_train.py."""

import glob
import io
import json
import math
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from eaau_jax import cli, errors, evaluate, input_pipeline, progress, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}


# ---------------------------------------------------------------- errors
def test_user_error_lines_and_legacy_messages():
  e = errors.DataError("/d/a.png: mask is not binary: values {0, 7}")
  assert (e.where, e.what, e.hint) == ("/d/a.png", "mask is not binary: values {0, 7}", None)
  assert str(e) == "/d/a.png: mask is not binary: values {0, 7}"  # the message it always was
  assert e.lines() == "error: mask is not binary: values {0, 7} (/d/a.png)"
  assert isinstance(e, ValueError)
  multi = errors.DataError("sirst: cannot be downloaded.\n  Pass the root folder\n")
  assert multi.lines() == "error: cannot be downloaded. (sirst)\nhint: Pass the root folder"
  c = errors.ConfigError("config.optimizer.name: 'sgd'; expected adagrad or adam")
  assert c.lines() == ("error: 'sgd'; expected adagrad or adam (config.optimizer.name)\n"
                       "hint: set it in the config file or override it: "
                       "--config.optimizer.name=VALUE")
  assert errors.CheckpointError("no such checkpoint", "/w", "train first").lines() == (
      "error: no such checkpoint (/w)\nhint: train first")


def test_expected_failure_is_one_line_and_status_2(capsys, monkeypatch):
  monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)

  def bad_data(argv):
    raise errors.DataError("/d/b.png: unreadable or corrupt image")

  with pytest.raises(SystemExit) as exit_info:
    cli.guarded(bad_data)(["main.py"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err == "error: unreadable or corrupt image (/d/b.png)\n"
  monkeypatch.setenv(cli.TRACEBACK_ENV, "1")  # asked for: the traceback comes first
  with pytest.raises(SystemExit):
    cli.guarded(bad_data)(["main.py"])
  err = capsys.readouterr().err
  assert err.startswith("Traceback") and err.endswith(
      "error: unreadable or corrupt image (/d/b.png)\n")


def test_unexpected_exception_keeps_its_traceback_and_ctrl_c_is_quiet(capsys):
  def bug(argv):
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    cli.guarded(bug)(["main.py"])

  def interrupted(argv):
    raise KeyboardInterrupt

  with pytest.raises(SystemExit) as exit_info:
    cli.guarded(interrupted)(["main.py"])
  assert exit_info.value.code == 130
  assert capsys.readouterr().err.startswith("error: interrupted\nhint: training resumes")


FLAG_ERRORS = [  # (arguments, the exact stderr): each fails while parsing, before JAX loads
    (["--workdir", "w", "--mode=evaluate"],
     "error: value should be one of <train|eval|predict|import|compare> (--mode=evaluate)\n"
     "hint: --helpshort lists the flags\n"),
    (["--mode=eval"], "error: this flag is required (--workdir)\n"
     "hint: --helpshort lists the flags\n"),
    (["--workdir", "w", "--config", "configs/tiny.py", "--config.model.fusoin=eaa"],
     "error: the config has no field 'fusoin' (--config.model.fusoin)\n"
     "hint: did you mean 'fusion'? the config file lists the fields\n"),
    (["--workdir", "w", "--config", "configs/nope.py"],
     "error: cannot load the config file: [Errno 2] No such file or directory: "
     "'configs/nope.py' (--config)\n"
     "hint: a path to a configs/*.py file, e.g. --config configs/sirst.py\n"),
    (["--workdir", "w", "--threshold=high"],
     "error: could not convert string to float: 'high' (--threshold=high)\n"
     "hint: --helpshort lists the flags\n"),
    (["--workdir", "w", "stray"], "error: unexpected arguments ['stray'] (command line)\n"
     "hint: flags take the form --name=value; --helpshort lists the flags\n"),
]


def test_bad_flags_and_config_fields_exit_2_with_one_line():
  for args, expected in FLAG_ERRORS:
    r = subprocess.run([sys.executable, "main.py", *args], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, expected), args
  # --verbosity=1 asks for the traceback too.
  r = subprocess.run([sys.executable, "main.py", "--workdir", "w", "--verbosity=1", "stray"],
                     env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr
  assert r.stderr.endswith(FLAG_ERRORS[-1][1])


# ---------------------------------------------------------------- progress
class Recorder:
  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars):
    self.rows.append((step, dict(scalars)))


def _drive(report):
  """A 2-epoch run of 8 steps, logging every 2, validated at step 4."""
  for step, t in zip(range(1, 9), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]):
    report(step, loss=1.0 - step / 100 if step % 2 == 0 else None, t=t)
    if step == 4:
      report.val(0.41, 4)
  report.close()


def test_training_progress_off_a_terminal_is_one_log_line_per_log_step(monkeypatch):
  monkeypatch.setenv(progress.ENV, "plain")
  lines = []
  monkeypatch.setattr(progress.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  writer = Recorder()
  _drive(progress.TrainProgress(8, 4, writer, every_steps=2))
  assert lines == [  # step 1 (compilation) is not timed
      "step 2/8, epoch 1/2: loss 0.9800, 1.00 steps/s, ETA 6s",
      "step 4/8, epoch 1/2: loss 0.9600, 1.00 steps/s, ETA 4s",
      "step 6/8, epoch 2/2: loss 0.9400, val IoU 0.4100 (step 4), 1.00 steps/s, ETA 2s",
      "step 8/8, epoch 2/2: loss 0.9200, val IoU 0.4100 (step 4), 0.67 steps/s, ETA 0s"]
  assert writer.rows == [(2, {"steps_per_sec": 1.0}), (4, {"steps_per_sec": 1.0}),
                         (6, {"steps_per_sec": 1.0}), (8, {"steps_per_sec": 2 / 3})]
  lines.clear()
  _drive(progress.TrainProgress(8, 4, Recorder(), every_steps=2, show=False))  # process 1, ...
  assert lines == []


def test_training_progress_on_a_forced_terminal_is_one_tqdm_line(monkeypatch):
  monkeypatch.setenv(progress.ENV, "tty")
  lines = []
  monkeypatch.setattr(progress.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  stream = io.StringIO()
  writer = Recorder()
  _drive(progress.TrainProgress(8, 4, writer, every_steps=2, stream=stream))
  out = stream.getvalue()
  assert lines == [] and "\n" not in out.rstrip("\n")  # one line, redrawn with \r
  last = out.rstrip("\n").split("\r")[-1]
  assert last.startswith("epoch 2/2: 100%") and "8/8" in last and "step/s" in last
  assert "loss 0.9200, val IoU 0.4100 (step 4)" in last
  assert [s for s, _ in writer.rows] == [2, 4, 6, 8]  # steps/s still reach TensorBoard
  stream = io.StringIO()
  assert list(progress.bar(range(3), 3, "predict", "image", stream=stream)) == [0, 1, 2]
  assert "predict: 100%" in stream.getvalue() and "3/3" in stream.getvalue()
  monkeypatch.setenv(progress.ENV, "plain")
  items = [1, 2]
  assert progress.bar(items, 2, "predict") is items


@pytest.mark.parametrize("mode", ["tty", "plain"])
def test_first_dataset_build_shows_tfds_bars_on_a_terminal_only(mode, tmp_path, monkeypatch,
                                                                 capsys):
  from configs import tiny
  monkeypatch.setenv(progress.ENV, mode)
  cfg = tiny.get_config().dataset
  cfg.name, cfg.data_dir = "folder", str(tmp_path / "tfds")
  cfg.manual_dir = os.path.join(ROOT, "tfds_sirst", "dummy_data", "folder")
  assert len(input_pipeline.open_source(cfg, "test")) == 3
  bars = [l for l in capsys.readouterr().err.replace("\r", "\n").splitlines() if "%|" in l]
  assert any("examples" in l for l in bars) if mode == "tty" else bars == []


def test_logs_print_above_a_live_bar(monkeypatch):
  stream = io.StringIO()
  through = progress._ThroughBars(stream)
  with progress.tqdm.tqdm(total=3, file=stream) as bar:
    bar.update(1)
    through.write("I1125 a log line\n")
  assert "I1125 a log line\n" in stream.getvalue()


# ---------------------------------------------------------------- summaries
def _fake_workdir(tmp_path):
  wd = tmp_path / "wd"
  rows = [{"step": 0, "val_native_iou": 0.01, "val_native_niou": 0.02, "val_native_pd": 0.0,
           "val_native_fa": 1e-3, "val_native_f_area": 0.0},
          {"step": 8, "train_loss": 0.9},
          {"step": 8, "val_native_iou": 0.41, "val_native_niou": 0.45, "val_native_pd": 0.67,
           "val_native_fa": 2e-5, "val_native_f_area": 0.3},
          {"step": 16, "val_native_iou": 0.35, "val_native_niou": 0.40, "val_native_pd": 0.6,
           "val_native_fa": 3e-5, "val_native_f_area": 0.25},
          {"step": 16, "val_native_iou": 0.38, "val_native_niou": 0.40, "val_native_pd": 0.6,
           "val_native_fa": 3e-5, "val_native_f_area": 0.25}]  # a resumed run redid step 16
  for d in ("checkpoints/12", "checkpoints/16", "best/8"):
    (wd / d).mkdir(parents=True)
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (wd / "events.out.tfevents.1.host").write_bytes(b"")  # as CLU's writer leaves
  return wd


def test_training_summary_says_what_was_reached_written_and_what_next(tmp_path, monkeypatch):
  wd = _fake_workdir(tmp_path)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "argv", ["main.py"])
  text = summary.training(str(wd), "native", "val", 16, 16, 4, 754.0, start=8)
  assert text.splitlines()[0] == ("Training done: step 16 of 16 (4 epochs) in 12m 34s wall time, "
                                  "resumed at step 8.")
  assert ("  best   step      8:  IoU 0.4100  nIoU 0.4500  Pd 0.6700  Fa 2e-05  F-area 0.3000"
          in text)
  assert "  last   step     16:  IoU 0.3800  nIoU 0.4000" in text  # the later row of step 16
  assert "Validation (val split, native protocol):" in text
  assert "checkpoints     wd/checkpoints/16 (latest), wd/best/8 (best val IoU)" in text
  for line in ("TensorBoard     wd/events.out.tfevents.*", "metrics         wd/metrics.jsonl",
               "eval reports    wd/eval/ (none yet: the evaluate command below writes them)"):
    assert line in text
  python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith(
      "..") else sys.executable
  assert f"evaluate        {python} main.py --mode=eval --workdir wd" in text
  assert (f"predict         {python} main.py --mode=predict --workdir wd --input IMAGES "
          "--output wd/predictions") in text
  assert "--logdir wd" in text
  (wd / "eval").mkdir()
  (wd / "eval" / "eval_test_native.md").write_text("")
  monkeypatch.setattr(sys, "argv", ["/usr/local/bin/eaau-jax"])  # the installed command
  text = summary.training(str(wd), "native", "val", 16, 16, 4, 5.0)
  assert "eval reports    wd/eval/ (eval_test_native.md)" in text
  assert "evaluate        eaau-jax --mode=eval --workdir wd" in text
  assert "in 5s wall time." in text


def test_training_summary_names_no_events_where_none_were_written(tmp_path, monkeypatch):
  """Without TensorFlow only metrics.jsonl is written: the summary must not point at events."""
  wd = _fake_workdir(tmp_path)
  (wd / "events.out.tfevents.1.host").unlink()
  monkeypatch.chdir(tmp_path)
  text = summary.training(str(wd), "native", "val", 16, 16, 4, 5.0)
  assert "tfevents" not in text and "--logdir" not in text
  assert ("TensorBoard     none (CLU's writer did not run: no TensorFlow here, or "
          "config.tensorboard=False)") in text
  assert "metrics         wd/metrics.jsonl" in text


def test_eval_and_predict_summaries_say_what_was_written_where(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  reports = {p: {"checkpoint": "wd (step 8)", "metrics": {"images": 48.0, "iou": 0.4, "niou": 0.5,
                                                           "pd": 0.6, "fa": 1e-5, "f_area": 0.3}}
             for p in ("native", "acm")}
  text = summary.evaluation("wd", "test", reports, str(tmp_path / "wd" / "eval"))
  assert text.splitlines() == [
      "Evaluated wd (step 8) on test (48 images):",
      "  native  IoU 0.4000  nIoU 0.5000  Pd 0.6000  Fa 1e-05  F-area 0.3000",
      "  acm     IoU 0.4000  nIoU 0.5000  Pd 0.6000  Fa 1e-05  F-area 0.3000",
      "Written to wd/eval:",
      "  eval_test_native.json, .md, _curves.png", "  eval_test_acm.json, .md, _curves.png"]
  text = summary.prediction("wd (step 8)", "native", 0.7,
                            {"images": 3, "targets": 5, "with_targets": 2},
                            [{"file": "bad.png", "error": "unreadable or corrupt image"}],
                            str(tmp_path / "out"), str(tmp_path / "out" / "detections.json"))
  assert text.splitlines()[0] == ("Predicted 3 of 4 images with wd (step 8), native protocol, "
                                  "threshold 0.7 (score > 0.7):")
  assert "  5 targets in 2 images" in text and "Written to out:" in text
  assert "detections.json" in text
  assert text.splitlines()[-2:] == ["1 image could not be read:",
                                    "  bad.png: unreadable or corrupt image"]


# ---------------------------------------------------------------- detections
def test_detections_of_a_hand_made_map():
  logits = np.full((6, 8), -5.0, np.float32)
  logits[0, 0] = 2.0       # target A: (0,0) and (1,1) touch at a corner -> one 8-connected target
  logits[1, 1] = 1.0
  logits[1, 5:8] = 3.0     # target B: a row of three, peak in the middle
  logits[1, 6] = 4.0
  logits[4, 2] = 0.5       # target C: kept at the default threshold, dropped at 0.7
  logits[5, 7] = 0.0       # logit 0 is score 0.5: not above it
  found = evaluate.detections(logits, evaluate.threshold_logit(0.5))
  assert found == [
      {"centroid": [0.5, 0.5], "bbox": [0, 0, 1, 1], "area": 2,
       "peak_score": 1 / (1 + math.exp(-2.0)), "peak_logit": 2.0},
      {"centroid": [6.0, 1.0], "bbox": [5, 1, 7, 1], "area": 3,
       "peak_score": 1 / (1 + math.exp(-4.0)), "peak_logit": 4.0},
      {"centroid": [2.0, 4.0], "bbox": [2, 4, 2, 4], "area": 1,
       "peak_score": 1 / (1 + math.exp(-0.5)), "peak_logit": 0.5}]
  assert len(evaluate.detections(logits, evaluate.threshold_logit(0.7))) == 2
  assert evaluate.threshold_logit(0.5) == 0.0  # the default is today's logit > 0, exactly
  for bad in (0.0, 1.0, 1.5):
    with pytest.raises(errors.ConfigError, match="--threshold"):
      evaluate.threshold_logit(bad)


def test_detections_match_scipy_on_random_maps():
  rng = np.random.default_rng(3)
  eight = np.ones((3, 3), bool)
  for _ in range(5):
    logits = rng.normal(-1.5, 1.5, (23, 31)).astype(np.float32)
    labels, n = ndimage.label(logits > 0, structure=eight)
    found = evaluate.detections(logits)
    assert len(found) == n
    idx = range(1, n + 1)
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, idx)
    for k, d, (cy, cx), area, peak in zip(idx, found, centres, ndimage.sum_labels(
        np.ones_like(labels), labels, idx), ndimage.maximum(logits, labels, idx)):
      ys, xs = np.nonzero(labels == k)  # raster order of the first pixel, as ndimage labels
      assert d["bbox"] == [xs.min(), ys.min(), xs.max(), ys.max()]
      assert d["centroid"] == pytest.approx([cx, cy], abs=1e-3)
      assert d["area"] == area and d["peak_logit"] == pytest.approx(peak)


def test_predict_reads_each_image_once(tmp_path, monkeypatch):
  """FolderSource decodes a file once (also for RGB checkpoints) and the overlay is drawn from
  that image, not from a second read."""
  path = str(tmp_path / "a.png")
  Image.fromarray(np.arange(12 * 9, dtype=np.uint8).reshape(9, 12)).save(path)
  opened = []
  real_open = Image.open
  monkeypatch.setattr(Image, "open",
                      lambda p, *a, **k: (opened.append(p), real_open(p, *a, **k))[1])
  for rgb in (False, True):
    opened.clear()
    ex = input_pipeline.FolderSource([path], rgb)[0]
    evaluate._write_prediction(path, ex["image"], np.zeros((9, 12), bool), str(tmp_path))
    assert opened == [path], rgb
    assert ex["image"].shape == ((9, 12, 3) if rgb else (9, 12, 1))


# ---------------------------------------------------------------- packaging
def test_pyproject_entry_point_packages_and_dependencies():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  module, _, name = project["project"]["scripts"]["eaau-jax"].partition(":")
  assert module == "eaau_jax.cli" and getattr(cli, name) is cli.run  # what main.py runs
  with open(os.path.join(ROOT, "main.py")) as f:
    assert "cli.run()" in f.read()
  # The dependencies are requirements.txt itself, lower bounds only.
  assert project["project"]["dynamic"] == ["dependencies"]
  assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    reqs = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  assert reqs and all(">=" in r and "<" not in r and "==" not in r for r in reqs), reqs
  assert any(r.startswith("tqdm>=") for r in reqs)
  # Every package of the checkout is installed (a new subpackage must be listed).
  inits = glob.glob(os.path.join(ROOT, "*", "__init__.py")) + glob.glob(
      os.path.join(ROOT, "*", "*", "__init__.py"))
  found = sorted(os.path.relpath(os.path.dirname(f), ROOT).replace(os.sep, ".") for f in inits)
  found = [p for p in found if not p.startswith(("tests", "benchmarks"))]
  assert sorted(project["tool"]["setuptools"]["packages"]) == found


def test_compare_flag_errors_are_user_errors():
  from eaau_jax import compare, errors
  with pytest.raises(errors.ConfigError) as e:
    compare.detector_method("tophatt", None, "test", "acm", 512)
  assert e.value.lines() == ("error: unknown detector 'tophatt' (--detectors)\nhint: expected fast, "
                             "all, none or some of " + ", ".join(compare.classical.DETECTORS))


def test_cpu_malloc_hint_only_for_glibc_cpu_training_without_tunables(tmp_path):
  """The CPU training hint (BENCHMARKS.md, page faults) names the tunable where it would help,
  and says nothing on a GPU, with another C library, once glibc's malloc tunables are set, or
  where transparent huge pages are not asked for by madvise."""
  hint = cli.cpu_malloc_hint("cpu", {}, "glibc", "madvise")
  assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in hint
  other = {"GLIBC_TUNABLES": "glibc.rtld.x=1"}  # not malloc's
  assert cli.cpu_malloc_hint("cpu", other, "glibc", "madvise") == hint
  assert cli.cpu_malloc_hint("gpu", {}, "glibc", "madvise") is None
  assert cli.cpu_malloc_hint("cpu", {}, "", "madvise") is None  # musl, macOS: no GLIBC_TUNABLES
  for mode in ("always", "never", ""):
    assert cli.cpu_malloc_hint("cpu", {}, "glibc", mode) is None
  for tunables in ("glibc.malloc.hugetlb=1", "glibc.malloc.arena_max=1"):
    assert cli.cpu_malloc_hint("cpu", {"GLIBC_TUNABLES": tunables}, "glibc", "madvise") is None
  sysfs = tmp_path / "enabled"
  sysfs.write_text("always [madvise] never\n")
  assert cli.thp_mode(str(sysfs)) == "madvise"
  sysfs.write_text("[always] madvise never\n")
  assert cli.thp_mode(str(sysfs)) == "always"
  assert cli.thp_mode(str(tmp_path / "absent")) == ""
