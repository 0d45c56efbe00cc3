"""Training, data parallelism, checkpoint resume, eval and predict modes, on tiny configs."""

import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types

import jax
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import NO_TENSORBOARD, needs_sirst, step_dirs  # `trained` keeps its events
from configs import sirst, tiny
from eaau_jax import checkpoints, cli, evaluate, input_pipeline, models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}


def run_main(*args, timeout=600, env=None, **popen):
  cmd = [sys.executable, os.path.join(ROOT, "main.py"), *args]
  return subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, text=True,
                        timeout=timeout, **popen)


def read_jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


# ---------------------------------------------------------------- optimizer
def _two_updates(cfg, w, g1, g2, batch_size=8):
  tx = train.create_optimizer(cfg, 10, batch_size)
  state = tx.init({"w": w})
  u1, state = tx.update({"w": g1}, state, {"w": w})
  w2 = w + u1["w"]
  u2, _ = tx.update({"w": g2}, state, {"w": w2})
  return np.asarray(u1["w"]), w2, np.asarray(u2["w"])


W = np.array([1.0, -2.0, 0.5])
G1, G2 = np.array([1e-4, -3.0, 0.0]), np.array([2e-4, 1.0, 0.5])


def test_adagrad_pytorch_form_by_hand():
  """torch.optim.Adagrad: g' = g + wd w; acc += g'^2; w -= lr g' / (sqrt(acc) + eps)."""
  cfg = sirst.get_config().optimizer  # the paper's: form pytorch, lr 0.05, wd 1e-4, eps 1e-10
  assert (cfg.form, cfg.learning_rate, cfg.weight_decay, cfg.eps,
          cfg.initial_accumulator_value) == ("pytorch", 0.05, 1e-4, 1e-10, 0.0)
  u1, w2, u2 = _two_updates(cfg, W, G1, G2)
  g = G1 + 1e-4 * W
  acc = g ** 2
  np.testing.assert_allclose(u1, -0.05 * g / (np.sqrt(acc) + 1e-10), rtol=1e-5)
  # The first step is lr * sign(g') wherever g' != 0: eps sits outside the root.
  np.testing.assert_allclose(u1, -0.05 * np.sign(g), rtol=1e-5)
  g = G2 + 1e-4 * w2
  acc = acc + g ** 2
  np.testing.assert_allclose(u2, -0.05 * g / (np.sqrt(acc) + 1e-10), rtol=1e-5)


def test_adagrad_mxnet_form_derives_grad_scale_from_the_batch():
  """gluon AdaGrad after trainer.step(batch): g' = g / batch; w -= lr (g'/sqrt(acc + eps) + wd w)."""
  cfg = sirst.get_config().optimizer
  cfg.update(form="mxnet", weight_decay=0.1, eps=1e-7)
  u1, w2, u2 = _two_updates(cfg, W, G1, G2, batch_size=4)
  hist = (G1 / 4) ** 2
  np.testing.assert_allclose(u1, -0.05 * (G1 / 4 / np.sqrt(hist + 1e-7) + 0.1 * W), rtol=1e-5)
  hist = hist + (G2 / 4) ** 2
  np.testing.assert_allclose(u2, -0.05 * (G2 / 4 / np.sqrt(hist + 1e-7) + 0.1 * w2), rtol=1e-5)
  assert "grad_scale" not in cfg  # derived from the batch size, not typed in


def test_warmup_and_bad_names():
  cfg = tiny.get_config().optimizer
  cfg.update(warmup_steps=4)
  u1, _, _ = _two_updates(cfg, np.array([2.0]), np.array([1.0]), np.array([1.0]))
  assert float(u1[0]) == 0.0  # warm-up starts at learning rate 0
  schedule = train.learning_rate_schedule(cfg, 10)
  np.testing.assert_allclose([schedule(i) for i in (0, 2, 4, 9)], [0, 0.025, 0.05, 0.05])
  for field, value in (("name", "sgd"), ("form", "keras"), ("schedule", "step")):
    bad = tiny.get_config().optimizer
    bad[field] = value
    with pytest.raises(ValueError, match=f"config.optimizer.{field}"):
      train.create_optimizer(bad, 10, 8)


