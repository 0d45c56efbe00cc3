"""JAX (this project) against its PyTorch twin (benchmarks/torch_twin) on this machine.

Figures, for configs/sirst.py's model (b = 3, EAA, its `upsampling`), in each --dtype:
  train_256, train_480  images/s of the full training step, batch 8 at that crop size. JAX: the
                        project's jitted train step (train.compile_steps: forward, soft-IoU,
                        backward, PyTorch-form AdaGrad, BatchNorm statistics, its step
                        diagnostics; state donated). PyTorch: twin.train(), forward, soft-IoU,
                        backward, torch.optim.Adagrad with the config's lr, weight decay, eps and
                        initial accumulator. Dropout 0.1 in both.
  infer_native          ms per image, batch 1, over SIRST's test split (configs/sirst.py's split
                        folder) at each image's own size, the same pixels for both: PyTorch pads
                        each side to a multiple of 4 (the twin's own padding: the net halves
                        twice), JAX to the same (NATIVE_PAD_MULTIPLE, with the valid mask), so
                        JAX compiles once per distinct padded size (its warm-up row).
                        --pad-multiple 128 measures JAX as configs/sirst.py's `native` evaluation
                        pads instead (config.input.eval_pad_multiple: few shapes to compile, more
                        pixels; the padded/real pixel ratio is printed either way).
                        Without the dataset: a fixed sample of its sizes (FALLBACK_SIZES).
  infer_512             ms per image, batch 1, one 512 x 512 image (the `acm` protocol's size;
                        JAX passes the all-ones valid mask, as its evaluation does).
  peak RSS              max resident memory of the subprocess that measured the figure
                        (ru_maxrss), in MB; the header gives that after importing the framework.
  peak device memory    on a GPU: the most device memory the measuring process had allocated,
                        in MB (JAX: memory_stats()["peak_bytes_in_use"], its allocator's peak, not
                        the pool it preallocates; PyTorch: torch.cuda.max_memory_allocated());
                        neither counts the CUDA context.
  minor page faults     per timed step (or pass over the native images) of the measuring
                        process (ru_minflt): pages the kernel maps and zeroes afresh. With glibc's
                        default allocator every large buffer is unmapped when freed and faulted
                        in again at the next step; --malloc sets other allocator settings for
                        both frameworks (MALLOC).
  CPU-seconds           per timed step (or pass) of the measuring process, all its threads
                        (ru_utime, ru_stime): user space (the frameworks' computation, and worker
                        threads waiting busily for work) and the kernel (page faults, mostly).
                        Over the step's wall time they give the cores kept busy; between
                        frameworks, which one does more work where.
--dtype bfloat16: JAX computes with config.compute_dtype = "bfloat16" (train.model_apply: params
and image cast to bf16, logits back to float32; params, optimizer state, BatchNorm statistics and
loss float32); PyTorch runs the forward (and the loss) under torch.autocast(device, bfloat16) with
float32 params. Those figures' names end in "_bfloat16".
--device: auto (default) runs JAX on its default backend and PyTorch on CUDA when
torch.cuda.is_available(), else both on the CPU; cpu or cuda forces both. On CUDA, PyTorch
synchronises before each timing ends and uses torch.backends.cudnn.benchmark (the counterpart of
XLA's convolution autotuning); warm-up steps cover both.
Each figure is measured in its own subprocess per framework, alternating which framework goes
first, for --rounds rounds; printed: the median over rounds (each round's value is the median of
its timed steps, after untimed warm-up steps that include JAX's compilation) and the ratio of JAX's
speed to PyTorch's (> 1: JAX faster; for memory, JAX MB / PyTorch MB). Both get the same CPU
cores (the first --threads of this process's affinity); PyTorch runs with
torch.set_flush_denormal(True) (without it its inference slowed 30x after training steps: issue 10).

  python benchmarks/speed.py --quick                      # a smoke run, minutes: not figures
  python benchmarks/speed.py --quick --tasks train_256 --dtype float32,bfloat16
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
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a clean clone without installing the project

from benchmarks.harness import jax_train_call, rss_mb, timed  # pylint: disable=wrong-import-position
from eaau_jax import cli  # pylint: disable=wrong-import-position  (the CPU hint's tunable)

TASKS = ("train_256", "train_480", "infer_native", "infer_512")
FRAMEWORKS = ("jax", "torch")
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
# --malloc: glibc's allocator settings, the same for both workers (GLIBC_TUNABLES, read when a
# process starts). Each step's activations are allocations of tens of MB, which glibc maps fresh
# and unmaps on free, so every step faults in and zeroes them again (the faults row).
MALLOC = {
    "default": None,
    # mapped memory in transparent huge pages (where THP is "madvise"): 512x fewer faults
    "hugetlb": cli.HUGETLB_TUNABLE,
    # nothing unmapped or trimmed, one arena: freed memory is reused, not faulted in again
    "retain": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:"
              "glibc.malloc.arena_max=1",
}
BATCH = 8
# infer_native's padding for JAX: each side to a multiple of 4, as the twin pads
# (torch_twin/model.py, EAAUNet.forward), so both compute the same pixels.
NATIVE_PAD_MULTIPLE = 4
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


# ---------------------------------------------------------------- JAX side
def jax_state(dtype: str):
  """configs/sirst.py's model and optimizer as the project builds them (train.create_train_state),
  computing in ``dtype`` (config.compute_dtype)."""
  from configs import sirst  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, models, train  # pylint: disable=g-import-not-at-top
  config = sirst.get_config()
  config.compute_dtype = dtype
  mesh = input_pipeline.make_mesh()
  state = train.create_train_state(config, models.model_from_config(config.model), 1000, mesh)
  return config, mesh, state


def jax_train(spec: dict) -> dict:
  config, mesh, state = jax_state(spec["dtype"])
  step = jax_train_call(config, mesh, state, *batch_arrays(BATCH, spec["crop"], spec["crop"]))
  t = timed(step, spec["warmup"], spec["steps"])
  return {"value": BATCH / statistics.median(t["times"]), **t}


def jax_infer(spec: dict) -> dict:
  """Batch-1 inference as the project evaluates: train.predict_logits under xla_options.jit, each
  image zero-padded to its bucket (multiples of spec["pad_multiple"]) with the valid mask marking
  its pixels."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, train, xla_options  # pylint: disable=g-import-not-at-top
  _, _, state = jax_state(spec["dtype"])
  multiple = spec["pad_multiple"]
  inputs, computed, real = [], 0, 0
  for k, (h, w) in enumerate(spec["sizes"]):
    bh, bw = input_pipeline.bucket_shape(h, w, multiple)
    x = np.zeros((1, bh, bw, 1), np.float32)
    valid = np.zeros((1, bh, bw, 1), np.float32)
    x[:, :h, :w] = batch_arrays(1, h, w, seed=k)[0]
    valid[:, :h, :w] = 1.0
    inputs.append(jax.device_put((x, valid)))
    computed, real = computed + bh * bw, real + h * w
  predict = xla_options.jit(train.predict_logits)

  def one_pass():
    for x, valid in inputs:
      jax.block_until_ready(predict(state, x, valid))

  t = timed(one_pass, spec["warmup"], spec["steps"])
  return {"value": 1e3 * statistics.median(t["times"]) / len(inputs), **t,
          "padded_ratio": computed / real, "pad_multiple": multiple,
          "shapes": len({x.shape for x, _ in inputs})}


