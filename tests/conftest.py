"""Shared fixtures: the real SIRST copy beside the checkout (../shared/datasets/sirst), built once."""

import os
import shutil
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIRST = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "sirst"))
needs_sirst = pytest.mark.skipif(not os.path.isdir(SIRST), reason=f"no SIRST copy at {SIRST}")
# For main.py training runs whose TensorBoard events no test reads: CLU's writer imports
# TensorFlow, ~5 s of start-up a process on a 2-core CPU. Runs whose events are tested keep it.
NO_TENSORBOARD = "--config.tensorboard=False"
CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
  """One JAX persistent compilation cache for the whole run, unless the user chose one: the test
  processes, their xdist workers and every main.py they start inherit it through the environment
  (set here, before the workers are started), so a program compiled once (configs/tiny.py's train
  and eval steps, compiled by dozens of main.py runs) is read back by the later ones: the same
  executables, so the same results (a tiny main.py run took 32 s cold, 12 s warm on the 2-core
  CPU). A test of the product's own cache (eaau_jax/reproduce.py) removes it from its runs'
  environment. The folder is a fresh temporary one, removed at the end: nothing carries over from
  one run of the suite to the next."""
  if hasattr(config, "workerinput") or os.environ.get(CACHE_VAR):  # an xdist worker, or the user's
    return
  path = tempfile.mkdtemp(prefix="eaau-jax-tests-cache-")
  os.environ[CACHE_VAR] = config.eaau_jax_cache = path
  try:  # in case this process imported JAX already (it runs the tests itself without xdist)
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", path)
  except ImportError:
    pass


# The suite's longest modules, longest first: seconds in the suite (two xdist workers on the 2-core
# CI machine, 2026-11-29). --dist loadscope hands a module to whichever worker frees up first, and
# would order them by test count (pytest.ini turns that off: --no-loadscope-reorder), so a
# module of a few long tests could start late and end the run alone; longest first, the short
# ones after them fill the gaps. 3230 s of tests ended in 1664 s, 50 s over an even split.
LONGEST_FIRST = ("test_train.py",  # 710 s
                 "test_compare.py",  # 536
                 "test_models.py",  # 454, before its variants ran one shape (-112)
                 "test_baselines.py",  # 303
                 "test_multiprocess.py",  # 225
                 "test_xla_options.py",  # 178
                 "test_reproduce.py",  # 171
                 "test_torch_twin.py",  # 135
                 "test_classical.py")  # 133; the other modules under 100 s each


def pytest_collection_modifyitems(config, items):
  """Runs the modules of LONGEST_FIRST first, in that order (a stable sort: each module's tests
  keep theirs, the other modules theirs after them)."""
  here = os.path.dirname(os.path.abspath(__file__))
  missing = [m for m in LONGEST_FIRST if not os.path.isfile(os.path.join(here, m))]
  if missing:  # a renamed module would silently go back to the end of the queue
    raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names {missing}: no such module")
  rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
  path = getattr(config, "eaau_jax_cache", None)
  if path:
    os.environ.pop(CACHE_VAR, None)
    shutil.rmtree(path, ignore_errors=True)


def compiled_train_step_hlo(config, batch: int = 2) -> str:
  """The compiled HLO of ``config``'s train step (train.compile_steps) on ``batch`` 32 x 32 images."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (the project only where asked for)
  from eaau_jax import input_pipeline, models, train  # pylint: disable=g-import-not-at-top
  mesh = input_pipeline.make_mesh()
  state = train.abstract_train_state(config, models.model_from_config(config.model), 10)
  x = np.zeros((batch, 32, 32, config.input.channels), np.float32)
  images = input_pipeline.to_global(mesh, {"image": x, "mask": np.zeros((batch, 32, 32, 1),
                                                                       np.float32)})
  p_train, _ = train.compile_steps(config, mesh)
  return p_train.lower(state, images).compile().as_text()


def step_dirs(folder) -> list:
  """The steps an orbax checkpoint folder holds (its numbered sub-folders), in order."""
  return sorted(int(s) for s in os.listdir(folder) if s.isdigit())


@pytest.fixture(scope="session")
def sirst_dataset(tmp_path_factory):
  """config.dataset of configs/sirst.py pointing at the real copy, built into a temp data_dir."""
  from configs import sirst
  cfg = sirst.get_config().dataset
  cfg.manual_dir = SIRST
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  return cfg
