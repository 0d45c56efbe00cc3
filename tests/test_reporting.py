"""metrics.jsonl (the record every run keeps, with or without TensorFlow) and the image panels.

Progress reporting is tested in tests/test_cli.py."""

import json

import numpy as np

from eaau_jax import reporting


def test_jsonl_writer_and_multiwriter(tmp_path):
  path = tmp_path / "metrics.jsonl"
  w = reporting.MultiWriter([reporting.JsonlWriter(str(path))])
  w.write_scalars(3, {"loss": np.float32(0.5), "iou": 0.25})
  w.write_hparams({"lr": 0.05})
  w.flush()
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"step": 3, "loss": 0.5, "iou": 0.25}]
  assert json.loads((tmp_path / "hparams.json").read_text()) == {"lr": 0.05}


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