def jax_versions() -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "device": jax.devices()[0].device_kind}


def jax_device_peak_mb():
  """Peak device memory of this process in MB; None where the backend keeps no count (CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


# ---------------------------------------------------------------- PyTorch side
def torch_device(name: str):
  """auto: CUDA where torch has it, else the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  if name == "auto":
    name = "cuda" if torch.cuda.is_available() else "cpu"
  if name == "cuda" and not torch.cuda.is_available():
    raise RuntimeError("--device cuda: this torch has no CUDA device")
  return torch.device(name)


def torch_sync(device) -> None:
  """Waits for the device's queued work (a timing must end after it)."""
  import torch  # pylint: disable=g-import-not-at-top
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def torch_autocast(device, dtype: str):
  """bf16 compute with float32 params (torch.autocast); a no-op context for float32."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def torch_net(spec: dict):
  """The twin of configs/sirst.py's model on spec["device"], PyTorch set up for a fair run."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_twin import model as twin  # pylint: disable=g-import-not-at-top
  from configs import sirst  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(spec["threads"])
  torch.set_flush_denormal(True)  # XLA flushes denormals; PyTorch slows 30x on them otherwise
  device = torch_device(spec["device"])
  torch.backends.cudnn.benchmark = True  # autotuned convolutions, as XLA's on a GPU
  config = sirst.get_config()
  m = config.model
  if m.name != "eaau_net":
    raise ValueError(f"the twin is EAAU-Net; configs/sirst.py names {m.name!r}")
  net = twin.EAAUNet(config.input.channels, tuple(m.widths), m.blocks, m.fusion, m.sa_groups,
                     m.reduction, m.upsampling, m.head_dropout)
  return config, net.to(device), device


