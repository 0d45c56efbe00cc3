"""Multi-process training as a pod runs it, on this machine (issue 11): ``main.py`` as 2 processes x
2 CPU devices (``jax.distributed`` on 127.0.0.1 with gloo collectives, each process given its
devices by ``--xla_force_host_platform_device_count``) against 1 process x 4 devices, the same
global batch. One module-scoped set of runs pays for every test here.

What each process reads is observed from outside the loader: a ``sitecustomize`` module on the
runs' PYTHONPATH records every example the synthetic source hands out (split, index) into a file
per JAX process, so the record does not depend on how the input pipeline is built.
"""

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from conftest import NO_TENSORBOARD, step_dirs  # the 2-process run keeps its events: tested
from eaau_jax import checkpoints, cli, input_pipeline, metrics, models, train
from eaau_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # per run: a process stuck in a collective fails the test instead of hanging CI
STEPS = 8  # tiny: 16 examples, batch 4, 2 epochs
# The all-reduce of two processes adds in another order than one process does, so the runs agree
# to float tolerance only where training does not amplify rounding, and tiny's recipe does: the
# same steps on 2 vs 4 devices of ONE process differ by 5e-4 (relative) after 1 step and 7e-2
# after 8 with its native-scale crops, whose near-cancelling gradient sums make rounding relative;
# PyTorch's AdaGrad then moves a weight with g ~ 0 by lr * sign(noise); and at lr 0.05 MXNet's form
# still doubles a difference every step. With ACM's base-scale crops and MXNet's AdaGrad (smooth in
# g, as tests/steps_on_devices.py) at lr 0.01, eps 1e-7 kept 2 processes and 1 within 2e-5 for 8
# steps on an AVX-512 CPU but not on an AVX2 one (Zen 3: up to 1e-2 in BatchNorm statistics):
# for |g| << sqrt(eps) its update is lr * g / sqrt(eps), 33x a gradient's rounding noise a step.
# eps 1e-2 makes that 0.1x: 1e-3 of the tolerance on the AVX2 CPU.
# A fixed mean/std: otherwise every process reads the whole train split at start to compute them.
# eval_pad_multiple 96: one eval bucket shape (one compilation) for tiny's 40-72 px images.
ARGS = ["--config", os.path.join(ROOT, "configs/tiny.py"), "--config.input.scale_reference=base",
        "--config.optimizer.form=mxnet", "--config.optimizer.eps=1e-2",
        "--config.optimizer.learning_rate=0.01", "--config.dataset.mean=100",
        "--config.dataset.std=40", "--config.input.eval_pad_multiple=96"]
READS = "EAAU_TEST_READS"
SITECUSTOMIZE = textwrap.dedent(f"""\
    import os
    if os.environ.get({READS!r}):
      from eaau_jax import synthetic
      _read = synthetic.SyntheticSource.__getitem__
      def _recorded(self, index):
        with open(os.environ[{READS!r}], "a") as f:  # one short append: whole lines, any process
          f.write(f"{{self.split}} {{int(index)}}\\n")
        return _read(self, index)
      synthetic.SyntheticSource.__getitem__ = _recorded
    """)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(name: str, args_per_process: list, devices: int, tmp) -> list:
  """Starts one ``main.py`` per argument list (``devices`` CPU devices each) and waits for all of
  them, ``TIMEOUT`` at most; if one fails or time runs out, kills every one still running. Returns
  each one's output (stdout and stderr)."""
  hook = tmp / "hook"
  hook.mkdir(exist_ok=True)
  (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
  procs, logs = [], [tmp / f"{name}{k}.log" for k in range(len(args_per_process))]
  try:
    for k, args in enumerate(args_per_process):
      env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), ROOT]),
             "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
             "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
             READS: str(tmp / f"{name}{k}.reads")}
      with open(logs[k], "w") as log:
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in procs):
      # One failed process leaves the others waiting at a barrier for minutes: stop at once.
      if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  outs = [log.read_text() for log in logs]
  # Every process's status and output tail: the one that failed first is not always process 0
  # (the others then show -9, killed here).
  assert all(p.returncode == 0 for p in procs), "\n".join(
      f"--- {name} process {k}: status {p.returncode}\n{out[-2500:]}"
      for k, (p, out) in enumerate(zip(procs, outs)))
  return outs


def reads(tmp, name: str, split: str) -> collections.Counter:
  path = tmp / f"{name}.reads"
  lines = path.read_text().split("\n") if path.exists() else []
  return collections.Counter(int(i) for s, _, i in (l.partition(" ") for l in lines) if s == split)


