"""The README's parameter table is the one benchmarks/param_table.py produces."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_param_table_is_generated():
  spec = importlib.util.spec_from_file_location(
      "param_table", os.path.join(ROOT, "benchmarks", "param_table.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  block = readme.split(module.BEGIN)[1].split(module.END)[0].strip()
  assert block == module.table(), "run: python benchmarks/param_table.py --readme"
  assert "| eaa | transpose |" in block and "383,649" in block  # hand-checked in test_models