def nchw(a, device):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(a.transpose(0, 3, 1, 2).copy()).to(device)


def torch_train_call(spec: dict):
  """A no-argument function running one training step of the twin on spec's batch (forward,
  soft-IoU, backward, torch.optim.Adagrad in configs/sirst.py's form) and waiting for it."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_twin import model as twin  # pylint: disable=g-import-not-at-top
  config, net, device = torch_net(spec)
  o, loss_cfg = config.optimizer, config.loss
  if (o.name, o.form, o.schedule, o.warmup_steps) != ("adagrad", "pytorch", "constant", 0):
    raise ValueError("the twin's step is torch.optim.Adagrad at a constant rate; configs/sirst.py "
                     f"has {o.name}/{o.form}/{o.schedule}/warm-up {o.warmup_steps}")
  opt = torch.optim.Adagrad(net.parameters(), lr=o.learning_rate, weight_decay=o.weight_decay,
                            eps=o.eps, initial_accumulator_value=o.initial_accumulator_value)
  x, t = (nchw(a, device) for a in batch_arrays(BATCH, spec["crop"], spec["crop"]))
  net.train()

  def step():
    opt.zero_grad(set_to_none=True)
    with torch_autocast(device, spec["dtype"]):  # the loss takes the logits in float32
      loss = twin.soft_iou_loss(net(x), t, loss_cfg.reduction, loss_cfg.smooth)
    loss.backward()
    opt.step()
    torch_sync(device)

  return step


def torch_train(spec: dict) -> dict:
  t = timed(torch_train_call(spec), spec["warmup"], spec["steps"])
  return {"value": BATCH / statistics.median(t["times"]), **t}


def torch_infer(spec: dict) -> dict:
  """Batch-1 inference of each image at its own size (the twin pads to a multiple of 4)."""
  import torch  # pylint: disable=g-import-not-at-top
  _, net, device = torch_net(spec)
  net.eval()
  inputs = [nchw(batch_arrays(1, h, w, seed=k)[0], device)
            for k, (h, w) in enumerate(spec["sizes"])]

  def one_pass():
    with torch.inference_mode(), torch_autocast(device, spec["dtype"]):
      for x in inputs:
        net(x)
    torch_sync(device)

  t = timed(one_pass, spec["warmup"], spec["steps"])
  return {"value": 1e3 * statistics.median(t["times"]) / len(inputs), **t}


def torch_versions() -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  gpu = torch.cuda.get_device_name() if torch.cuda.is_initialized() else None
  return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          **({"torch_device": gpu} if gpu else {})}


def torch_device_peak_mb():
  import torch  # pylint: disable=g-import-not-at-top
  if not torch.cuda.is_initialized():
    return None
  return torch.cuda.max_memory_allocated() / 2**20


WORKERS = {("jax", "train"): jax_train, ("jax", "infer"): jax_infer,
           ("torch", "train"): torch_train, ("torch", "infer"): torch_infer}
VERSIONS = {"jax": jax_versions, "torch": torch_versions}
DEVICE_PEAK = {"jax": jax_device_peak_mb, "torch": torch_device_peak_mb}


def worker(framework: str, spec: dict) -> None:
  """One measurement in this process: pinned to the given cores, prints one RESULT line."""
  os.sched_setaffinity(0, spec["cpus"])
  before = time.perf_counter()
  VERSIONS[framework]()  # imports the framework: its memory counts as "after import"
  import_rss = rss_mb()
  result = WORKERS[framework, spec["kind"]](spec)
  result.update(import_rss_mb=import_rss, peak_rss_mb=rss_mb(), versions=VERSIONS[framework](),
                peak_device_mb=DEVICE_PEAK[framework](), wall_s=time.perf_counter() - before)
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
  base = {"threads": len(cpus), "cpus": cpus, "warmup": o["warmup"],
          "malloc": o.get("malloc", "default")}
  multiple = o.get("pad_multiple") or NATIVE_PAD_MULTIPLE
  return {
      "train_256": {**base, "kind": "train", "crop": 256, "steps": o["train_steps"]},
      "train_480": {**base, "kind": "train", "crop": 480, "steps": o["train_steps"]},
      # One warm-up pass compiles every padded shape of the split.
      "infer_native": {**base, "kind": "infer", "sizes": sizes, "pad_multiple": multiple,
                       "warmup": 1, "steps": o["native_passes"]},
      "infer_512": {**base, "kind": "infer", "sizes": [(512, 512)], "pad_multiple": 1,
                    "steps": o["infer_steps"]},
  }


def figure_key(task: str, dtype: str) -> str:
  """A figure's name: the task, with the dtype appended unless it is float32."""
  return task if dtype == "float32" else f"{task}_{dtype}"


