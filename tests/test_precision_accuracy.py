"""benchmarks/precision_accuracy.py: each arm trains and tests through main.py with its overrides
as --config.KEY=VALUE, a trained run is evaluated again (not trained) for a test-only override
and a finished one read back, a bad override fails naming its field, and the table pairs each
arm with float32 seed by seed."""

import argparse
import json
import os

import pytest

from benchmarks import precision_accuracy
from eaau_jax import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_one_arm_trains_and_tests_in_both_dtypes_through_main_py(tmp_path, capsys):
  # The float32 evaluations read back the eval step that training compiled (the same program)
  # from the suite's compilation cache (tests/conftest.py).
  # One bucket shape (every tiny image padded to 128): one eval compilation per process.
  argv = ["--config", TINY, "--workdir", str(tmp_path), "--seeds", "3", "--arms", "control",
          "--set", "num_epochs=1", "--set", "input.eval_pad_multiple=128",
          "--set", "tensorboard=False",  # no TensorFlow import (~5 s a process)
          "--control", "model.upsampling=transpose_3x3"]
  precision_accuracy.main(argv)
  run = tmp_path / "control" / "seed_3"
  with open(run / "hparams.json") as f:
    hparams = json.load(f)
  # The seed, the arm's dtype, --set and --control all reached the training run's config.
  assert hparams["seed"] == 3 and hparams["num_epochs"] == 1
  assert hparams["input"]["eval_pad_multiple"] == 128
  assert hparams["compute_dtype"] == "float32"
  assert hparams["model"]["upsampling"] == "transpose_3x3"
  with open(run / "precision.json") as f:
    record = json.load(f)
  assert record["seed"] == 3 and record["train_dtype"] == "float32"
  assert record["curve"][-1][0] == 4  # one epoch: 16 train images at batch 4
  for dtype in precision_accuracy.DTYPES:
    with open(run / f"eval_{dtype}" / "eval_test_native.json") as f:
      report = json.load(f)
    assert report["compute_dtype"] == dtype and report["split"] == "test"
    assert record["test"][dtype] == report["metrics"]
    assert record["checkpoint"] == report["checkpoint"] and str(run) in report["checkpoint"]
  out = capsys.readouterr().out
  assert "| control | float32 |" in out and "| control | bfloat16 |" in out
  assert "(8 images)" in out
  # A test-only override: the trained run is evaluated again on 12 test images (in float32 only),
  # not trained again, into a record of its own beside the first.
  trained = [os.path.getmtime(run / n) for n in ("train.log", "trained.json", "precision.json")]
  precision_accuracy.main(argv + ["--test-set", "dataset.synthetic.num_test=12",
                                 "--test-dtypes", "float32"])
  out = capsys.readouterr().out
  assert "training seed" not in out and "(12 images)" in out
  assert "| control | float32 |" in out and "| control | bfloat16 |" not in out
  assert [os.path.getmtime(run / n) for n in ("train.log", "trained.json", "precision.json")] \
      == trained
  with open(run / "precision_dataset.synthetic.num_test-12.json") as f:
    larger = json.load(f)
  assert larger["test_set"] == ["dataset.synthetic.num_test=12"]
  assert larger["checkpoint"] == record["checkpoint"] and larger["curve"] == record["curve"]
  assert list(larger["test"]) == ["float32"] and larger["test"]["float32"]["images"] == 12
  # The same command again reads the record back: nothing runs.
  mtime = os.path.getmtime(run / "precision_dataset.synthetic.num_test-12.json")
  precision_accuracy.main(argv + ["--test-set", "dataset.synthetic.num_test=12",
                                  "--test-dtypes", "float32"])
  assert "(12 images)" in capsys.readouterr().out
  assert os.path.getmtime(run / "precision_dataset.synthetic.num_test-12.json") == mtime
  # Other training overrides on the same workdir: refused, the finished run not reused.
  with pytest.raises(SystemExit, match="was trained as .*num_epochs=1.*not .*num_epochs=2"):
    precision_accuracy.main(argv + ["--set", "num_epochs=2"])


def test_a_bad_override_fails_naming_the_field(tmp_path):
  with pytest.raises(SystemExit, match="no_such_field"):
    precision_accuracy.main(["--config", TINY, "--workdir", str(tmp_path), "--seeds", "0",
                             "--arms", "float32", "--set", "no_such_field=1"])


def test_no_arm_to_run_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    precision_accuracy.main(["--workdir", str(tmp_path), "--arms", "control"])
  assert "control needs --control" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_a_run_stopped_by_sigterm_is_not_recorded_and_a_retraining_drops_old_test_records(
    tmp_path, monkeypatch):
  """main.py exits 0 when a SIGTERM stops training (saved, to resume): that run is not recorded
  as trained (nor tested); the next call trains again (main.py resumes) and records it. Test
  records left from an earlier training of the folder go when it is trained again."""
  endings = iter([summary.training(str(tmp_path), "native", "val", 3, 8, 2, 1.0, preempted=True),
                  summary.training(str(tmp_path), "native", "val", 8, 8, 2, 1.0)])

  def main_py(args, mode, run_dir, dtype, overrides, log, *extra):
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": 0, "val_native_iou": 0.1, "val_native_niou": 0.1}) + "\n")
    with open(log, "w") as f:
      f.write("I1128 train.py] ...\n" + next(endings) + "\n")

  monkeypatch.setattr(precision_accuracy, "main_py", main_py)
  args = argparse.Namespace(config=TINY)
  run = tmp_path / "float32" / "seed_0"
  run.mkdir(parents=True)
  for name in ("precision.json", "precision_dataset.synthetic.num_test-480.json"):
    (run / name).write_text("{}")
  with pytest.raises(SystemExit, match="stopped by SIGTERM.*the same command resumes"):
    precision_accuracy.train(args, 0, "float32", ["seed=0"], str(run))
  assert sorted(os.listdir(run)) == ["metrics.jsonl", "train.log"]
  record = precision_accuracy.train(args, 0, "float32", ["seed=0"], str(run))
  assert record["seed"] == 0 and record["curve"] == [[0, 0.1, 0.1, "native"]]
  assert sorted(os.listdir(run)) == ["metrics.jsonl", "train.log", "trained.json"]


def _record(iou: float) -> dict:
  metrics = {"iou": iou, "niou": iou}
  return {"test": {"float32": metrics, "bfloat16": metrics}, "curve": [[0, 0.1], [8, iou]],
          "train_seconds": 10.0}


def test_the_table_pairs_each_arm_with_float32_by_seed():
  records = {("float32", 0): _record(0.30), ("float32", 1): _record(0.20),
             ("bfloat16", 0): _record(0.25), ("bfloat16", 1): _record(0.22)}
  text = precision_accuracy.table(records, [0, 1], ["float32", "bfloat16"])
  # Seed 0: 0.25 - 0.30 = -0.05; seed 1: 0.22 - 0.20 = +0.02; mean -0.015, mean absolute 0.035.
  assert "| bfloat16 | -0.0500, +0.0200 | -0.0150 ± 0.0495 | 0.0350 |" in text
  assert "| float32 | float32 | 0.3000, 0.2000 | 0.2500 ± 0.0707 |" in text