def read_jsonl(workdir) -> list:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def tree_bytes(folder) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """two: 2 processes x 2 devices; one: 1 process x 4 devices; eval: 1 process evaluating two's
  last checkpoint; resumed: 1 process going on from a copy of two's workdir for one more epoch."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  t0 = time.monotonic()
  port = free_port()
  job = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  two = str(tmp / "two")
  out = {"two": run_processes("two", [[*ARGS, "--workdir", two, *job, f"--process_id={k}"]
                                      for k in range(2)], 2, tmp)}
  out["t_two"] = time.monotonic() - t0
  one = str(tmp / "one")
  out["one"] = run_processes("one", [[*ARGS, "--workdir", one, NO_TENSORBOARD]], 4, tmp)
  out["eval"] = run_processes("eval", [[
      "--mode=eval", "--workdir", two, "--checkpoint", os.path.join(two, "checkpoints", str(STEPS)),
      "--split=val", "--output", str(tmp / "eval")]], 4, tmp)
  resumed = str(tmp / "resumed")
  shutil.copytree(two, resumed)
  out["resumed"] = run_processes("resumed", [[*ARGS, "--workdir", resumed,
                                              "--config.num_epochs=3", NO_TENSORBOARD]], 4, tmp)
  out["t_all"] = time.monotonic() - t0
  print(f"2 processes: {out['t_two']:.0f} s; all runs: {out['t_all']:.0f} s")
  return tmp, out


def final_states(*workdirs) -> list:
  """The last checkpoint of each workdir, restored as a resumed run restores it
  (``Checkpoints.restore_latest`` into ``train.abstract_train_state``), here in one process on
  this process's devices. One template: the runs share their config."""
  config = checkpoints.upgrade_config(checkpoints.read_meta(
      *checkpoints.locate(os.path.join(workdirs[0], "checkpoints")))["config"])
  mesh = input_pipeline.make_mesh()
  template = train.abstract_train_state(config, models.model_from_config(config.model))
  out = []
  for workdir in workdirs:
    ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
    state = ckpt.restore_latest(template, mesh)
    ckpt.close()
    out.append(jax.device_get({"params": state.params, "batch_stats": state.batch_stats,
                               "opt_state": state.opt_state, "step": state.step}))
  return out


def test_two_processes_train_as_one_process_with_four_devices(runs):
  tmp, out = runs
  for k, log in enumerate(out["two"]):
    assert f"JAX process {k}/2" in log and "4 devices, 2 processes" in log, log[-3000:]
  a, b = final_states(tmp / "two", tmp / "one")
  assert int(a.pop("step")) == int(b.pop("step")) == STEPS
  for (ka, va), (kb, vb) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                                jax.tree_util.tree_flatten_with_path(b)[0]):
    assert ka == kb
    np.testing.assert_allclose(va, vb, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(ka))
  loss = lambda w: [r["train_loss"] for r in read_jsonl(tmp / w) if "train_loss" in r]
  assert len(loss("two")) == STEPS // 2  # logged every 2 steps, once (by process 0)
  np.testing.assert_allclose(loss("two"), loss("one"), rtol=1e-5)


def test_each_process_reads_only_its_rows(runs):
  tmp, _ = runs
  # tiny: 16 train examples read once an epoch for 2 epochs; 8 val examples evaluated 3 times,
  # but read once: validation keeps its batches (config.input.eval_cache_mb).
  for split, examples, times in (("train", 16, 2), ("val", 8, 1)):
    p0, p1, one = (reads(tmp, n, split) for n in ("two0", "two1", "one0"))
    assert one == collections.Counter({i: times for i in range(examples)}), (split, one)
    # Half of the reads each, and together exactly the reads of one process: no row twice.
    assert sum(p0.values()) == sum(p1.values()) == examples * times // 2, (split, p0, p1)
    assert p0 + p1 == one, split


