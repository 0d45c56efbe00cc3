"""XLA on the CPU: ``jit`` (jax.jit with the project's compiler options for the backend it compiles
for) and ``fusion_boundary`` (a value computed once, where XLA's CPU fusion would recompute it).

On the CPU, XLA hands convolutions, dots and reductions to YNNPACK by default. For this model's
32- and 64-channel convolutions and for every kernel gradient, XLA's own (Eigen) convolutions are
faster (benchmarks/conv_grads.py; on the 2-core AVX-512 CPU measured, BENCHMARKS.md: training
1.16x at 256 x 256 crops and 1.23x at 480, inference 1.15x at 512 x 512), so on the CPU YNNPACK
keeps the dots and reductions only.

XLA's CPU scheduler orders the step's independent instructions for concurrency by default; its
memory-optimised order keeps fewer activations alive at once, at the same values bit for bit. For
configs/sirst.py's train step (batch 8) the compiled temporaries fall from 2.74 to 2.03 GB at
256 x 256 crops and from 9.6 to 7.1 GB at 480, and the step does not get slower: XLA's CPU runtime
maps its temporaries afresh each step, so fewer bytes are fewer page faults (on the 2-core AVX2
CPU measured, BENCHMARKS.md: training 1.01x at 256, 1.26x at 480, peak memory 0.78x and 0.74x;
inference 1.01x).

The options are per compilation (jax.jit's ``compiler_options``), not a process-wide XLA_FLAGS:
they touch the project's own steps only, an option that a user's XLA_FLAGS names is theirs, and an
option a jaxlib does not know costs its gain, not the run. On a GPU nothing is set.

A computation compiled to run once (``jit(..., once=True)``: the train state's initialisation)
gets LLVM's level-2 passes instead of XLA's default 3 on the CPU. Its HLO is mostly each
parameter's unrolled threefry, which level 3 takes 2.4x as long to compile (8.1 s against 3.4 s
for configs/sirst.py's model on the 2-core CPU measured) for a run of milliseconds either way; the
values are bitwise the same (tests/test_xla_options.py).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
SCHEDULER_OPTION = "xla_cpu_scheduler_type"
CPU_OPTIONS = {
    # YNNPACK's default kinds (individual convolutions, individual dots, reductions) less
    # convolutions: the same HLO as XLA_FLAGS' --xla_cpu_experimental_ynn_fusion_type=
    # -individual_convolution.
    YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
    # Fewer temporaries, the same values (module docstring).
    SCHEDULER_OPTION: "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
}
LEVEL_OPTION = "xla_backend_optimization_level"
# For computations compiled to run once: the same values, compiled 2.4x faster (module docstring).
CPU_ONCE_OPTIONS = {LEVEL_OPTION: 2}


def compiler_options(platform: str, environ=None, once: bool = False) -> Optional[dict]:
  """The options ``jit`` passes for ``platform`` (a ``jax.Device.platform``), or None; ``once``:
  those for a computation run once (CPU_ONCE_OPTIONS instead of CPU_OPTIONS). Each option is
  left out where XLA_FLAGS names it (a compile option would override the user's) or where this
  jaxlib does not take it."""
  if platform != "cpu":
    return None
  flags = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
  options = {name: value for name, value in (CPU_ONCE_OPTIONS if once else CPU_OPTIONS).items()
             if name not in flags and _cpu_accepts(name, value)}
  return options or None


@functools.lru_cache(maxsize=None)
def _cpu_accepts(name: str, value: Any) -> bool:
  """Whether this jaxlib's CPU compiler takes the option (an unknown one is a compile error)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(
        jax.ShapeDtypeStruct((1,), jnp.float32)).compile()
  except Exception as e:  # pylint: disable=broad-except  (jaxlib raises its own error types)
    logging.warning("XLA CPU option %s=%s not taken by this jaxlib (%s): compiling without it, "
                    "slower or larger on the CPU measured (xla_options.py's docstring)", name,
                    value, str(e).splitlines()[0])
    return False
  return True


def jit(fun: Callable, *, platform: Optional[str] = None, once: bool = False, **kwargs: Any):
  """``jax.jit(fun, **kwargs)`` with ``compiler_options(platform, once=once)``; ``platform``
  defaults to JAX's default backend (pass a mesh's ``devices.flat[0].platform`` when compiling for
  a mesh); ``once`` where ``fun`` is compiled to be called once."""
  return jax.jit(fun, compiler_options=compiler_options(platform or jax.default_backend(),
                                                        once=once), **kwargs)


def fusion_boundary(x: jax.Array) -> jax.Array:
  """``x`` unchanged, computed once where XLA compiles for the CPU; elsewhere nothing is emitted.

  XLA's CPU fusion duplicates cheap element-wise producers into every consumer fusion. Along a
  residual stream (``relu(bn(conv(.)) + x)`` block after block) that compounds: each consumer of a
  block's output, the next convolution's input and each weight gradient's transposed copy, re-reads
  the convolution outputs of every earlier block of the stage and recomputes their BatchNorm, ReLU
  and additions (fusions of 20 operands in the train step). ``jax.lax.optimization_barrier`` does
  not stop it: the CPU compiler removes barriers before fusing. A conditional does, since no fusion
  crosses one; its predicate is true for every value of ``x`` (NaN included) but not provably so
  to XLA, which would otherwise fold it. On other platforms a conditional would cost a
  device-to-host copy of the predicate, so ``platform_dependent`` emits it for the CPU only.
  The price is one copy of ``x`` (the branch's); on the 2-core CPU measured, around the residual
  blocks' outputs it made training 1.22x faster at 256 x 256 crops and 1.27x at 480, inference
  1.07x (BENCHMARKS.md).
  """
  return jax.lax.platform_dependent(x, cpu=_materialized, default=lambda v: v)


def _materialized(x: jax.Array) -> jax.Array:
  if x.size == 0:
    return x
  s = x.reshape(-1)[0]
  always = (s == s) | (s != s)  # pylint: disable=comparison-with-itself
  return jax.lax.cond(always, lambda v: v, jnp.zeros_like, x)
