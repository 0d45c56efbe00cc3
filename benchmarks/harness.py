"""Measurement pieces shared by speed.py and tree_speed.py (issue 10).

Nothing here imports the project at module level: tree_speed.py's workers import it from the tree
they measure, so jax_train_call imports it when called, from whichever tree is on sys.path.
"""

import resource
import time


def rss_mb() -> float:
  """This process's peak resident memory so far, MB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, warmup: int, steps: int) -> dict:
  """warmup_s: seconds of the warm-up calls in all; times: seconds of each timed call (fn must
  wait for its result); per timed call, the process's (all its threads'): faults, minor page
  faults (the kernel mapping and zeroing fresh pages: allocations that go back to the OS after
  every call pay it again); user_s and sys_s, CPU-seconds in user space and in the kernel (with T
  threads, up to T x the call's wall time: work done, or spent waiting busily)."""
  t0 = time.perf_counter()
  for _ in range(warmup):
    fn()
  warm = time.perf_counter() - t0
  times, before = [], resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  after, n = resource.getrusage(resource.RUSAGE_SELF), max(steps, 1)
  return {"warmup_s": warm, "times": times, "faults": (after.ru_minflt - before.ru_minflt) / n,
          "user_s": (after.ru_utime - before.ru_utime) / n,
          "sys_s": (after.ru_stime - before.ru_stime) / n}


def jax_train_call(config, mesh, state, images, masks):
  """A no-argument function running one of the project's train steps (train.compile_steps) on
  this batch and waiting for it; the donated state is replaced by the new one each call."""
  import jax  # pylint: disable=g-import-not-at-top
  from eaau_jax import input_pipeline, train  # pylint: disable=g-import-not-at-top
  batch = input_pipeline.to_global(mesh, {"image": images, "mask": masks})
  p_train, _ = train.compile_steps(config, mesh)
  holder = [state]

  def step():
    holder[0], metrics = p_train(holder[0], batch)
    jax.block_until_ready((holder[0], metrics))

  return step
