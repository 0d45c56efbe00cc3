"""Shared fixtures: the real SIRST copy beside the checkout (../shared/datasets/sirst), built once."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIRST = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "sirst"))
needs_sirst = pytest.mark.skipif(not os.path.isdir(SIRST), reason=f"no SIRST copy at {SIRST}")


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
