"""Shared fixtures: the real SIRST copy beside the checkout (../shared/datasets/sirst), built once."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIRST = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "sirst"))
needs_sirst = pytest.mark.skipif(not os.path.isdir(SIRST), reason=f"no SIRST copy at {SIRST}")
# For main.py training runs whose TensorBoard events no test reads: CLU's writer imports
# TensorFlow, ~5 s of start-up a process on a 2-core CPU. Runs whose events are tested keep it.
NO_TENSORBOARD = "--config.tensorboard=False"


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