# ---------------------------------------------------------------- data parallel
def test_same_steps_on_one_and_four_devices(tmp_path):
  """3 steps of the same global batches: losses and parameters agree to float tolerance."""
  out = {}
  for n in (1, 4):
    path = tmp_path / f"d{n}.npz"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "steps_on_devices.py"),
                        str(n), "3", str(path)], env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"devices {n}" in r.stdout
    out[n] = dict(np.load(path))
  np.testing.assert_allclose(out[1]["losses"], out[4]["losses"], rtol=1e-5)
  assert out[1]["losses"][0] != out[1]["losses"][2]  # it did train
  assert out[1].keys() == out[4].keys()
  for k in out[1]:
    np.testing.assert_allclose(out[1][k], out[4][k], rtol=2e-4, atol=2e-5, err_msg=k)


# ---------------------------------------------------------------- train, resume, eval, predict
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """An uninterrupted tiny run through main.py: (workdir, final params)."""
  workdir = str(tmp_path_factory.mktemp("run") / "wd")
  r = run_main("--config", os.path.join(ROOT, "configs/tiny.py"), "--workdir", workdir,
               "--config.num_epochs=4")
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, r


def final_params(workdir):
  manager, step = checkpoints.locate(os.path.join(workdir, "checkpoints"))
  config = tiny.get_config()
  config.num_epochs = 4
  mesh = input_pipeline.make_mesh()
  template = train.abstract_train_state(config, models.model_from_config(config.model), 16)
  state = checkpoints.restore_state(manager, step, template, mesh)
  return step, jax.device_get({"params": state.params, "batch_stats": state.batch_stats,
                               "opt_state": state.opt_state})


def test_training_writes_events_checkpoints_and_logs(trained):
  workdir, r = trained
  files = os.listdir(workdir)
  assert any(f.startswith("events.out.tfevents") for f in files), files
  assert {"checkpoints", "best", "metrics.jsonl", "hparams.json"} <= set(files)
  rows = read_jsonl(workdir)
  steps_per_epoch = 16 // 4
  last = 4 * steps_per_epoch
  assert max(r["step"] for r in rows) == last
  val = [r for r in rows if "val_native_iou" in r]  # tiny: the native protocol, named
  assert [r["step"] for r in val] == [0, 4, 8, 12, 16]  # at start, then every epoch
  train_rows = [r for r in rows if "train_loss" in r]
  assert all(0 <= r["train_loss"] <= 1 and "train_target_score" in r for r in train_rows)
  assert any("steps_per_sec" in r for r in rows)
  ckpts = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert ckpts[-1] == last and len(ckpts) <= tiny.get_config().keep_checkpoints
  best = [int(s) for s in os.listdir(os.path.join(workdir, "best")) if s.isdigit()]
  best_iou = max(r["val_native_iou"] for r in val if r["step"] > 0)
  assert len(best) == 1 and [r["val_native_iou"] for r in val if r["step"] == best[0]] == [best_iou]
  # Not on a terminal: one log line per log step (tiny: every 2 steps; step 1 compiles, untimed),
  # and none of CLU's per-write lines.
  progress_lines = [l for l in r.stderr.splitlines() if "progress.py" in l]
  assert [l.split("] ")[1].split(",")[0] for l in progress_lines] == [
      f"step {s}/{last}" for s in range(2, last + 1, 2)]
  assert "steps/s, ETA" in progress_lines[-1] and "loss 0." in progress_lines[-1]
  assert "Setting work unit notes" not in r.stderr and "train_loss=" not in r.stderr
  # The closing summary, on stdout.
  assert f"Training done: step {last} of {last} (4 epochs)" in r.stdout
  assert f"best   step {best[0]:>6}:  IoU {best_iou:.4f}" in r.stdout
  assert f"last   step {last:>6}:  IoU {val[-1]['val_native_iou']:.4f}" in r.stdout
  assert os.path.join(workdir, "best", str(best[0])) + " (best val IoU)" in r.stdout
  assert f"main.py --mode=eval --workdir {workdir}" in r.stdout


def _assert_same_params(a, b):
  for (ka, va), (kb, vb) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                                jax.tree_util.tree_flatten_with_path(b)[0]):
    assert ka == kb
    np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(ka))


