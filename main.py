"""EAAU-Net: train, evaluate a checkpoint, or predict targets in a folder of images.

  python main.py --workdir DIR                                   # synthetic default, no download
  python main.py --config configs/sirst.py --workdir DIR         # the paper's setup on SIRST
  python main.py --mode eval --workdir DIR [--split test] [--protocol acm,native]
  python main.py --mode predict --workdir DIR --input IMGS --output OUT [--threshold 0.5]

The flags, the modes and how failures are reported live in eaau_jax/cli.py, which the installed
``eaau-jax`` command also runs; ``python main.py --helpshort`` lists the flags.
"""

from eaau_jax import cli

if __name__ == "__main__":
  cli.run()
