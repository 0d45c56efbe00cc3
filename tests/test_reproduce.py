"""The reproduction command on the tiny config: trains each seed, evaluates both protocols, writes
its section of a results file; re-running resumes (no retraining) and keeps other sections."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from conftest import NO_TENSORBOARD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}


def reproduce(workdir, results):
  cmd = [sys.executable, "-m", "eaau_jax.reproduce", "--config",
         os.path.join(ROOT, "configs/tiny.py"), "--config_path", "configs/tiny.py", "--seeds", "2",
         "--workdir", str(workdir), "--results", str(results), "--label", "tiny check",
         NO_TENSORBOARD]
  # Without the suite's cache (conftest.py): the run's own, in the workdir, is what is tested.
  env = {k: v for k, v in ENV.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def test_reproduce_trains_seeds_evaluates_both_protocols_and_reports(tmp_path):
  results = tmp_path / "RESULTS.md"
  results.write_text("# Results\n\nkept intro\n\n<!-- reproduce: other -->\nother run\n"
                     "<!-- /reproduce: other -->\n")
  reproduce(tmp_path / "runs", results)
  text = results.read_text()
  assert "kept intro" in text and "other run" in text
  assert text.count("<!-- reproduce: tiny check -->") == 1
  seeds = [json.load(open(tmp_path / "runs" / f"seed_{s}" / "reproduce.json")) for s in (0, 1)]
  for protocol in ("acm", "native"):
    ious = [s["test"][protocol]["iou"] for s in seeds]
    assert ious[0] != ious[1]  # two seeds, two runs
    row = next(l for l in text.split(f"### Test split, `{protocol}` protocol")[1].splitlines()
               if l.startswith("| IoU |"))
    assert f"{statistics.fmean(ious):.4f} ± {statistics.stdev(ious):.4f}" in row
    assert f"{ious[0]:.4f}, {ious[1]:.4f}" in row
    # Each seed's numbers are those of its own eval report (best-on-val checkpoint, test split).
    report = json.load(open(tmp_path / "runs" / "seed_0" / "eval" / f"eval_test_{protocol}.json"))
    assert report["metrics"]["iou"] == pytest.approx(seeds[0]["test"][protocol]["iou"])
    assert report["checkpoint"].split("(step ")[0].rstrip().endswith("seed_0")
  acm_table = text.split("### Test split, `acm` protocol")[1].split("### Test split, `native`")[0]
  assert "paper (Table 3)" not in acm_table  # synthetic data: no published figure applies
  assert "Machine: CPU" in text and "configs/tiny.py" in text
  assert (tmp_path / "results" / "tiny_check_curve.png").stat().st_size > 1000
  # The seeds shared the run's compilation cache: one train-step program for both seeds.
  cached = os.listdir(tmp_path / "runs" / "jax_cache")
  assert len([f for f in cached if f.startswith("jit_train_step-") and "atime" not in f]) == 1, cached
  # Re-running resumes: nothing is retrained, the section is replaced, not duplicated.
  trained = (tmp_path / "runs" / "seed_0" / "metrics.jsonl").read_text()
  reproduce(tmp_path / "runs", results)
  assert (tmp_path / "runs" / "seed_0" / "metrics.jsonl").read_text() == trained
  assert results.read_text().count("<!-- reproduce: tiny check -->") == 1


def test_compilation_cache_goes_to_the_workdir_unless_the_user_chose_one(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from eaau_jax import reproduce as rp  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
  updates = []
  assert rp.use_compilation_cache("runs/x", {"JAX_COMPILATION_CACHE_DIR": "/c"}) is None
  assert not updates  # JAX reads the user's variable itself
  path = rp.use_compilation_cache(str(tmp_path / "runs"), {})
  assert path == str(tmp_path / "runs" / "jax_cache")
  assert updates == [("jax_compilation_cache_dir", path)]


def test_results_table_puts_the_paper_and_released_weights_beside_the_runs():
  from eaau_jax import reproduce as rp
  metrics = lambda iou: {"iou": iou, "niou": 0.5, "pd": 0.9, "fa": 2e-5, "ap": 0.6,
                         "f_measure": 0.7, "f_area": 0.42, "roc_auc": 0.95}
  records = [{"test": {"acm": metrics(0.70)}}, {"test": {"acm": metrics(0.74)}}]
  table = rp.results_table(records, "acm", references=True)
  assert "| IoU | 0.7200 ± 0.0283 (0.7000–0.7400) | 0.7000, 0.7400 | 0.7710 | 0.7435 |" in table
  assert "| Fa (1e-6) | 20.0 ± 0.0 (20.0–20.0) | 20.0, 20.0 |  | 7.4 |" in table
  assert "| F-area | 0.4200" in table and "| 0.6810 |" in table
  assert "0.7710" not in rp.results_table(records, "acm", references=False)


def test_sigterm_stops_every_parallel_seed_unreported_and_the_same_command_resumes(tmp_path):
  """A scheduler's SIGTERM (or `timeout`) reaches only the parent of a --parallel run: every seed
  must save and stop with it (no orphan training on), and no stopped seed may be evaluated and
  reported as if it had finished. Run again, the same command finishes and reports."""
  runs, results = tmp_path / "runs", tmp_path / "RESULTS.md"
  cmd = [sys.executable, "-m", "eaau_jax.reproduce", "--config", os.path.join(ROOT, "configs/tiny.py"),
         "--config.num_epochs=10", "--config.eval_every_epochs=100",
         "--config.checkpoint_every_steps=1000", NO_TENSORBOARD, "--seeds", "2",
         "--parallel", "2",
         "--workdir", str(runs), "--results", str(results), "--label", "stopped"]
  proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  seen = []
  try:
    deadline = time.time() + 300
    # SIGTERM as soon as one seed trains (waiting for both would let a fast one finish first):
    # the other is then training too, or still starting, and must stop either way.
    while not any("step 2/40" in l for l in seen):
      line = proc.stderr.readline()
      assert line and time.time() < deadline, "".join(seen)[-3000:]
      seen.append(line)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
  finally:
    proc.kill()
  log = "".join(seen) + rest
  assert proc.returncode == 0, log[-3000:]
  assert "stopped by SIGTERM" in log
  assert not results.exists()
  saved = []
  for seed in (0, 1):
    assert not (runs / f"seed_{seed}" / "reproduce.json").exists()
    ckpts = runs / f"seed_{seed}" / "checkpoints"
    saved += [int(s) for s in os.listdir(ckpts) if s.isdigit()] if ckpts.exists() else []
  assert saved and 2 <= max(saved) < 40, saved  # the SIGTERM save (periodic saves are off)
  time.sleep(2)  # an orphan would still be training (and writing checkpoints)
  ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
  assert str(runs) not in ps
  r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Resumed from" in r.stderr
  for seed in (0, 1):
    assert json.load(open(runs / f"seed_{seed}" / "reproduce.json"))["test"]["acm"]["images"] == 8
  assert "| IoU |" in results.read_text()
