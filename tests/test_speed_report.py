"""benchmarks/speed.py's driver without running a worker: figure names per dtype, the device a
worker's JAX gets, and the table when a measurement failed (a timeout or the --budget spent)."""

import time

from benchmarks import speed

O = {**speed.MODES["quick"]}


def _specs(tasks, dtypes, device="auto"):
  return speed.measurement_specs(tasks, dtypes, device, O, [(64, 64)], [0])


def _result(value, device_mb=None):
  return {"value": value, "warmup_s": 2.0, "peak_rss_mb": 100.0, "import_rss_mb": 50.0,
          "peak_device_mb": device_mb, "versions": {"jax": "x"}}


def test_figures_are_named_by_dtype_unless_float32():
  specs = _specs(["train_256", "infer_512"], ["float32", "bfloat16"])
  assert list(specs) == ["train_256", "train_256_bfloat16", "infer_512", "infer_512_bfloat16"]
  assert specs["train_256_bfloat16"]["dtype"] == "bfloat16"
  assert specs["infer_512"]["task"] == "infer_512" and specs["infer_512"]["device"] == "auto"


def test_worker_env_sets_jax_platform_only_when_forced():
  env = lambda device: speed.worker_env(_specs(["train_256"], ["float32"], device)["train_256"])
  assert env("cpu")["JAX_PLATFORMS"] == "cpu" and env("cuda")["JAX_PLATFORMS"] == "cuda"
  assert env("auto").get("JAX_PLATFORMS") == speed.os.environ.get("JAX_PLATFORMS")


def test_table_with_a_failed_measurement_and_device_memory():
  specs = _specs(["train_480"], ["float32", "bfloat16"])
  results = {"train_480": {"jax": [_result(8.0, 900.0)], "torch": [_result(4.0, 300.0)]},
             "train_480_bfloat16": {"jax": [{"failed": "timed out after 75 s"}],
                                    "torch": [_result(6.0, 200.0)]}}
  rows = {r[0]: r[1:] for r in speed.figure_rows(results, specs)}
  assert rows["train images/s, 480 x 480 crops, batch 8"] == ("8", "4", "2.00")
  assert rows["train images/s, 480 x 480 crops, batch 8, bfloat16"] == ("failed", "6", "-")
  assert rows["peak device MB, train_480"] == ("900", "300", "3.00")
  block = speed.report(results, specs, "quick", O, [0], "no dataset")
  assert "Failed: train_480_bfloat16 jax: timed out after 75 s." in block
  assert "compute dtypes: float32, bfloat16" in block


def test_malloc_settings_reach_both_workers_and_the_header():
  """--malloc sets the same GLIBC_TUNABLES for JAX's and PyTorch's workers (a worker reads them
  when it starts); default leaves the environment alone; the header says which."""
  spec = speed.measurement_specs(["train_256"], ["float32"], "auto", {**O, "malloc": "hugetlb"},
                                 [(64, 64)], [0])["train_256"]
  assert speed.worker_env(spec)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  plain = _specs(["train_256"], ["float32"])["train_256"]
  assert speed.worker_env(plain).get("GLIBC_TUNABLES") == speed.os.environ.get("GLIBC_TUNABLES")
  results = {"train_256": {"jax": [{**_result(2.0), "faults": 730000.0}],
                           "torch": [{**_result(2.5), "faults": 0.0}]}}
  block = speed.report(results, {"train_256": spec}, "quick", {**O, "malloc": "hugetlb"}, [0],
                       "no dataset")
  assert "- glibc malloc for both: --malloc hugetlb, GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in block
  # a count of zero on one side has no ratio
  assert "| minor page faults per timed step or pass, train_256 | 730000 | 0 | - |" in block
  assert "glibc malloc" not in speed.report(results, {"train_256": plain}, "quick", O, [0], "-")


