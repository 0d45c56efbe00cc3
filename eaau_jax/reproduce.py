"""One command from a config to a RESULTS.md: train each seed, evaluate each best-on-val checkpoint on
test under both protocols, and report mean and spread next to the paper's numbers.

  python -m eaau_jax.reproduce --config configs/sirst.py --seeds 3 --workdir runs/sirst \
      [--results RESULTS.md] [--label "..."] [--parallel 3]

Seed s trains in ``<workdir>/seed_<s>`` and resumes whatever is there (a finished seed is only
re-evaluated). The results file holds one section per (config, label); re-running replaces that
section and keeps the others, so one RESULTS.md can gather a GPU run and a reduced CPU run.

``--parallel N`` trains N seeds at once, each in its own process. It does not buy throughput
where the host or the GPU's memory bandwidth is the limit: on one H100, 1, 2 or 4 seeds side by
side trained at 23-26 steps/s in total (BENCHMARKS.md). On SIGTERM (a scheduler's preemption,
``timeout``) every running seed saves its step and the command exits 0 without evaluating or
reporting anything unfinished; the same command resumes.

The seeds share JAX's persistent compilation cache in ``<workdir>/jax_cache`` (unless
``JAX_COMPILATION_CACHE_DIR`` names another): the initial state, train and evaluation steps do not
depend on the seed (train.seed_key), so every seed after the first reads them from it instead of
compiling them again.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from eaau_jax import evaluate, input_pipeline, train

PROTOCOLS = input_pipeline.PROTOCOLS
METRICS = (("IoU", "iou"), ("nIoU", "niou"), ("Pd", "pd"), ("Fa (1e-6)", "fa"), ("AP", "ap"),
           ("F-measure", "f_measure"), ("F-area", "f_area"), ("ROC AUC", "roc_auc"))
# Paper Table 3 (EAAU-Net, SIRST 5:2:3 test): the `acm` protocol (README "Protocols").
PAPER = {"acm": {"iou": 0.771, "niou": 0.746, "f_area": 0.681}}
# ACM's released ACM-U-Net weights imported here (eaau_jax/mxnet_params.py) and run on SIRST idx_320
# test; `acm` equals ../shared/docs/protocol.md's figures exactly. At native size 82 of the 96 images
# have a side that is not a multiple of 4, where the released net cannot run as is; cropping each
# upsampled map to its skip (our port) gives the figures below.
ACM_UNET_RELEASED = {"acm": {"iou": 0.7435, "niou": 0.7235, "pd": 0.961, "fa": 7.4e-6},
                     "native": {"iou": 0.6966, "niou": 0.6750, "pd": 0.912, "fa": 27.5e-6}}


def machine() -> str:
  """The accelerator (or CPU model) and software this ran on."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    cpu = platform.processor() or platform.machine()
    try:
      with open("/proc/cpuinfo") as f:
        cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
      pass
    what = f"CPU: {cpu}, {os.cpu_count()} cores"
  else:
    what = f"{jax.device_count()} x {dev.device_kind}"
  return f"{what}; Python {platform.python_version()}, jax {jax.__version__}"


def use_compilation_cache(workdir: str, environ=None) -> str | None:
  """Points JAX's persistent compilation cache at ``<workdir>/jax_cache`` and returns it, unless
  the user chose a cache (``JAX_COMPILATION_CACHE_DIR``, which JAX reads itself): None then."""
  if (os.environ if environ is None else environ).get("JAX_COMPILATION_CACHE_DIR"):
    return None
  path = os.path.join(os.path.abspath(workdir), "jax_cache")
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def run_seed(config: ml_collections.ConfigDict, workdir: str, protocols) -> dict:
  """Trains (or resumes) one seed and evaluates its best-on-val checkpoint on the test split."""
  log_path = os.path.join(workdir, "reproduce.json")
  done = {}
  if os.path.exists(log_path):
    with open(log_path) as f:
      done = json.load(f)
  t0 = time.time()
  train.train_and_evaluate(config, workdir)
  train_s = done.get("train_seconds", 0.0) + time.time() - t0  # over every resumption
  t1 = time.time()
  reports = evaluate.run_eval(workdir, config.dataset.test_split, os.path.join(workdir, "eval"),
                              protocols=list(protocols))
  record = {"train_seconds": train_s, "eval_seconds": time.time() - t1,
            "checkpoint": reports[protocols[0]]["checkpoint"],
            "test": {p: r["metrics"] for p, r in reports.items()},
            "curve": validation_curve(workdir)}
  with open(log_path, "w") as f:
    json.dump(record, f, indent=1)
  return record