def _sigterm_after_step_2(args) -> int:
  """Runs main.py, sends SIGTERM once it logs step 2, and checks what a scheduler's preemption
  needs: exit 0 within seconds, with the step reached saved. The run has no periodic checkpoint
  or evaluation, so only the SIGTERM save can have written one. Returns its step."""
  workdir = args[args.index("--workdir") + 1]
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args,
                           "--config.checkpoint_every_steps=1000",
                           "--config.eval_every_epochs=1000"],
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines, seen = queue.Queue(), []
  reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True)
  reader.start()
  try:
    deadline = time.time() + 300
    while not seen or "step 2/16" not in seen[-1]:  # the first progress line: training
      assert time.time() < deadline and proc.poll() is None, "".join(seen)[-3000:]
      try:
        seen.append(lines.get(timeout=1))
      except queue.Empty:
        pass
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    took = time.monotonic() - signalled
    out = proc.stdout.read()  # a few lines: the summary
    reader.join(timeout=10)
  finally:
    proc.kill()
  stderr = "".join(seen + list(lines.queue))
  assert proc.returncode == 0, stderr[-3000:]
  assert took < 10, took
  saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and 2 <= saved[0] < 16, saved
  assert f"SIGTERM: saved step {saved[0]} of 16" in stderr
  assert out.startswith(f"Training stopped by SIGTERM: step {saved[0]} of 16")
  return saved[0]


def test_sigterm_then_kill_and_resume_give_the_uninterrupted_result(trained, tmp_path):
  """Preempted (SIGTERM), resumed, killed (SIGKILL) after a later checkpoint, resumed again: the
  final parameters are the uninterrupted run's. (One test, to pay for one reference run.)"""
  workdir = str(tmp_path / "wd")
  args = ["--config", os.path.join(ROOT, "configs/tiny.py"), "--workdir", workdir,
          "--config.num_epochs=4", NO_TENSORBOARD]
  preempted_at = _sigterm_after_step_2(args)
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args], env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [int(s) for s in os.listdir(ckpt_dir) if s.isdigit()]
    if max(steps) > max(preempted_at, 3) and max(steps) < 16:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "training ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
  assert preempted_at < killed_at < 16
  r = run_main(*args, env={"EAAU_PROGRESS": "tty"})  # watched as on a terminal
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"Resumed from {ckpt_dir} at step {killed_at}" in r.stderr
  bar = r.stderr.splitlines()  # tqdm redraws one line with \r (text mode reads it as \n)
  assert any(s.startswith("epoch 4/4: 100%") and "| 16/16 [" in s and "loss 0." in s
             and "val IoU" in s for s in bar)
  assert not any("progress.py" in line for line in r.stderr.splitlines())
  assert f"resumed at step {killed_at}" in r.stdout
  step_a, a = final_params(trained[0])
  step_b, b = final_params(workdir)
  assert step_a == step_b == 16
  _assert_same_params(a, b)


def test_eval_timing_compiles_each_shape_once_ahead_and_reruns_fast_batches(monkeypatch):
  """eval's ms/image (evaluate.ms_per_image, compare's timer too): each bucket shape is compiled
  once, ahead and untimed, so no warm-up run; a fast batch (< RERUN_BELOW_S) is run again and the
  repeat timed. Shapes A, A, B, A with 3 batches timed: A traced, A A, A A, B traced, B B."""
  runs = []

  def predict_logits(_, images, valid):
    runs.append(f"traced {images.shape[1]}")  # at tracing only
    jax.debug.callback(lambda: runs.append(images.shape[1]))
    return images * valid

  monkeypatch.setattr(train, "predict_logits", predict_logits)
  ones = lambda h: np.ones((2, h, h, 1), np.float32)
  batches = [{"image": ones(h), "valid": ones(h), "weight": np.ones(2, np.float32)}
             for h in (8, 8, 16, 8)]
  ms = evaluate._eval_ms_per_image(None, batches, input_pipeline.make_mesh())
  jax.effects_barrier()
  assert runs == ["traced 8", 8, 8, 8, 8, "traced 16", 16, 16] and ms > 0