def measurement_specs(tasks: list, dtypes: list, device: str, o: dict, sizes: list,
                      cpus: list) -> dict:
  """{figure key: worker spec}, every task in every dtype, in that order."""
  specs = task_specs(o, sizes, cpus)
  return {figure_key(t, d): {**specs[t], "task": t, "dtype": d, "device": device}
          for t in tasks for d in dtypes}


def worker_env(spec: dict) -> dict:
  threads = spec["threads"]
  env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
  if threads == 1:  # XLA's CPU thread pool otherwise takes every core it may run on
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                        " intra_op_parallelism_threads=1").strip()
  if MALLOC[spec["malloc"]]:
    env["GLIBC_TUNABLES"] = MALLOC[spec["malloc"]]
  if spec["device"] != "auto":  # JAX's backend; auto: its default (a GPU where jaxlib has one)
    env["JAX_PLATFORMS"] = spec["device"]
  return env


def run_one(framework: str, spec: dict, timeout: float, script: str = __file__) -> dict:
  """One worker's result, or {"failed": why} (a timeout, or an exit with its stderr printed).
  ``script``: the file whose ``--worker framework --spec JSON`` prints the RESULT line."""
  cmd = [sys.executable, str(pathlib.Path(script).resolve()), "--worker", framework,
         "--spec", json.dumps(spec)]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(spec),
                       timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return {"failed": f"timed out after {timeout:.0f} s"}
  lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
  if p.returncode or not lines:
    print(f"{framework} {spec['kind']} failed (exit {p.returncode}):\n{p.stderr[-3000:]}",
          file=sys.stderr, flush=True)
    return {"failed": f"exit {p.returncode}"}
  return json.loads(lines[-1][len("RESULT "):])


def describe(res: dict) -> str:
  if "failed" in res:
    return f"FAILED ({res['failed']})"
  device = res["peak_device_mb"]
  return (f"{res['value']:9.3f}  (warm-up {res['warmup_s']:.1f} s, peak RSS "
          f"{res['peak_rss_mb']:.0f} MB" + ("" if device is None else
                                            f", peak device {device:.0f} MB") + ")")


def measure(keys: list, specs: dict, rounds: int, timeout: float, budget: float = None) -> dict:
  """results[key][framework]: one worker result per round; the framework that goes first
  alternates from round to round and figure to figure, so a drift in machine load hits both.
  ``budget``: seconds for all of it; each worker gets at most what is left, none starts after."""
  deadline = time.monotonic() + (budget or float("inf"))
  results = {key: {f: [] for f in FRAMEWORKS} for key in keys}
  for r in range(rounds):
    for i, key in enumerate(keys):
      for f in (FRAMEWORKS if (r + i) % 2 == 0 else FRAMEWORKS[::-1]):
        left = deadline - time.monotonic()
        res = (run_one(f, specs[key], min(timeout, left)) if left >= 1
               else {"failed": "not run: --budget spent"})
        results[key][f].append(res)
        print(f"round {r + 1}/{rounds}  {key:21s} {f:5s} {describe(res)}", flush=True)
  return results


