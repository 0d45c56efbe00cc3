"""JAX (this project) against its PyTorch twin (benchmarks/torch_twin) on this machine.

Figures, for configs/sirst.py's model (b = 3, EAA, its `upsampling`), float32:
  train_256, train_480  images/s of the full training step, batch 8 at that crop size. JAX: the
                        project's jitted train step (train.compile_steps: forward, soft-IoU,
                        backward, PyTorch-form AdaGrad, BatchNorm statistics, its step
                        diagnostics; state donated). PyTorch: twin.train(), forward, soft-IoU,
                        backward, torch.optim.Adagrad with the config's lr, weight decay, eps and
                        initial accumulator. Dropout 0.1 in both.
  infer_native          ms per image, batch 1, over SIRST's test split (configs/sirst.py's split
                        folder) at each image's own size. JAX as the project evaluates under the
                        `native` protocol: padded to a bucket (multiples of
                        config.input.eval_pad_multiple) with the valid mask, so it computes more
                        pixels (the padded/real ratio is printed); PyTorch at the image's own size
                        (padded to a multiple of 4 only). Without the dataset: a fixed sample of
                        its sizes (FALLBACK_SIZES).
  infer_512             ms per image, batch 1, one 512 x 512 image (the `acm` protocol's size;
                        JAX passes the all-ones valid mask, as its evaluation does).
  peak RSS              max resident memory of the subprocess that measured the figure
                        (ru_maxrss), in MB; the header gives that after importing the framework.
Each figure is measured in its own subprocess per framework, alternating which framework goes
first, for --rounds rounds; printed: the median over rounds (each round's value is the median of
its timed steps, after untimed warm-up steps that include JAX's compilation) and the ratio of JAX's
speed to PyTorch's (> 1: JAX faster; for memory, JAX MB / PyTorch MB). Both get the same CPU
cores (the first --threads of this process's affinity); PyTorch runs with
torch.set_flush_denormal(True) (without it its inference slowed 30x after training steps: issue 10).

  python benchmarks/speed.py --quick                      # a smoke run, minutes: not figures
  python benchmarks/speed.py --rounds 3 --write BENCHMARKS.md   # the figures, on a quiet machine
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a clean clone without installing the project

TASKS = ("train_256", "train_480", "infer_native", "infer_512")
FRAMEWORKS = ("jax", "torch")
BATCH = 8
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
# 16 sizes (H, W) of SIRST idx_320's test split, for machines without the dataset.
FALLBACK_SIZES = [(256, 320), (240, 320), (209, 302), (220, 232), (197, 296), (183, 278),
                  (238, 352), (289, 292), (237, 237), (301, 376), (324, 324), (260, 363),
                  (362, 374), (349, 439), (174, 187), (210, 210)]


# ---------------------------------------------------------------- inputs
def test_sizes(limit: int | None = None) -> tuple[list, str]:
  """(H, W) of every image of configs/sirst.py's test split, read from the PNG headers of the
  release beside the checkout; FALLBACK_SIZES where it is absent."""
  from configs import sirst  # pylint: disable=g-import-not-at-top
  d = sirst.get_config().dataset
  root = (ROOT / d.manual_dir).resolve()
  split = root / d.split_folder / f"{d.test_split}.txt"
  if not split.is_file():
    return FALLBACK_SIZES[:limit], f"{len(FALLBACK_SIZES[:limit])} fixed SIRST sizes (no dataset)"
  from PIL import Image  # pylint: disable=g-import-not-at-top
  names = split.read_text().split()[:limit]
  sizes = []
  for name in names:
    with Image.open(root / "images" / f"{name}.png") as im:
      sizes.append((im.size[1], im.size[0]))
  return sizes, f"SIRST {d.split_folder} {d.test_split}, {len(sizes)} images"


def batch_arrays(n: int, h: int, w: int, seed: int = 0):
  """A normalised-looking image batch and sparse targets (NHWC, float32), the same for both."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, h, w, 1)).astype(np.float32)
  t = (rng.uniform(size=(n, h, w, 1)) > 0.998).astype(np.float32)
  return x, t


def rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, warmup: int, steps: int) -> tuple[float, list]:
  """Seconds of the warm-up calls in all, and of each timed call (fn must wait for its result)."""
  t0 = time.perf_counter()
  for _ in range(warmup):
    fn()
  warm = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return warm, times


# ---------------------------------------------------------------- JAX side
def jax_state():
  """configs/sirst.py's model and optimizer as the project builds them (train.create_train_state)."""
  from configs import sirst  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, models, train  # pylint: disable=g-import-not-at-top
  config = sirst.get_config()
  mesh = input_pipeline.make_mesh()
  state = train.create_train_state(config, models.model_from_config(config.model), 1000, mesh)
  return config, mesh, state