def validation_curve(workdir: str) -> list:
  """[(step, val IoU, val nIoU, protocol)] from the run's metrics.jsonl; a step evaluated again
  after a resumption counts once (the last)."""
  rows = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      for p in PROTOCOLS:
        if f"val_{p}_iou" in r:
          rows[(r["step"], p)] = (r["step"], r[f"val_{p}_iou"], r[f"val_{p}_niou"], p)
  return sorted(rows.values())


def _spread(values: list, digits: int = 4) -> str:
  f = lambda v: f"{v:.{digits}f}"
  mean = statistics.fmean(values)
  if len(values) == 1:
    return f(mean)
  return f"{f(mean)} ± {f(statistics.stdev(values))} ({f(min(values))}–{f(max(values))})"


def _fmt(key: str, v) -> str:
  if v is None:
    return ""
  return f"{v * 1e6:.1f}" if key == "fa" else f"{v:.4f}"


def results_table(records: list, protocol: str, references: bool) -> str:
  """Markdown: metric | mean ± std (min–max) | per seed [| paper | ACM-U-Net released weights]."""
  head = "| metric | this run: mean ± std (min–max) | per seed |"
  lines = [head + " paper (Table 3) | ACM-U-Net, released weights |" if references else head,
           "|---|---|---|---:|---:|" if references else "|---|---|---|"]
  for name, key in METRICS:
    digits = 1 if key == "fa" else 4
    vals = [r["test"][protocol][key] * (1e6 if key == "fa" else 1) for r in records]
    row = f"| {name} | {_spread(vals, digits)} | {', '.join(f'{v:.{digits}f}' for v in vals)} |"
    if references:
      row += (f" {_fmt(key, PAPER.get(protocol, {}).get(key))} |"
              f" {_fmt(key, ACM_UNET_RELEASED.get(protocol, {}).get(key))} |")
    lines.append(row)
  return "\n".join(lines)


def curve_table(record: dict) -> str:
  rows = ["| step | val IoU | val nIoU |", "|---:|---:|---:|"]
  rows += [f"| {s} | {iou:.4f} | {niou:.4f} |" for s, iou, niou, _ in record["curve"]]
  return "\n".join(rows)