def num(v: float) -> str:
  return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def cell(values: list) -> str:
  """Median (each round's value); None: a failed measurement."""
  ok = [v for v in values if v is not None]
  if not ok:
    return "failed"
  med = num(statistics.median(ok))
  each = ", ".join("failed" if v is None else num(v) for v in values)
  return med if len(values) == 1 else f"{med} ({each})"


def values(per: dict, key: str) -> tuple[list, list]:
  """JAX's and PyTorch's ``key`` of each round (None where it failed or was not measured)."""
  return tuple([r.get(key) for r in per[f]] for f in FRAMEWORKS)


def ratio(jv: list, tv: list, invert: bool = False) -> str:
  jv, tv = [v for v in jv if v is not None], [v for v in tv if v is not None]
  if not jv or not tv:
    return "-"
  j, t = statistics.median(jv), statistics.median(tv)
  if not j or not t:  # a count that is zero on one side (page faults) has no ratio
    return "-"
  return f"{t / j if invert else j / t:.2f}"


def label(spec: dict) -> str:
  text, _ = LABELS[spec["task"]]
  return text if spec["dtype"] == "float32" else f"{text}, {spec['dtype']}"


def figure_rows(results: dict, specs: dict) -> list:
  """(figure, JAX, PyTorch, JAX/PyTorch) rows: speeds, then memory, then warm-up."""
  rows = []
  for key, per in results.items():
    jv, tv = values(per, "value")
    is_speed = LABELS[specs[key]["task"]][1]
    rows.append((label(specs[key]), cell(jv), cell(tv), ratio(jv, tv, not is_speed)))
  for field, what in (("peak_rss_mb", "peak RSS MB"), ("peak_device_mb", "peak device MB"),
                      ("warmup_s", "warm-up s (JAX: compile)"),
                      ("faults", "minor page faults per timed step or pass"),
                      ("user_s", "user CPU-seconds per timed step or pass"),
                      ("sys_s", "system CPU-seconds per timed step or pass")):
    for key, per in results.items():
      jv, tv = values(per, field)
      if any(v is not None for v in jv + tv):
        rows.append((f"{what}, {key}", cell(jv), cell(tv), ratio(jv, tv)))
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


def succeeded(results: dict, specs: dict, framework: str, task: str = None) -> list:
  """The measurements of ``framework`` that did not fail (of ``task`` only, if given)."""
  return [r for key, per in results.items() for r in per[framework]
          if "failed" not in r and task in (None, specs[key]["task"])]


