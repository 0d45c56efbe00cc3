"""EAAU-Net: train, evaluate a checkpoint, or predict masks for a folder of images.

  python main.py --workdir DIR                                   # synthetic default, no download
  python main.py --config configs/sirst.py --workdir DIR         # the paper's setup on SIRST
  python main.py --mode eval --workdir DIR [--split test] [--protocol acm,native]
                                                                 # report of DIR's best checkpoint
  python main.py --mode predict --workdir DIR --input IMGS --output OUT
"""

import logging as py_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(HERE, "configs/synthetic.py"),
                                "Training configuration (a configs/*.py file).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and metrics.jsonl go here.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to do.")
flags.DEFINE_string("checkpoint", None, "eval/predict: a workdir, checkpoints folder or step "
                    "folder (default: --workdir, its best checkpoint).")
flags.DEFINE_string("split", None, "eval: the split (default: the config's test split).")
flags.DEFINE_list("protocol", None, "eval: evaluation protocols, comma-separated (acm, native; "
                  "default: the config's eval.protocol); predict: the first one is used.")
flags.DEFINE_string("input", None, "predict: folder of images.")
flags.DEFINE_string("output", None, "predict: folder for masks and overlays; eval: for reports.")
flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (default: when the "
                  "environment names a coordinator, SLURM or Open MPI job of several processes).")
flags.mark_flags_as_required(["workdir"])

def wants_distributed(flag, environ) -> bool:
  """--distributed if given; else whether the environment describes a multi-process job."""
  if flag is not None:
    return flag
  if "JAX_COORDINATOR_ADDRESS" in environ:
    return True
  return any(int(environ.get(k, "1")) > 1 for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


class _NoOrbaxChatter(py_logging.Filter):
  def filter(self, record):  # orbax logs several INFO lines per save
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax  # after absl has parsed the flags (and XLA_FLAGS are final)
  from eaau_jax import evaluate, train
  if wants_distributed(FLAGS.distributed, os.environ):
    jax.distributed.initialize()
  py_logging.getLogger("absl").addFilter(_NoOrbaxChatter())
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  config = FLAGS.config
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "eval":
    given = config if FLAGS["config"].present else None
    evaluate.run_eval(FLAGS.checkpoint or FLAGS.workdir, FLAGS.split, FLAGS.output, given,
                      FLAGS.protocol)
  else:
    if not FLAGS.input or not FLAGS.output:
      raise app.UsageError("--mode=predict needs --input and --output")
    evaluate.run_predict(FLAGS.checkpoint or FLAGS.workdir, FLAGS.input, FLAGS.output,
                         protocol=FLAGS.protocol[0] if FLAGS.protocol else None)


if __name__ == "__main__":
  app.run(main)
