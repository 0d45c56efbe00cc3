"""metrics.jsonl (the record every run keeps, with or without TensorFlow) and the image panels.

Progress reporting is tested in tests/test_cli.py."""

import json
import os
import subprocess
import sys

import numpy as np

from eaau_jax import reporting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_jsonl_writer_and_multiwriter(tmp_path):
  path = tmp_path / "metrics.jsonl"
  w = reporting.MultiWriter([reporting.JsonlWriter(str(path))])
  w.write_scalars(3, {"loss": np.float32(0.5), "iou": 0.25})
  w.write_hparams({"lr": 0.05})
  w.flush()
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"step": 3, "loss": 0.5, "iou": 0.25}]
  assert json.loads((tmp_path / "hparams.json").read_text()) == {"lr": 0.05}


def test_writer_without_tensorboard_writes_jsonl_only_and_never_imports_tensorflow(tmp_path):
  """config.tensorboard=False: metrics.jsonl and hparams.json, no event file, and TensorFlow (CLU's
  writer's import, ~5 s) not imported: in a fresh process, as this one may have imported it. (On,
  the events are written: tests/test_train.py's tiny run through main.py.)"""
  script = """if True:
    import os, sys
    from eaau_jax import reporting
    os.makedirs(sys.argv[1])
    w = reporting.create_writer(sys.argv[1], tensorboard=False)
    w.write_hparams({"lr": 0.05})
    w.write_scalars(1, {"loss": 0.5})
    w.write_images(1, {"panel": __import__("numpy").zeros((1, 4, 12, 1), "uint8")})
    w.flush()
    w.close()
    print("tensorflow" in sys.modules)
  """
  off = subprocess.run([sys.executable, "-c", script, str(tmp_path / "off")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert off.returncode == 0, off.stderr[-3000:]
  assert off.stdout.split() == ["False"]
  assert sorted(os.listdir(tmp_path / "off")) == ["hparams.json", "metrics.jsonl"]
  rows = (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r) for r in rows] == [{"step": 1, "loss": 0.5}]


def test_prediction_panels_layout():
  img = np.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4, 1)
  logits = np.full((2, 3, 4, 1), -50.0)
  logits[0, 1, 2] = 50.0
  masks = np.zeros((2, 3, 4, 1))
  masks[1, 0, 0] = 1
  p = reporting.prediction_panels(img, logits, masks)
  assert p.shape == (2, 3, 12, 1) and p.dtype == np.uint8
  assert p[0, 1, 4 + 2, 0] == 255 and p[0, 0, 4, 0] == 0  # score panel
  assert p[1, 0, 8, 0] == 255  # mask panel
  assert p[0, ..., :4, 0].min() == 0 and p[0, ..., :4, 0].max() == 255  # image stretched per panel