def report(results: dict, specs: dict, mode: str, o: dict, cpus: list, sizes_note: str) -> str:
  """The Markdown block: what was run where, the figures, what each is."""
  versions = {k: v for f in FRAMEWORKS for r in succeeded(results, specs, f)[:1]
              for k, v in r["versions"].items()}
  dtypes = sorted({spec["dtype"] for spec in specs.values()}, key=DTYPES.index)
  lines = [
      f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
      f"`{' '.join(['python benchmarks/speed.py', *sys.argv[1:]])}`"
      + (" (**--quick: a smoke run, one round of one timed step: not figures to quote**)"
         if mode == "quick" else "") + ".",
      "",
      f"- machine: {machine()}",
      f"- threads: {len(cpus)} for both (cores {cpus}; torch.set_num_threads, OMP_NUM_THREADS,"
      " XLA's pool by the process's CPU affinity)",
      f"- Python {platform.python_version()}; " + (", ".join(
          f"{k} {v}" for k, v in versions.items()) or "no measurement finished"),
      f"- {o['rounds']} round(s); per measurement {o['warmup']} untimed warm-up step(s), then "
      f"{o['train_steps']} timed train steps / {o['infer_steps']} timed 512 inferences / "
      f"{o['native_passes']} timed pass(es) over the native images; medians",
  ]
  if MALLOC[o.get("malloc", "default")]:
    lines.append(f"- glibc malloc for both: --malloc {o['malloc']}, GLIBC_TUNABLES="
                 f"{MALLOC[o['malloc']]}")
  if dtypes != ["float32"]:
    lines.append(f"- compute dtypes: {', '.join(dtypes)} (bfloat16: JAX config.compute_dtype, "
                 "PyTorch torch.autocast; params, optimizer state and loss float32 in both)")
  native = succeeded(results, specs, "jax", "infer_native")
  if native:
    j = native[0]
    lines.append(f"- native sizes: {sizes_note}; JAX computes {j['padded_ratio']:.2f}x the real "
                 f"pixels (buckets: multiples of {j['pad_multiple']}, {j['shapes']} shapes)")
  imported = {f: [r["import_rss_mb"] for r in succeeded(results, specs, f)] for f in FRAMEWORKS}
  if all(imported.values()):
    lines.append(f"- RSS after importing the framework (part of every peak below): JAX "
                 f"{statistics.median(imported['jax']):.0f} MB, PyTorch "
                 f"{statistics.median(imported['torch']):.0f} MB")
  lines += ["", "| figure | JAX | PyTorch | JAX/PyTorch |", "|---|---:|---:|---:|"]
  lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in figure_rows(results, specs)]
  lines += ["", "JAX/PyTorch is JAX's speed over PyTorch's (> 1: JAX faster) for the first rows, "
            "JAX's value over PyTorch's for memory, warm-up, page faults and CPU-seconds. Values "
            "in brackets: each round. What each figure measures: the docstring of "
            "benchmarks/speed.py."]
  failed = [f"{key} {f}: {r['failed']}" for key, per in results.items() for f in FRAMEWORKS
            for r in per[f] if "failed" in r]
  if failed:
    lines += ["", "Failed: " + "; ".join(failed) + "."]
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


def csv_choices(text: str, choices: tuple, flag: str) -> list:
  items = [t for t in text.split(",") if t]
  unknown = set(items) - set(choices)
  if unknown or not items:
    raise SystemExit(f"{flag}: unknown {sorted(unknown)}; choose from {choices}")
  return items


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
  ap.add_argument("--pad-multiple", type=int,
                  help=f"JAX's padding of the native sizes: multiples of this (default "
                       f"{NATIVE_PAD_MULTIPLE}: the twin's own, equal pixels; 128: "
                       "configs/sirst.py's evaluation buckets)")
  ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  ap.add_argument("--malloc", default="default", choices=list(MALLOC),
                  help="glibc allocator settings for both frameworks' workers (see MALLOC)")
  ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {TASKS}")
  ap.add_argument("--dtype", default="float32",
                  help=f"comma-separated compute dtypes, of {DTYPES}: each task in each")
  ap.add_argument("--device", default="auto", choices=DEVICES,
                  help="auto: JAX's default backend, PyTorch on CUDA where it has it")
  ap.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
  ap.add_argument("--budget", type=float,
                  help="seconds for all measurements: each gets at most what is left, none "
                       "starts after it (marked failed); the table is printed either way")
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
  o["pad_multiple"], o["malloc"] = args.pad_multiple, args.malloc
  tasks = csv_choices(args.tasks, TASKS, "--tasks")
  dtypes = csv_choices(args.dtype, DTYPES, "--dtype")
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]
  sizes, sizes_note = test_sizes(o["native_images"])
  specs = measurement_specs(tasks, dtypes, args.device, o, sizes, cpus)
  print(f"{mode} run: {o['rounds']} round(s) of {list(specs)}, {len(cpus)} thread(s) on cores "
        f"{cpus}, --device {args.device}; native sizes: {sizes_note}", flush=True)
  results = measure(list(specs), specs, o["rounds"], args.timeout, args.budget)
  block = report(results, specs, mode, o, cpus, sizes_note)
  print("\n" + block)
  if args.write:
    write_block(args.write, block)
    print(f"\nwrote {args.write}")
  if any("failed" in r for per in results.values() for f in FRAMEWORKS for r in per[f]):
    sys.exit(1)


if __name__ == "__main__":
  main()
