"""EAAU-Net: train, evaluate a checkpoint, or predict masks for a folder of images.

  python main.py --workdir DIR                                   # synthetic default, no download
  python main.py --config configs/sirst.py --workdir DIR         # the paper's setup on SIRST
  python main.py --mode eval --workdir DIR [--split test] [--protocol acm,native]
                                                                 # report of DIR's best checkpoint
  python main.py --mode predict --workdir DIR --input IMGS --output OUT
  python main.py --mode import --config configs/acm_unet.py --import-weights FILE --workdir DIR
                                                                 # released weights -> checkpoint
  python main.py --mode eval --config configs/acm_unet.py --import-weights FILE --workdir DIR
                                                                 # released weights, evaluated
  python main.py --mode compare --config configs/sirst.py --checkpoints DIR1,DIR2 --workdir OUT
                                                                 # the Table 3 report (compare.py)
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
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "import", "compare"],
                  "What to do.")
flags.DEFINE_string("import-weights", None, "import: an MXNet .params file of a baseline's "
                    "released weights (configs/acm_unet.py ...), written as a checkpoint into "
                    "--workdir; eval: evaluated directly (reports into --output or WORKDIR/eval).")
flags.DEFINE_string("checkpoint", None, "eval/predict: a workdir, checkpoints folder or step "
                    "folder (default: --workdir, its best checkpoint).")
flags.DEFINE_string("split", None, "eval: the split (default: the config's test split).")
flags.DEFINE_list("protocol", None, "eval: evaluation protocols, comma-separated (acm, native; "
                  "default: the config's eval.protocol); predict: the first one is used.")
flags.DEFINE_list("checkpoints", None, "compare: checkpoints (workdirs, checkpoint or step "
                  "folders), each as PATH or LABEL=PATH.")
flags.DEFINE_list("detectors", ["fast"], "compare: classical detectors: fast (tophat, maxmedian, "
                  "rlcm, mpcm, fkrw), all (also the slow ligp, mgdwe, ipi, ript), none, or names.")
flags.DEFINE_list("merge", None, "compare: instead of evaluating, merge these compare_*.json "
                  "reports (same split and protocol) into --output (default WORKDIR).")
flags.DEFINE_integer("grid_images", 4, "compare: images in the qualitative grid (Figure 9).")
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
  import_weights = FLAGS["import-weights"].value  # a hyphenated flag, as the issue names it
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "import":
    from eaau_jax import baselines
    if not import_weights or not FLAGS["config"].present:
      raise app.UsageError("--mode=import needs --import-weights FILE and --config")
    logging.info("wrote %s", baselines.write_imported(config, import_weights, FLAGS.workdir))
  elif FLAGS.mode == "compare":
    from eaau_jax import compare
    compare.run_from_flags(config if FLAGS["config"].present else None, FLAGS.workdir, FLAGS)
  elif FLAGS.mode == "eval":
    given = config if FLAGS["config"].present else None
    output = FLAGS.output or (os.path.join(FLAGS.workdir, "eval") if import_weights else None)
    evaluate.run_eval(FLAGS.checkpoint or FLAGS.workdir, FLAGS.split, output, given,
                      FLAGS.protocol, import_weights=import_weights)
  else:
    if not FLAGS.input or not FLAGS.output:
      raise app.UsageError("--mode=predict needs --input and --output")
    evaluate.run_predict(FLAGS.checkpoint or FLAGS.workdir, FLAGS.input, FLAGS.output,
                         protocol=FLAGS.protocol[0] if FLAGS.protocol else None)


if __name__ == "__main__":
  app.run(main)