def test_pad_multiple_reaches_the_native_task_and_its_header():
  """--pad-multiple sets JAX's padding of the native sizes (by default the twin's multiple of 4,
  so both compute the same pixels); the header names it."""
  assert _specs(["infer_native"], ["float32"])["infer_native"]["pad_multiple"] == 4
  with_buckets = speed.measurement_specs(["infer_native"], ["float32"], "auto",
                                         {**O, "pad_multiple": 128}, [(64, 64)], [0])
  assert with_buckets["infer_native"]["pad_multiple"] == 128
  specs = speed.measurement_specs(["infer_native"], ["float32"], "auto",
                                  {**O, "pad_multiple": 4}, [(64, 64)], [0])
  assert specs["infer_native"]["pad_multiple"] == 4
  at_512 = speed.task_specs({**O, "pad_multiple": 4}, [(64, 64)], [0])["infer_512"]
  assert at_512["pad_multiple"] == 1  # 512 x 512 is never padded
  jax_result = {**_result(50.0), "padded_ratio": 1.01, "pad_multiple": 4, "shapes": 23}
  block = speed.report({"infer_native": {"jax": [jax_result], "torch": [_result(40.0)]}}, specs,
                       "quick", O, [0], "24 images")
  assert "JAX computes 1.01x the real pixels (buckets: multiples of 4, 23 shapes)" in block


def test_profile_step_classes_gpu_kernels_by_convolution_pass():
  """benchmarks/profile_step.py on a GPU: the kernel names of the H200 trace of 2026-11-27 fall
  into the convolution passes, cuDNN's conversions and XLA's fusions by kind."""
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  cls = profile_step.gpu_kernel_class
  assert cls("sm90_xmma_wgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nhwc") == (
      "conv wgrad (weights)")
  assert cls("sm90_xmma_dgrad_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc") == (
      "conv dgrad (inputs)")
  assert cls("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "conv fprop"
  assert cls("void cudnn::engines_precompiled::convertTensor_kernel<float, float, float>") == (
      "cudnn convertTensor")
  assert cls("input_reduce_fusion_12") == cls("input_reduce_fusion") == "input_reduce_fusion"
  assert cls("loop_add_fusion.3") == "loop_add_fusion"


def test_timed_counts_the_page_faults_of_fresh_memory():
  """timed's faults: 64 MB written afresh at every call fault in at least 32 pages a call (2 MB
  huge pages; 16384 of 4 KB), a call that allocates nothing none to speak of."""
  fresh = speed.timed(lambda: b"\x01" * (64 << 20), warmup=1, steps=3)
  assert len(fresh["times"]) == 3 and fresh["warmup_s"] >= 0
  assert fresh["faults"] >= 32
  assert speed.timed(lambda: None, warmup=1, steps=3)["faults"] < 32


def _spin(seconds: float) -> None:
  """Busy for ``seconds`` of this process's CPU time (however loaded the machine is)."""
  end, x = time.process_time() + seconds, 0
  while time.process_time() < end:  # a system call: checked once per 100,000 additions
    for i in range(100_000):
      x += i


def test_timed_counts_cpu_seconds_in_user_space_and_the_kernel():
  """timed's user_s and sys_s per timed call: 0.1 CPU-seconds of spinning are user time (the
  kernel splits a process's CPU time into user and system by its timer ticks: a few ms either
  way); a call that sleeps 0.1 s uses almost none."""
  busy = speed.timed(lambda: _spin(0.1), warmup=0, steps=2)
  assert busy["user_s"] >= 0.08 and busy["sys_s"] < 0.02, busy
  idle = speed.timed(lambda: time.sleep(0.1), warmup=0, steps=2)
  assert idle["user_s"] + idle["sys_s"] < 0.02, idle
  assert min(idle["times"]) >= 0.1  # the sleep was timed: it is the CPU time that is missing


def test_cpu_seconds_rows_in_the_block():
  """Each framework's user and system CPU-seconds per step get a row, JAX's over PyTorch's."""
  results = {"train_256": {"jax": [{**_result(2.0), "user_s": 10.3, "sys_s": 2.0}],
                           "torch": [{**_result(2.5), "user_s": 8.1, "sys_s": 3.2}]}}
  block = speed.report(results, _specs(["train_256"], ["float32"]), "quick", O, [0], "-")
  assert "| user CPU-seconds per timed step or pass, train_256 | 10.3 | 8.1 | 1.27 |" in block
  assert "| system CPU-seconds per timed step or pass, train_256 | 2 | 3.2 | 0.62 |" in block