def test_eval_mode_reproduces_last_logged_val_metrics(trained, tmp_path):
  workdir, _ = trained
  last = max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  r = run_main("--mode=eval", "--workdir", workdir, "--checkpoint",
               os.path.join(workdir, "checkpoints", str(last)), "--split", "val",
               "--output", str(tmp_path), "--protocol", "native,acm")
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.load(open(tmp_path / "eval_val_native.json"))
  assert report["protocol"] == "native" and "native resolution" in report["protocol_text"]
  logged = [row for row in read_jsonl(workdir) if "val_native_iou" in row][-1]
  assert logged["step"] == last
  for k in ("iou", "niou", "pd", "fa", "ap", "f_measure", "f_area", "roc_auc"):
    assert report["metrics"][k] == pytest.approx(logged[f"val_native_{k}"], rel=1e-5, abs=1e-7), k
  assert report["metrics"]["num_params"] > 0 and report["metrics"]["ms_per_image"] > 0
  md = (tmp_path / "eval_val_native.md").read_text()
  assert "native protocol" in md and "| IoU |" in md and "eval_val_native_curves.png" in md
  assert Image.open(tmp_path / "eval_val_native_curves.png").size[0] > 100
  # The same run also reported the acm protocol: every image at base_size x base_size.
  acm = json.load(open(tmp_path / "eval_val_acm.json"))
  base = tiny.get_config().input.base_size
  assert acm["protocol"] == "acm" and f"{base} x {base}" in acm["protocol_text"]
  assert acm["metrics"]["images"] == report["metrics"]["images"]
  assert acm["metrics"]["iou"] != report["metrics"]["iou"]


def test_eval_default_is_best_checkpoint_on_test_split(trained, tmp_path):
  workdir, _ = trained
  reports = evaluate.run_eval(workdir, None, str(tmp_path))
  best = [int(s) for s in os.listdir(os.path.join(workdir, "best")) if s.isdigit()][0]
  assert list(reports) == ["native"]  # the config's protocol
  assert reports["native"]["split"] == "test"
  assert reports["native"]["checkpoint"].endswith(f"(step {best})")
  with pytest.raises(ValueError, match="--protocol: unknown evaluation protocol 'full'"):
    evaluate.run_eval(workdir, None, str(tmp_path), protocols=["full"])


def test_predict_writes_mask_and_overlay_for_any_size(trained, tmp_path):
  workdir, _ = trained
  inp = tmp_path / "in"
  inp.mkdir()
  rng = np.random.default_rng(0)
  sizes = {"a.png": (37, 50), "b.png": (64, 20), "c.bmp": (13, 17)}
  for name, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(inp / name)
  (inp / "notes.txt").write_text("not an image")
  (inp / "b0_broken.png").write_bytes(b"\x89PNG not really")  # sorted among the others
  out = tmp_path / "out"
  r = run_main("--mode=predict", "--workdir", workdir, "--input", str(inp), "--output", str(out),
               "--threshold", "0.3")
  # The unreadable image is skipped, listed, and makes the exit status 1; the rest are written.
  assert r.returncode == 1, r.stderr[-3000:]
  assert r.stderr.rstrip().endswith(f"error: 1 image(s) could not be read "
                                    f"({out / 'detections.json'} lists them)")
  assert "Predicted 3 of 4 images" in r.stdout and "threshold 0.3" in r.stdout
  assert r.stdout.rstrip().endswith("b0_broken.png: unreadable or corrupt image (cannot identify "
                                    f"image file '{inp / 'b0_broken.png'}')")
  det = json.load(open(out / "detections.json"))
  assert (det["threshold"], det["protocol"]) == (0.3, "native")
  assert det["threshold_logit"] == pytest.approx(np.log(0.3 / 0.7))
  assert [d["file"] for d in det["unreadable"]] == ["b0_broken.png"]
  assert [(d["file"], d["height"], d["width"]) for d in det["images"]] == [
      (n, h, w) for n, (h, w) in sorted(sizes.items())]
  for name, (h, w) in sizes.items():
    stem = os.path.splitext(name)[0]
    mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    ov = Image.open(out / f"{stem}_overlay.png")
    assert ov.size == (w, h) and ov.mode == "RGB"
    # detections.json describes exactly the mask: one entry per 8-connected component.
    targets = next(d["targets"] for d in det["images"] if d["file"] == name)
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3)))
    assert len(targets) == n and sum(t["area"] for t in targets) == (mask > 0).sum()
    assert all(t["peak_score"] > 0.3 for t in targets)
  assert sorted(os.listdir(out)) == sorted([f"{os.path.splitext(n)[0]}_{k}.png" for n in sizes
                                            for k in ("mask", "overlay")] + ["detections.json"])
  # Under `acm` the model sees base_size x base_size; masks come back at each image's own size.
  # Watched as on a terminal: a bar counts the images.
  os.remove(inp / "b0_broken.png")
  out_acm = tmp_path / "out_acm"
  r = run_main("--mode=predict", "--workdir", workdir, "--input", str(inp), "--output",
               str(out_acm), "--protocol", "acm", env={"EAAU_PROGRESS": "tty"})
  assert r.returncode == 0, r.stderr[-3000:]
  assert any(s.startswith("predict: 100%") and "3/3" in s for s in r.stderr.splitlines())
  for name, (h, w) in sizes.items():
    mask = np.asarray(Image.open(out_acm / f"{os.path.splitext(name)[0]}_mask.png"))
    assert mask.shape == (h, w)


