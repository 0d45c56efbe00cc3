"""Parameter counts (and fp32 megabytes) of every fusion variant for b = 1..4, as a Markdown table.

Table 3 of the paper has a "Para" column that reads as megabytes of fp32 weights (README
"Parameters"), so each cell gives both: count and count x 4 bytes / 1e6.

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

PAPER_PARA = 2.07  # Table 3, EAAU-Net's "Para" column
BEGIN, END = "<!-- param-table:begin -->", "<!-- param-table:end -->"
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def param_count(**fields) -> int:
  model = models.EAAUNet(**fields)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  return models.count_params(shapes["params"])


def cell(count: int) -> str:
  return f"{count:,} ({count * 4 / 1e6:.2f} MB)"


def table() -> str:
  blocks = (1, 2, 3, 4)
  rows = ["| fusion | upsampling | " + " | ".join(f"b = {b}" for b in blocks) + " |",
          "|---|---|" + "---:|" * len(blocks)]
  variants = [(f, "transpose") for f in models.FUSIONS] + [("eaa", "subpixel")]
  for fusion, up in variants:
    counts = [param_count(fusion=fusion, blocks=b, upsampling=up) for b in blocks]
    rows.append(f"| {fusion} | {up} | " + " | ".join(cell(c) for c in counts) + " |")
  rows.append(f"| paper, Table 3 \"Para\" (EAAU-Net) | transpose | | | {PAPER_PARA} | |")
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