def test_one_checkpoint_directory_resumable_by_one_process(runs):
  tmp, out = runs
  two, one = tmp / "two", tmp / "one"
  # Orbax's multi-process save: one checkpoints/ and one best/, the same steps as one process
  # wrote, nothing left half-written (orbax writes into a tmp folder, then renames it).
  assert sorted(p for p in os.listdir(two) if not p.startswith("events.")) == sorted(
      p for p in os.listdir(one) if not p.startswith("events."))
  assert len([p for p in os.listdir(two) if p.startswith("events.")]) == 1  # process 0's
  for folder in ("checkpoints", "best"):
    assert step_dirs(two / folder) == step_dirs(one / folder)
    assert not [p for p in os.listdir(two / folder) if "tmp" in p], os.listdir(two / folder)
  # Written once, jointly: one state item committed once, each process writing its share into
  # its own OCDBT shard (what the two wrote restores to one process's result: the first test).
  # Not a byte count: orbax splits replicated arrays over the replicas, and for a model this
  # small the per-slice overhead varies: 2 processes wrote 1.33x one process's bytes in one run,
  # under 1.25x in another.
  state = two / "checkpoints" / str(STEPS) / "state"
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state))
  assert (state / "commit_success.txt").exists()
  assert all(tree_bytes(state / f"ocdbt.process_{k}") > 0 for k in range(2))
  assert [r["step"] for r in read_jsonl(two)] == [r["step"] for r in read_jsonl(one)]
  # One process goes on from it: restores step 8 and trains the third epoch.
  log = out["resumed"][0]
  assert f"Resumed from {tmp / 'resumed' / 'checkpoints'} at step {STEPS}" in log, log[-3000:]
  assert "1 processes" in log
  assert step_dirs(tmp / "resumed" / "checkpoints")[-1] == STEPS + 4


def test_eval_metrics_identical_to_one_process(runs):
  tmp, _ = runs
  val = lambda w, step: next(r for r in read_jsonl(tmp / w)
                             if r["step"] == step and "val_native_iou" in r)
  # The same state (the initialisation), evaluated by 2 processes and by 1: every number equal.
  assert val("two", 0) == val("one", 0)
  # Two's last checkpoint, evaluated by one process (--mode=eval), as two logged it: Pd and Fa
  # count the targets of both processes' rows (each process labels only its own on the host).
  report = json.load(open(tmp / "eval" / "eval_val_native.json"))["metrics"]
  logged = val("two", STEPS)
  assert logged["val_native_targets"] == report["targets"] == val("one", 0)["val_native_targets"]
  for k in ("iou", "niou", "pd", "fa", "ap", "f_measure", "roc_auc"):
    assert logged[f"val_native_{k}"] == report[k], k
  assert 0 < report["pd"] < 1 and report["fa"] > 0  # something detected, something missed


def test_job_flags_go_together_and_say_what_is_missing():
  args = lambda *a, distributed=None, env=None: cli.distributed_args(distributed, *a, env or {})
  assert args(None, None, None) is None
  assert args(None, None, None, env={"SLURM_NTASKS": "4"}) == {}  # JAX detects the job
  assert args("10.0.0.1:1234", 2, 1) == {"coordinator_address": "10.0.0.1:1234",
                                         "num_processes": 2, "process_id": 1}
  needs = "--{}: a multi-process job needs {} too"
  bad = [(("h:1", None, 0), needs.format("coordinator_address", "--num_processes")),
         ((None, 2, None), needs.format("num_processes", "--coordinator_address and --process_id")),
         ((None, None, 1), needs.format("process_id", "--coordinator_address and --num_processes")),
         (("h", 2, 0), "'h' is not HOST:PORT"), (("h:x", 2, 0), "'h:x' is not HOST:PORT"),
         (("h:1", 2, 2), "2 is not below --num_processes=2")]
  for given, message in bad:
    with pytest.raises(ConfigError, match=message):
      args(*given)
  with pytest.raises(ConfigError, match=r"--distributed=false: --num_processes starts"):
    args(None, 2, None, distributed=False)
  # From the command line: one error line, status 2, before JAX starts.
  r = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--workdir", "w",
                      "--process_id=1"], env={**os.environ, "PYTHONPATH": ROOT},
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 2 and r.stderr.splitlines()[0] == (
      "error: a multi-process job needs --coordinator_address and --num_processes too "
      "(--process_id)"), r.stderr


def test_metrics_are_the_same_however_the_batch_is_split():
  """Each device (and process) sums its rows, then the sums add up: integer counts, nIoU's
  per-image IoUs in fixed point, so 1 x 4 devices and 2 x 2 report the very same numbers."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
  masks = (rng.random((8, 16, 16, 1)) < 0.2).astype(np.float32)
  whole = metrics.SegmentationMetrics.from_model_output(logits, masks)
  for parts in (2, 4, 8):
    split = metrics.SegmentationMetrics.empty()
    for lg, m in zip(np.split(logits, parts), np.split(masks, parts)):
      split = split.merge(metrics.SegmentationMetrics.from_model_output(lg, m))
    assert split.compute() == metrics.SegmentationMetrics.empty().merge(whole).compute(), parts
  ious = [metrics.SegmentationMetrics.from_model_output(lg[None], m[None]).compute()["iou"]
          for lg, m in zip(logits, masks)]
  assert whole.compute()["niou"] == pytest.approx(np.mean(ious), abs=1e-7)