def test_predict_equals_eval_logits(trained):
  """--mode=predict and --mode=eval share one preprocessing path: the same image gives the same
  logits through the eval loader (in a padded bucket of several) and as predict batches it
  (``EvalLoader.single``: alone, in its own bucket shape)."""
  workdir, _ = trained
  mesh = input_pipeline.make_mesh(jax.devices()[:1])
  state, config, meta, _ = evaluate.restore(workdir, mesh)
  source = input_pipeline.open_source(config.dataset, "val")
  forward = jax.jit(train.predict_logits)
  for protocol in ("native", "acm"):
    batched = {}
    for batch in train.make_eval_loader(config, source, meta["mean"], meta["std"], protocol):
      logits = np.asarray(forward(state, batch["image"], batch["valid"]))
      for k, i in enumerate(batch["index"]):
        if i >= 0:
          h, w = batch["sizes"][k]
          batched[i] = logits[k, :h, :w]
    single = train.make_eval_loader(config, source, meta["mean"], meta["std"], protocol,
                                    batch_size=1)
    for i in range(len(source)):
      batch = single.single(source[i], i)
      h, w = batch["sizes"][0]
      alone = np.asarray(forward(state, batch["image"], batch["valid"]))[0, :h, :w]
      np.testing.assert_allclose(alone, batched[i], rtol=1e-4, atol=1e-4)
    assert "plan" not in vars(single)  # predict never sized the whole folder


def test_restore_template_is_abstract_and_restores_what_a_real_template_does(trained):
  """evaluate.restore's template (train.abstract_train_state) computes nothing: shapes and dtypes
  of the state create_train_state builds; restoring into it gives the values a real one does."""
  workdir, _ = trained
  mesh = input_pipeline.make_mesh(jax.devices()[:1])
  state, config, _, step = evaluate.restore(workdir, mesh)
  model = models.model_from_config(config.model)
  real = train.create_train_state(config, model, 1, mesh)
  # Leaves by path: the treedefs differ in their static optax objects (each state builds its own).
  abstract_leaves, real_leaves = (jax.tree_util.tree_flatten_with_path(t)[0]
                                  for t in (train.abstract_train_state(config, model), real))
  assert [p for p, _ in abstract_leaves] == [p for p, _ in real_leaves]
  for (_, a), (_, r) in zip(abstract_leaves, real_leaves):
    assert isinstance(a, jax.ShapeDtypeStruct) and (a.shape, a.dtype) == (r.shape, r.dtype)
  manager, _ = checkpoints.locate(workdir)
  from_real = checkpoints.restore_state(manager, step, real, mesh)
  assert int(state.step) == step > 0
  for a, r in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(from_real)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(r))


def test_resume_restores_into_the_run_s_optimizer_schedule(tmp_path):
  """A resumed run's state comes from an abstract template (nothing compiled) whose optimizer is
  the run's own: with a cosine schedule over the run's steps, the step after resuming updates the
  params as the uninterrupted state does (a template built for 1 step would decay it to 0)."""
  config = tiny.get_config()
  config.optimizer.schedule = "cosine"
  workdir = str(tmp_path / "wd")
  run, state = train.setup(config, workdir)
  grads = jax.tree_util.tree_map(np.ones_like, state.params)
  for _ in range(3):
    state = state.apply_gradients(grads=grads)
  run.ckpt.save(3, state, run.meta)
  run.ckpt.close()
  run.report.close()
  resumed_run, resumed = train.setup(config, workdir)
  resumed_run.ckpt.close()
  resumed_run.report.close()
  assert resumed_run.start == int(resumed.step) == 3
  expected = state.apply_gradients(grads=grads).params
  _assert_same_params(resumed.apply_gradients(grads=grads).params, expected)
  moved = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a) - b).max(), expected,
                                 state.params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4  # the learning rate at step 3 is not 0