def jax_train(spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, train  # pylint: disable=g-import-not-at-top
  config, mesh, state = jax_state()
  x, t = batch_arrays(BATCH, spec["crop"], spec["crop"])
  batch = input_pipeline.to_global(mesh, {"image": x, "mask": t})
  p_train, _ = train.compile_steps(config, mesh)
  holder = [state]

  def step():
    holder[0], metrics = p_train(holder[0], batch)  # the state is donated: keep the new one
    jax.block_until_ready((holder[0], metrics))

  warm, times = timed(step, spec["warmup"], spec["steps"])
  return {"value": BATCH / statistics.median(times), "times": times, "warmup_s": warm}


def jax_infer(spec: dict) -> dict:
  """Batch-1 inference as the project evaluates: train.predict_logits under jit, each image
  zero-padded to its bucket (spec["bucket"]: multiples of config.input.eval_pad_multiple) with
  the valid mask marking its pixels."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, train  # pylint: disable=g-import-not-at-top
  config, _, state = jax_state()
  multiple = config.input.eval_pad_multiple if spec["bucket"] else 1
  inputs, computed, real = [], 0, 0
  for k, (h, w) in enumerate(spec["sizes"]):
    bh, bw = input_pipeline.bucket_shape(h, w, multiple)
    x = np.zeros((1, bh, bw, 1), np.float32)
    valid = np.zeros((1, bh, bw, 1), np.float32)
    x[:, :h, :w] = batch_arrays(1, h, w, seed=k)[0]
    valid[:, :h, :w] = 1.0
    inputs.append(jax.device_put((x, valid)))
    computed, real = computed + bh * bw, real + h * w
  predict = jax.jit(train.predict_logits)

  def one_pass():
    for x, valid in inputs:
      jax.block_until_ready(predict(state, x, valid))

  warm, times = timed(one_pass, spec["warmup"], spec["steps"])
  return {"value": 1e3 * statistics.median(times) / len(inputs), "times": times,
          "warmup_s": warm, "padded_ratio": computed / real,
          "shapes": len({x.shape for x, _ in inputs})}


def jax_versions() -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "device": jax.devices()[0].device_kind}


# ---------------------------------------------------------------- PyTorch side
def torch_net(threads: int):
  """The twin of configs/sirst.py's model, with PyTorch set up for a fair CPU run."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_twin import model as twin  # pylint: disable=g-import-not-at-top
  from configs import sirst  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.set_flush_denormal(True)  # XLA flushes denormals; PyTorch slows 30x on them otherwise
  config = sirst.get_config()
  m = config.model
  if m.name != "eaau_net":
    raise ValueError(f"the twin is EAAU-Net; configs/sirst.py names {m.name!r}")
  net = twin.EAAUNet(config.input.channels, tuple(m.widths), m.blocks, m.fusion, m.sa_groups,
                     m.reduction, m.upsampling, m.head_dropout)
  return config, net


def nchw(a):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(a.transpose(0, 3, 1, 2).copy())


def torch_train(spec: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_twin import model as twin  # pylint: disable=g-import-not-at-top
  config, net = torch_net(spec["threads"])
  o, loss_cfg = config.optimizer, config.loss
  if (o.name, o.form, o.schedule, o.warmup_steps) != ("adagrad", "pytorch", "constant", 0):
    raise ValueError("the twin's step is torch.optim.Adagrad at a constant rate; configs/sirst.py "
                     f"has {o.name}/{o.form}/{o.schedule}/warm-up {o.warmup_steps}")
  opt = torch.optim.Adagrad(net.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay,
                            eps=o.eps, initial_accumulator_value=o.initial_accumulator_value)
  x, t = (nchw(a) for a in batch_arrays(BATCH, spec["crop"], spec["crop"]))
  net.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = twin.soft_iou_loss(net(x), t, loss_cfg.reduction, loss_cfg.smooth)
    loss.backward()
    opt.step()

  warm, times = timed(step, spec["warmup"], spec["steps"])
  return {"value": BATCH / statistics.median(times), "times": times, "warmup_s": warm}


def torch_infer(spec: dict) -> dict:
  """Batch-1 inference of each image at its own size (the twin pads to a multiple of 4)."""
  import torch  # pylint: disable=g-import-not-at-top
  _, net = torch_net(spec["threads"])
  net.eval()
  inputs = [nchw(batch_arrays(1, h, w, seed=k)[0]) for k, (h, w) in enumerate(spec["sizes"])]

  def one_pass():
    with torch.inference_mode():
      for x in inputs:
        net(x)

  warm, times = timed(one_pass, spec["warmup"], spec["steps"])
  return {"value": 1e3 * statistics.median(times) / len(inputs), "times": times,
          "warmup_s": warm}


def torch_versions() -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


WORKERS = {("jax", "train"): jax_train, ("jax", "infer"): jax_infer,
           ("torch", "train"): torch_train, ("torch", "infer"): torch_infer}
VERSIONS = {"jax": jax_versions, "torch": torch_versions}


def worker(framework: str, spec: dict) -> None:
  """One measurement in this process: pinned to the given cores, prints one RESULT line."""
  os.sched_setaffinity(0, spec["cpus"])
  before = time.perf_counter()
  VERSIONS[framework]()  # imports the framework: its memory counts as "after import"
  import_rss = rss_mb()
  result = WORKERS[framework, spec["kind"]](spec)
  result.update(import_rss_mb=import_rss, peak_rss_mb=rss_mb(), versions=VERSIONS[framework](),
                wall_s=time.perf_counter() - before)
  print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the driver
# Steps per measurement: untimed warm-up calls (JAX compiles in the first), then timed ones.
MODES = {
    "full": {"rounds": 3, "warmup": 2, "train_steps": 3, "infer_steps": 10, "native_passes": 2,
             "native_images": None},
    "quick": {"rounds": 1, "warmup": 1, "train_steps": 1, "infer_steps": 2, "native_passes": 1,
              "native_images": 4},
}
LABELS = {  # figure, and whether its value is a speed (higher is better) or a time
    "train_256": ("train images/s, 256 x 256 crops, batch 8", True),
    "train_480": ("train images/s, 480 x 480 crops, batch 8", True),
    "infer_native": ("inference ms/image, SIRST test images at native size, batch 1", False),
    "infer_512": ("inference ms/image, 512 x 512, batch 1", False),
}


def task_specs(o: dict, sizes: list, cpus: list) -> dict:
  base = {"threads": len(cpus), "cpus": cpus, "warmup": o["warmup"]}
  return {
      "train_256": {**base, "kind": "train", "crop": 256, "steps": o["train_steps"]},
      "train_480": {**base, "kind": "train", "crop": 480, "steps": o["train_steps"]},
      # One warm-up pass compiles every bucket shape of the split.
      "infer_native": {**base, "kind": "infer", "sizes": sizes, "bucket": True, "warmup": 1,
                       "steps": o["native_passes"]},
      "infer_512": {**base, "kind": "infer", "sizes": [(512, 512)], "bucket": False,
                    "steps": o["infer_steps"]},
  }


def worker_env(threads: int) -> dict:
  env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
  if threads == 1:  # XLA's CPU thread pool otherwise takes every core it may run on
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                        " intra_op_parallelism_threads=1").strip()
  return env


def run_one(framework: str, spec: dict, timeout: float) -> dict:
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", framework,
         "--spec", json.dumps(spec)]
  p = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(spec["threads"]),
                     timeout=timeout, check=False)
  lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
  if p.returncode or not lines:
    raise RuntimeError(f"{framework} {spec['kind']} failed (exit {p.returncode}):\n"
                       f"{p.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def measure(tasks: list, specs: dict, rounds: int, timeout: float) -> dict:
  """results[task][framework]: one worker result per round; the framework that goes first
  alternates from round to round and task to task, so a drift in machine load hits both."""
  results = {task: {f: [] for f in FRAMEWORKS} for task in tasks}
  for r in range(rounds):
    for i, task in enumerate(tasks):
      for f in (FRAMEWORKS if (r + i) % 2 == 0 else FRAMEWORKS[::-1]):
        res = run_one(f, specs[task], timeout)
        results[task][f].append(res)
        print(f"round {r + 1}/{rounds}  {task:12s} {f:5s} {res['value']:9.3f}  "
              f"(warm-up {res['warmup_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB)",
              flush=True)
  return results


def num(v: float) -> str:
  return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def cell(values: list) -> str:
  med = num(statistics.median(values))
  return med if len(values) == 1 else f"{med} ({', '.join(num(v) for v in values)})"


def figure_rows(results: dict) -> list:
  """(figure, JAX, PyTorch, JAX/PyTorch) rows: speeds, then memory, then warm-up."""
  rows = []
  for task, per in results.items():
    label, is_speed = LABELS[task]
    jv, tv = ([r["value"] for r in per[f]] for f in FRAMEWORKS)
    ratio = statistics.median(jv) / statistics.median(tv)
    rows.append((label, cell(jv), cell(tv), f"{ratio if is_speed else 1 / ratio:.2f}"))
  for key, what in (("peak_rss_mb", "peak RSS MB"), ("warmup_s", "warm-up s (JAX: compile)")):
    for task, per in results.items():
      jv, tv = ([r[key] for r in per[f]] for f in FRAMEWORKS)
      rows.append((f"{what}, {task}", cell(jv), cell(tv),
                   f"{statistics.median(jv) / statistics.median(tv):.2f}"))
  return rows


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    info = pathlib.Path("/proc/cpuinfo").read_text()
    cpu = re.search(r"model name\s*:\s*(.*)", info).group(1)
    cpu += ", AVX-512 BF16" if "avx512_bf16" in info else ""
    mem = re.search(r"MemTotal:\s*(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1)
    cpu += f", {int(mem) / 2**20:.0f} GiB memory"
  except (OSError, AttributeError):
    pass
  return f"{cpu}; {os.cpu_count()} cores seen; {platform.system()} {platform.release()}"


def report(results: dict, mode: str, o: dict, cpus: list, sizes_note: str) -> str:
  """The Markdown block: what was run where, the figures, what each is."""
  first = {f: next(iter(results.values()))[f][0] for f in FRAMEWORKS}
  versions = {**first["jax"]["versions"], **first["torch"]["versions"]}
  lines = [
      f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
      f"`{' '.join(['python benchmarks/speed.py', *sys.argv[1:]])}`"
      + (" (**--quick: a smoke run, one round of one timed step: not figures to quote**)"
         if mode == "quick" else "") + ".",
      "",
      f"- machine: {machine()}",
      f"- threads: {len(cpus)} for both (cores {cpus}; torch.set_num_threads, OMP_NUM_THREADS,"
      " XLA's pool by the process's CPU affinity)",
      f"- Python {platform.python_version()}; " + ", ".join(f"{k} {v}" for k, v in
                                                           versions.items()),
      f"- {o['rounds']} round(s); per measurement {o['warmup']} untimed warm-up step(s), then "
      f"{o['train_steps']} timed train steps / {o['infer_steps']} timed 512 inferences / "
      f"{o['native_passes']} timed pass(es) over the native images; medians",
  ]
  if "infer_native" in results:
    j = results["infer_native"]["jax"][0]
    lines.append(f"- native sizes: {sizes_note}; JAX computes {j['padded_ratio']:.2f}x the real "
                 f"pixels (buckets of config.input.eval_pad_multiple, {j['shapes']} shapes)")
  imported = {f: statistics.median(r["import_rss_mb"] for per in results.values() for r in per[f])
              for f in FRAMEWORKS}
  lines.append(f"- RSS after importing the framework (part of every peak below): JAX "
               f"{imported['jax']:.0f} MB, PyTorch {imported['torch']:.0f} MB")
  lines += ["", "| figure | JAX | PyTorch | JAX/PyTorch |", "|---|---:|---:|---:|"]
  lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in figure_rows(results)]
  lines += ["", "JAX/PyTorch is JAX's speed over PyTorch's (> 1: JAX faster) for the first rows, "
            "JAX's value over PyTorch's for memory and warm-up. Values in brackets: each round. "
            "What each figure measures: the docstring of benchmarks/speed.py."]
  return "\n".join(lines)


def write_block(path: str, block: str) -> None:
  """Replaces the text between the speed markers of ``path`` (creating either as needed)."""
  p = pathlib.Path(path)
  text = p.read_text() if p.exists() else "# Benchmarks\n"
  block = f"{BEGIN}\n{block}\n{END}"
  if BEGIN in text and END in text:
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
  else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
  p.write_text(text)


def parse_args():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="one round of one timed step, 4 images")
  ap.add_argument("--rounds", type=int)
  ap.add_argument("--warmup", type=int)
  ap.add_argument("--train-steps", type=int)
  ap.add_argument("--infer-steps", type=int)
  ap.add_argument("--native-passes", type=int)
  ap.add_argument("--native-images", type=int, help="the first N test images (default: all)")
  ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {TASKS}")
  ap.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
  ap.add_argument("--write", metavar="PATH", help="also write the block into PATH (markers)")
  ap.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  ap.add_argument("--spec", help=argparse.SUPPRESS)
  return ap.parse_args()


def main():
  args = parse_args()
  if args.worker:
    return worker(args.worker, json.loads(args.spec))
  mode = "quick" if args.quick else "full"
  o = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in MODES[mode].items()}
  tasks = [t for t in args.tasks.split(",") if t]
  unknown = set(tasks) - set(TASKS)
  if unknown or not tasks:
    raise SystemExit(f"--tasks: unknown {sorted(unknown)}; choose from {TASKS}")
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]
  sizes, sizes_note = test_sizes(o["native_images"])
  print(f"{mode} run: {o['rounds']} round(s) of {tasks}, {len(cpus)} thread(s) on cores {cpus}; "
        f"native sizes: {sizes_note}", flush=True)
  results = measure(tasks, task_specs(o, sizes, cpus), o["rounds"], args.timeout)
  block = report(results, mode, o, cpus, sizes_note)
  print("\n" + block)
  if args.write:
    write_block(args.write, block)
    print(f"\nwrote {args.write}")


if __name__ == "__main__":
  main()
