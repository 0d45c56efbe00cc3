"""benchmarks/tree_speed.py: a tree without the config is refused by name, an absolute config path
too; one round over two trees runs each worker in its own tree and prints medians and speed-ups;
restore reads a checkpoint the script writes and removes."""

import os
import shutil
import subprocess
import sys

import pytest

from benchmarks import tree_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_missing_or_absolute_config_is_refused_by_name(tmp_path, capsys):
  with pytest.raises(SystemExit):
    tree_speed.main(["--config", "configs/tiny.py", "--trees", ROOT, str(tmp_path)])
  err = capsys.readouterr().err
  assert f"no configs/tiny.py in {tmp_path} (each --trees entry" in err  # only the one lacking it
  with pytest.raises(SystemExit):
    tree_speed.main(["--config", os.path.join(ROOT, "configs", "tiny.py"), "--trees", ROOT])
  assert "a config file's path relative to each tree" in capsys.readouterr().err


def test_each_worker_imports_the_project_from_its_own_tree(tmp_path):
  """A copy of the tree whose config fails to build: its worker fails and the real tree's does
  not, so each worker used its own tree's code (not the driver's)."""
  broken = tmp_path / "broken"
  for part in ("configs", "eaau_jax"):
    shutil.copytree(os.path.join(ROOT, part), broken / part)
  (broken / "configs" / "tiny.py").write_text("def get_config():\n  raise RuntimeError('b')\n")
  p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "tree_speed.py"),
                      "--config", "configs/tiny.py", "--trees", ROOT, str(broken), "--crop", "32",
                      "--batch", "2", "--rounds", "1", "--warmup", "1", "--steps", "2"],
                     capture_output=True, text=True, cwd=ROOT, check=True, timeout=600)
  out = p.stdout
  assert f"round 1 {ROOT}: " in out and "images/s, peak RSS" in out
  assert f"round 1 {broken}: exit 1" in out and "RuntimeError: b" in p.stderr
  assert f"  {broken}: failed" in out
  median = [line for line in out.splitlines() if line.startswith(f"  {ROOT}: ")][0]
  assert float(median.split()[1]) > 0 and median.endswith("speed-up over the first tree 1.00")


def test_restore_reads_a_checkpoint_the_first_tree_wrote_then_removes_it(tmp_path):
  p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "tree_speed.py"),
                      "--config", "configs/tiny.py", "--trees", ROOT, "--task", "restore",
                      "--rounds", "1"], capture_output=True, text=True, cwd=ROOT, check=True,
                     timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path)))
  assert "restore (seconds, once in a fresh process)" in p.stdout, p.stdout + p.stderr[-3000:]
  median = [line for line in p.stdout.splitlines() if line.startswith(f"  {ROOT}: ")][0]
  assert float(median.split()[1]) > 0 and " s (rounds " in median
  assert not os.listdir(tmp_path)  # the checkpoint written for it is gone


def test_reseed_times_a_second_seed_on_a_cache_the_first_filled_then_removes_it(tmp_path):
  p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "tree_speed.py"),
                      "--config", "configs/tiny.py", "--trees", ROOT, "--task", "reseed",
                      "--crop", "32", "--batch", "2", "--rounds", "1"], capture_output=True,
                     text=True, cwd=ROOT, check=True, timeout=600,
                     env=dict(os.environ, TMPDIR=str(tmp_path)))
  assert "reseed (seconds, once in a fresh process)" in p.stdout, p.stdout + p.stderr[-3000:]
  median = [line for line in p.stdout.splitlines() if line.startswith(f"  {ROOT}: ")][0]
  assert float(median.split()[1]) > 0
  assert not os.listdir(tmp_path)  # the round's cache is gone