def _error_lines(r):
  """The error a person sees: exit status 2, no traceback, the last lines of stderr."""
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  return r.stderr.rstrip("\n").split("\n")[-2:]


def test_clear_errors_for_missing_and_incompatible_checkpoints(trained, tmp_path):
  workdir, _ = trained
  hint = ("hint: train one first (main.py --workdir DIR), or give --checkpoint: a workdir, its "
          "checkpoints/ or best/ folder, or a step folder")
  r = run_main("--mode=eval", "--workdir", str(tmp_path / "nothing"))
  assert _error_lines(r) == [f"error: no such checkpoint or workdir ({tmp_path / 'nothing'})", hint]
  (tmp_path / "empty").mkdir()
  r = run_main("--mode=eval", "--workdir", str(tmp_path / "empty"))
  assert _error_lines(r) == ["error: no checkpoint found (looked in best/, checkpoints/ and the "
                             f"path) ({tmp_path / 'empty'})", hint]
  r = run_main("--mode=eval", "--workdir", workdir, "--config",
               os.path.join(ROOT, "configs/tiny.py"), "--config.model.fusion=blam")
  best = [s for s in os.listdir(os.path.join(workdir, "best")) if s.isdigit()][0]
  assert _error_lines(r) == [
      "error: the config's model differs from the checkpoint's: fusion: config 'blam' vs "
      f"checkpoint 'eaa' ({os.path.join(workdir, 'best', best)})",
      "hint: leave out --config to use the checkpoint's own"]
  r = run_main("--mode=predict", "--workdir", workdir, "--input", str(tmp_path / "empty"),
               "--output", str(tmp_path / "o"))
  assert _error_lines(r)[-1] == (f"error: no images (.png, .bmp, .jpg, .jpeg, .tif, .tiff) found "
                                 f"({tmp_path / 'empty'})")


def _lowered_text(config, mesh):
  """The programs JAX's persistent cache keys on: the initial state's and the train step's,
  lowered (StableHLO), for ``config``'s model on 2 x 32 x 32 images."""
  model = models.model_from_config(config.model)
  init = jax.jit(train._initializer(config, model, 10))  # pylint: disable=protected-access
  state = train.abstract_train_state(config, model, 10)
  x = np.zeros((2, 32, 32, config.input.channels), np.float32)
  batch = input_pipeline.to_global(mesh, {"image": x, "mask": x[..., :1]})
  p_train, _ = train.compile_steps(config, mesh)
  return (init.lower(train.key_spec()).as_text(),
          p_train.lower(state, batch).as_text())


