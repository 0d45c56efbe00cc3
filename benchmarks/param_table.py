"""Parameter counts of every fusion variant for b = 1..4, as a Markdown table.

  python benchmarks/param_table.py            # print the table
  python benchmarks/param_table.py --readme   # also rewrite it in README.md between the markers

Counts come from ``jax.eval_shape`` of the real init (no weights are computed).
"""

import argparse
import pathlib
import re

import jax
import jax.numpy as jnp

from eaau_jax import models

PAPER_PARAMS_M = 2.07
BEGIN, END = "<!-- param-table:begin -->", "<!-- param-table:end -->"
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def param_count(**fields) -> int:
  model = models.EAAUNet(**fields)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  return models.count_params(shapes["params"])


def table() -> str:
  blocks = (1, 2, 3, 4)
  rows = ["| fusion | upsampling | " + " | ".join(f"b = {b}" for b in blocks) + " |",
          "|---|---|" + "---:|" * len(blocks)]
  variants = [(f, "subpixel") for f in models.FUSIONS] + [("eaa", "transpose")]
  for fusion, up in variants:
    counts = [param_count(fusion=fusion, blocks=b, upsampling=up) for b in blocks]
    rows.append(f"| {fusion} | {up} | " + " | ".join(f"{c:,}" for c in counts) + " |")
  rows.append(f"| paper (EAAU-Net, b = 3) | transpose | | | {PAPER_PARAMS_M * 1e6:,.0f} | |")
  return "\n".join(rows)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
  args = ap.parse_args()
  text = table()
  print(text)
  if args.readme:
    readme = README.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
      raise SystemExit(f"{README}: markers {BEGIN} ... {END} not found")
    README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", readme))


if __name__ == "__main__":
  main()