def plot_curves(records: list, path: str, protocol: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for seed, r in enumerate(records):
    steps = [c[0] for c in r["curve"]]
    ax.plot(steps, [c[1] for c in r["curve"]], ".-", label=f"seed {seed} IoU")
    ax.plot(steps, [c[2] for c in r["curve"]], ":", label=f"seed {seed} nIoU")
  ax.set(xlabel="step", ylabel=f"validation ({protocol} protocol)", ylim=(0, 1))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def section(config, config_path: str, label: str, workdir: str, records: list, curve_png: str,
            wall_s: float) -> str:
  """The Markdown section of one reproduction."""
  d, m, o, i = config.dataset, config.model, config.optimizer, config.input
  split = f"{d.name} {d.get('split_folder', '')}" if d.name == "sirst" else d.name
  # The paper's and the released weights' numbers are SIRST idx_320 test figures.
  references = d.name == "sirst" and d.get("split_folder") == "idx_320" and d.test_split == "test"
  train_min = statistics.median(r["train_seconds"] for r in records) / 60
  seeds = len(records)
  protocol_rows = "\n\n".join(
      f"### Test split, `{p}` protocol ({evaluate.PROTOCOL_TEXT[p].format(base=i.base_size)})\n\n"
      f"{results_table(records, p, references)}" for p in PROTOCOLS if p in records[0]["test"])
  note = ("The paper's column is Table 3 (EAAU-Net, b = 3 per the text); the released ACM-U-Net "
          "column is ACM's own weights imported here and run on the same test images, a trained "
          "reference under the same protocol." if references else
          "No published figure uses this dataset and split, so no reference column is shown.")
  return f"""## {label}

- Command: `python -m eaau_jax.reproduce --config {config_path} --seeds {seeds} --workdir {workdir}`
- Machine: {machine()}. Written {time.strftime('%Y-%m-%d')}.
- Wall time: {wall_s / 60:.1f} min for this invocation; training {train_min:.1f} min per seed
  (median, summed over resumptions), evaluation of both protocols {statistics.median(r['eval_seconds'] for r in records):.0f} s per seed.
- Protocol: {split}; trained on `{d.train_split}`, checkpoint = best validation IoU on `{d.eval_split}`
  under the `{config.eval.protocol}` protocol, reported on `{d.test_split}`; a pixel is a target where
  its logit > 0 (score > 0.5); Pd/Fa: 8-connected targets, centroid distance < 3 px; Fa in 1e-6.
- Recipe: {m.get('name', 'eaau_net')} b = {m.blocks}, fusion {m.fusion}, upsampling {m.upsampling};
  {config.num_epochs} epochs, batch {config.batch_size}, crops {i.crop_size} (scale x U{tuple(i.scale_range)} of
  the {'base size ' + str(i.base_size) if i.scale_reference == 'base' else "image's own long side"});
  {o.name} ({o.get('form', '')}) lr {o.learning_rate}, weight decay {o.weight_decay}; seeds 0..{seeds - 1}.

{protocol_rows}

{note}

### Learning curve (validation, `{config.eval.protocol}` protocol)

![learning curve]({curve_png})

Seed 0:

{curve_table(records[0])}
"""


def write_section(path: str, key: str, text: str):
  """Replaces the section ``key`` of the results file (or appends it), keeping the others."""
  begin, end = f"<!-- reproduce: {key} -->", f"<!-- /reproduce: {key} -->"
  old = open(path).read() if os.path.exists(path) else "# Results\n\n"
  block = f"{begin}\n{text.strip()}\n{end}"
  if begin in old:
    head, rest = old.split(begin, 1)
    new = head + block + rest.split(end, 1)[1]
  else:
    new = old.rstrip() + "\n\n" + block + "\n"
  with open(path, "w") as f:
    f.write(new)


def seed_dir(workdir: str, seed: int) -> str:
  """Where seed ``seed`` of a reproduction trains, checkpoints and writes its record."""
  return os.path.join(workdir, f"seed_{seed}")


def seed_config(config, seed: int) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.seed = seed
  return cfg


# Exit status of a --only_seed child stopped by SIGTERM (saved, to resume): not a finished seed.
PREEMPTED_EXIT = 75  # EX_TEMPFAIL


def _die_with_parent():
  """In a child: SIGTERM it when the parent dies (Linux), so no orphan goes on training."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _child_argv(argv: list) -> list:
  """This command line less --parallel (and its value)."""
  args, rest = [], iter(argv[1:])
  for a in rest:
    if a in ("--parallel", "-parallel"):
      next(rest, None)
    elif not a.lstrip("-").startswith("parallel="):
      args.append(a)
  return [sys.executable, "-m", "eaau_jax.reproduce", *args]


def run_parallel(seeds: int, parallel: int, workdir: str, argv: list) -> list:
  """Runs seeds 0..seeds-1, ``parallel`` at a time, each in its own process (this command line
  with ``--only_seed``), sharing the accelerator. A SIGTERM here is passed on to the running seeds,
  which save and stop; then ``train.Preempted`` is raised and nothing is reported. Returns the
  seeds' records."""
  env = dict(os.environ)
  # Each process would otherwise pre-allocate 75% of the GPU's memory.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
  base, pending, running = _child_argv(argv), list(range(seeds)), {}
  signalled, stopped = [], []  # a SIGTERM received here; seeds that stopped unfinished
  halted = lambda: bool(signalled or stopped)  # no new seed starts; the run ends Preempted
  def forward(signum, frame):
    del frame
    signalled.append(signum)
    for p in running.values():
      p.send_signal(signal.SIGTERM)
  previous = signal.signal(signal.SIGTERM, forward)
  try:
    while running or (pending and not halted()):
      while pending and not halted() and len(running) < parallel:
        seed = pending.pop(0)
        logging.info("reproduce: seed %d of %d in its own process", seed, seeds)
        running[seed] = subprocess.Popen(base + [f"--only_seed={seed}"], env=env,
                                         preexec_fn=_die_with_parent)
      for seed, proc in list(running.items()):
        if proc.poll() is None:
          continue
        del running[seed]
        if proc.returncode == PREEMPTED_EXIT or (halted() and proc.returncode == -signal.SIGTERM):
          stopped.append(seed)  # saved mid-training, or stopped while evaluating
        elif proc.returncode:
          raise RuntimeError(f"reproduce: seed {seed} failed (exit {proc.returncode}); its log "
                             f"is above, its run in {seed_dir(workdir, seed)}")
      time.sleep(0.5)
  finally:
    signal.signal(signal.SIGTERM, previous)
    for p in running.values():  # after a failure: stop the others (they save and exit)
      p.send_signal(signal.SIGTERM)
      p.wait()
  if halted():
    raise train.Preempted(-1, -1, workdir)  # per seed, the steps are in its own log
  records = []
  for seed in range(seeds):
    with open(os.path.join(seed_dir(workdir, seed), "reproduce.json")) as f:
      records.append(json.load(f))
  return records


def reproduce(config, config_path: str, seeds: int, workdir: str, results: str,
              label: str = "", parallel: int = 1, argv=()) -> list:
  """Trains and evaluates ``seeds`` seeds (``parallel`` at a time, each in a subprocess started
  with ``argv``); writes their section of ``results``. Returns the records."""
  t0 = time.time()
  if parallel > 1:
    records = run_parallel(seeds, parallel, workdir, list(argv))
  else:
    records = []
    for seed in range(seeds):
      logging.info("reproduce: seed %d of %d in %s", seed, seeds, workdir)
      records.append(run_seed(seed_config(config, seed), seed_dir(workdir, seed),
                              PROTOCOLS))
  label = label or f"{config_path}, {seeds} seed{'s' * (seeds > 1)}"
  slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()
  out_dir = os.path.dirname(os.path.abspath(results))
  png = os.path.join("results", f"{slug}_curve.png")
  os.makedirs(os.path.join(out_dir, "results"), exist_ok=True)
  plot_curves(records, os.path.join(out_dir, png), config.eval.protocol)
  write_section(results, label, section(config, config_path, label, workdir, records, png,
                                        time.time() - t0))
  logging.info("reproduce: wrote %s", results)
  return records


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  use_compilation_cache(FLAGS.workdir)  # --parallel's children: the same folder as their parent
  try:
    if FLAGS.only_seed is not None:  # one seed of a --parallel run: train, evaluate, no report
      run_seed(seed_config(FLAGS.config, FLAGS.only_seed),
               seed_dir(FLAGS.workdir, FLAGS.only_seed), PROTOCOLS)
      return
    config_path = FLAGS["config"].value if isinstance(FLAGS["config"].value, str) else None
    results = FLAGS.results or os.path.join(FLAGS.workdir, "RESULTS.md")
    reproduce(FLAGS.config, FLAGS.config_path or config_path or "?", FLAGS.seeds, FLAGS.workdir,
              results, FLAGS.label or "", FLAGS.parallel, sys.argv)
  except train.Preempted:
    # Saved where it stopped; nothing half-trained is evaluated or reported. A scheduler's
    # SIGTERM is a clean stop (exit 0); a --parallel child tells its parent it did not finish.
    logging.warning("reproduce: stopped by SIGTERM before the end; the same command resumes")
    if FLAGS.only_seed is not None:
      sys.exit(PREEMPTED_EXIT)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
  flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1.")
  flags.DEFINE_string("workdir", None, "One sub-folder per seed.")
  flags.DEFINE_string("results", None, "The Markdown file (default <workdir>/RESULTS.md).")
  flags.DEFINE_string("label", None, "Section title (default: config path and seeds).")
  flags.DEFINE_string("config_path", None, "How to name the config in the report.")
  flags.DEFINE_integer("parallel", 1, "Seeds run at once, each in its own process.",
                       lower_bound=1)
  flags.DEFINE_integer("only_seed", None, "Internal (--parallel): train and evaluate this seed "
                       "only, write no report.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