def test_another_seed_compiles_the_same_programs_with_its_own_values():
  """The seed is an argument of the compiled initialiser and train step, not a constant in them:
  their programs are the same for seeds 0 and 1 (so JAX's persistent cache serves a second seed),
  while seed 1's initial values are those jax.random.key(1) gave as a constant (as before the
  change) and a step's dropout differs between the seeds."""
  mesh = input_pipeline.make_mesh()
  configs = [tiny.get_config() for _ in range(2)]
  configs[1].seed = 1
  texts = [_lowered_text(c, mesh) for c in configs]
  assert texts[0][0] == texts[1][0] and texts[0][1] == texts[1][1]
  model = models.model_from_config(configs[1].model)
  state = train.create_train_state(configs[1], model, 10, mesh)
  x = np.zeros((1, 32, 32, configs[1].input.channels), np.float32)
  ref = jax.jit(lambda x: model.init(jax.random.key(1), x))(x)["params"]
  leaves = jax.tree_util.tree_leaves(state.params)
  assert len(leaves) == len(jax.tree_util.tree_leaves(ref)) > 10
  for a, b in zip(leaves, jax.tree_util.tree_leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rng = np.random.default_rng(0)
  batch = input_pipeline.to_global(mesh, {
      "image": rng.normal(size=(2, 32, 32, 1)).astype(np.float32),
      "mask": (rng.random((2, 32, 32, 1)) < 0.05).astype(np.float32)})
  p_train = train.compile_steps(configs[1], mesh)[0]
  copy = lambda: jax.tree_util.tree_map(lambda a: a.copy(), state)  # a step donates its state
  losses = [float(p_train.jitted(copy(), batch, train.seed_key(c.seed, mesh))[1]["loss"])
            for c in configs]  # one compiled step, each seed's dropout, the same state
  assert losses[0] != losses[1]


def test_divisibility_error_names_the_field(monkeypatch):
  monkeypatch.setattr(train.jax, "device_count", lambda: 3)
  config = tiny.get_config()
  config.batch_size, config.input.eval_batch_size = 6, 6
  train.check_divisible(config)
  config.input.eval_batch_size = 4
  with pytest.raises(ValueError, match=r"config.input.eval_batch_size: 4 is not divisible by 3"):
    train.check_divisible(config)
  config.batch_size = 8
  with pytest.raises(ValueError, match=r"config.batch_size: 8 is not divisible by 3 devices"):
    train.check_divisible(config)


def test_synthetic_default_learns(tmp_path):
  """A shortened run of the embedded default: val IoU rises well above its value at init."""
  workdir = str(tmp_path / "wd")
  # 6 epochs (192 steps at the default's constant rate): val IoU 0.0014 at init, 0.186 after 4
  # epochs, 0.256 after 6 on the 2-core AVX2 CPU (2026-11-28); 130 s alone there, 147 s for 8.
  r = run_main("--workdir", workdir, "--config.num_epochs=6", "--config.eval_every_epochs=2",
               NO_TENSORBOARD)
  assert r.returncode == 0, r.stderr[-3000:]
  val = [row for row in read_jsonl(workdir) if "val_native_iou" in row]
  assert val[0]["step"] == 0 and len(val) == 4
  start, best, last = (val[0]["val_native_iou"], max(v["val_native_iou"] for v in val),
                       val[-1]["val_native_iou"])
  assert best > 0.1 and best > start + 0.08, val
  assert last > start + 0.05, val
  train = [row for row in read_jsonl(workdir) if "train_target_score" in row]
  assert train[-1]["train_target_score"] > 0.2  # no collapse to all-background


@needs_sirst
def test_paper_adagrad_recipe_does_not_collapse_on_sirst(sirst_dataset):
  """The design notes' trap: AdaGrad with accumulator 0 collapsing to all-background within 5-20
  steps. The shipped recipe (configs/sirst.py's optimizer, PyTorch AdaGrad, and loss) on SIRST
  trainval crops, made small for CI (b = 1, 128 crops at native scale): the mean score on target
  pixels stays well above background."""
  config = sirst.get_config()
  config.dataset = sirst_dataset
  config.model.blocks = 1
  mesh = input_pipeline.make_mesh()
  src = input_pipeline.open_source(config.dataset, "trainval")
  # 128 crops at the native scale (configs/sirst_native.py's transform): at ACM's 2x scale a 128
  # crop holds a target too rarely for 40 steps to separate the scores.
  loader = input_pipeline.TrainLoader(src, 8, 128, 512, 116.0, 57.0, seed=0,
                                      scale_reference="image")
  state = train.create_train_state(config, models.model_from_config(config.model), 40, mesh)
  p_train, _ = train.compile_steps(config, mesh)
  rows = []
  for batch in list(loader.batches(0))[:40]:
    state, m = p_train(state, input_pipeline.to_global(mesh, batch))
    rows.append(jax.device_get(m))
  early = {k: np.mean([r[k] for r in rows[:5]]) for k in rows[0]}
  late = {k: np.mean([r[k] for r in rows[-10:]]) for k in rows[0]}
  # Collapse (the notes: target score 0.000 by step 5-15) would fail all of these.
  assert late["target_score"] > early["target_score"] + 0.1, (early, late)
  assert late["target_score"] > late["background_score"] + 0.15, late
  assert late["background_score"] < early["background_score"] - 0.03, (early, late)
  assert 0 < late["positive_fraction"] < 0.5, late


def test_distributed_initialisation_follows_flag_then_environment():
  wants_distributed = cli.wants_distributed  # main.py runs cli.run()
  assert wants_distributed(None, {}) is False
  assert wants_distributed(None, {"SLURM_NTASKS": "1"}) is False
  assert wants_distributed(None, {"SLURM_NTASKS": "4"}) is True
  assert wants_distributed(None, {"OMPI_COMM_WORLD_SIZE": "2"}) is True
  assert wants_distributed(None, {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) is True
  assert wants_distributed(False, {"SLURM_NTASKS": "4"}) is False
  assert wants_distributed(True, {}) is True


def _count_best_saves(ckpt) -> list:
  """Wraps ``ckpt.best.save``; the returned list fills with the steps it is called for."""
  saved, save = [], ckpt.best.save
  ckpt.best.save = lambda step, **kw: (saved.append(step), save(step, **kw))[1]
  return saved


def test_best_checkpoint_is_written_only_when_val_iou_improves(tmp_path):
  """best/ is saved only for a val IoU above the kept one (of equal ones the first stays), also
  after a resumption, which reads the kept one's IoU back; checkpoints/ is apart."""
  config = tiny.get_config()
  state = train.create_train_state(config, models.model_from_config(config.model), 8,
                                   input_pipeline.make_mesh())
  meta = {"config": config.to_dict(), "mean": 100.0, "std": 40.0, "num_params": 1}
  workdir = str(tmp_path / "wd")
  ckpt = checkpoints.Checkpoints(workdir, 10)
  assert ckpt.best_iou == -math.inf
  saved = _count_best_saves(ckpt)
  done = [ckpt.save_best(step, state, meta, {"iou": iou})
          for step, iou in [(1, 0.3), (2, 0.2), (3, 0.5), (4, 0.5), (5, 0.1)]]
  ckpt.save(5, state, meta)
  ckpt.close()
  assert saved == [1, 3] and done == [True, False, True, False, False]
  assert step_dirs(os.path.join(workdir, "best")) == [3]
  assert step_dirs(os.path.join(workdir, "checkpoints")) == [5]

  resumed = checkpoints.Checkpoints(workdir, 10)
  assert resumed.best_iou == 0.5
  saved = _count_best_saves(resumed)
  for step, iou in [(6, 0.4), (7, 0.6)]:
    resumed.save_best(step, state, meta, {"iou": iou})
  resumed.close()
  assert saved == [7]
  assert step_dirs(os.path.join(workdir, "best")) == [7]
  manager, step = checkpoints.locate(workdir)
  assert step == 7 and checkpoints.read_meta(manager, step)["val_metrics"] == {"iou": 0.6}


def test_evaluation_saves_to_best_only(monkeypatch):
  """The end-of-epoch hook evaluates every eval_every_epochs and offers the step to best/ alone:
  checkpoints/ is written every checkpoint_every_steps and at the end, not at evaluations."""
  calls = []

  class Recorder:
    def save(self, *args, **kwargs):
      calls.append("checkpoints/")

    def save_best(self, step, state, meta, val_metrics):
      calls.append(("best/", step, val_metrics["iou"]))

  config = tiny.get_config()
  config.eval_every_epochs, config.num_epochs = 2, 5
  run = types.SimpleNamespace(config=config, ckpt=Recorder(), meta={})
  monkeypatch.setattr(train, "evaluate_and_log", lambda run, state, step: {"iou": step / 100})
  for epoch in range(5):
    train.end_of_epoch(run, None, 4 * (epoch + 1), epoch)
  assert calls == [("best/", 8, 0.08), ("best/", 16, 0.16), ("best/", 20, 0.2)]


def test_checkpoint_written_before_protocols_still_evaluates(tmp_path):
  """A checkpoint whose stored config has the earlier layout (no eval.protocol, MXNet AdaGrad as
  grad_scale/weight_decay_mode, no split_folder) restores and evaluates, at native size."""
  config = tiny.get_config()
  config.optimizer.form = "mxnet"
  mesh = input_pipeline.make_mesh()
  state = train.create_train_state(config, models.model_from_config(config.model), 8, mesh)
  old = config.to_dict()
  del old["eval"], old["optimizer"]["form"], old["dataset"]["split_folder"]
  del old["input"]["scale_reference"], old["input"]["scale_range"], old["model"]["name"]
  old["optimizer"].update(grad_scale=0.25, weight_decay_mode="decoupled")
  ckpt = checkpoints.Checkpoints(str(tmp_path / "wd"), 1)
  ckpt.save_best(3, state, {"config": old, "mean": 100.0, "std": 40.0, "num_params": 1},
                 {"iou": 0.1})
  ckpt.close()
  upgraded = checkpoints.upgrade_config(old)
  assert (upgraded.eval.protocol, upgraded.optimizer.form, upgraded.dataset.split_folder) == (
      "native", "mxnet", "idx_427")
  assert "grad_scale" not in upgraded.optimizer
  reports = evaluate.run_eval(str(tmp_path / "wd"), "val", str(tmp_path / "out"))
  assert list(reports) == ["native"] and reports["native"]["metrics"]["images"] == 8
