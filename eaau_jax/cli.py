"""The command line: ``python main.py`` and the installed ``eaau-jax`` are this one program.

  eaau-jax --workdir DIR                                    # synthetic default, no download
  eaau-jax --config configs/sirst.py --workdir DIR          # the paper's setup on SIRST
  eaau-jax --mode eval --workdir DIR [--split test] [--protocol acm,native]
                                                            # report of DIR's best checkpoint
  eaau-jax --mode predict --workdir DIR --input IMGS --output OUT [--threshold 0.5]
  eaau-jax --mode import --config configs/acm_unet.py --import-weights FILE --workdir DIR
                                                            # released weights -> checkpoint
  eaau-jax --mode eval --config configs/acm_unet.py --import-weights FILE --workdir DIR
                                                            # released weights, evaluated
  eaau-jax --mode compare --config configs/sirst.py --checkpoints DIR1,DIR2 --workdir OUT
                                                            # the Table 3 report (compare.py)

Exit status: 0 done; 2 an expected failure (errors.UserError: bad data, a missing or incompatible
checkpoint, a bad config field or flag), printed as ``error: <what> (<where>)`` and maybe
``hint: ...``, with no traceback unless ``--verbosity=1`` or ``EAAU_TRACEBACK=1``; 1 from predict
when some images could not be read (it lists them), or from a bug (with its traceback).
"""

from __future__ import annotations

import logging as py_logging
import os
import platform
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from eaau_jax import errors

FLAGS = flags.FLAGS
TRACEBACK_ENV = "EAAU_TRACEBACK"
HELP = "--helpshort lists the flags"


def default_config() -> str:
  """configs/synthetic.py of the ``configs`` package (the checkout's, or the one installed
  with eaau_jax): the default needs no path."""
  import configs  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(configs.__file__), "synthetic.py")


def define_flags():
  """The flags, defined when the program runs (not on import, so tests and other entry points
  such as eaau_jax.reproduce can import this module beside their own flags)."""
  config_flags.DEFINE_config_file("config", default_config(),
                                  "Training configuration (a configs/*.py file).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and metrics.jsonl go here.")
  flags.DEFINE_enum("mode", "train", list(MODES), "What to do.")
  flags.DEFINE_string("import-weights", None, "import: an MXNet .params file of a baseline's "
                      "released weights (configs/acm_unet.py ...), written as a checkpoint into "
                      "--workdir; eval: evaluated directly (reports into --output or "
                      "WORKDIR/eval).")
  flags.DEFINE_string("checkpoint", None, "eval/predict: a workdir, checkpoints folder or step "
                      "folder (default: --workdir, its best checkpoint).")
  flags.DEFINE_string("split", None, "eval: the split (default: the config's test split).")
  flags.DEFINE_list("protocol", None, "eval: evaluation protocols, comma-separated (acm, native; "
                    "default: the config's eval.protocol); predict: the first one is used.")
  flags.DEFINE_float("threshold", 0.5, "predict: the operating point, a score in (0, 1): a pixel "
                     "is a target where sigmoid(logit) > it, applied as logit > log(t / (1 - t)) "
                     "(0.5: logit > 0, the operating point of every metric).")
  flags.DEFINE_list("checkpoints", None, "compare: checkpoints (workdirs, checkpoint or step "
                    "folders), each as PATH or LABEL=PATH.")
  flags.DEFINE_list("detectors", ["fast"], "compare: classical detectors: fast (tophat, "
                    "maxmedian, rlcm, mpcm, fkrw), all (also the slow ligp, mgdwe, ipi, ript), "
                    "none, or names.")
  flags.DEFINE_list("merge", None, "compare: instead of evaluating, merge these compare_*.json "
                    "reports (same split and protocol) into --output (default WORKDIR).")
  flags.DEFINE_integer("grid_images", 4, "compare: images in the qualitative grid (Figure 9).")
  flags.DEFINE_string("input", None, "predict: folder of images.")
  flags.DEFINE_string("output", None, "predict: folder for masks, overlays and detections.json; "
                      "eval: for reports.")
  flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() (default: when the "
                    "environment names a coordinator, SLURM or Open MPI job of several processes, "
                    "or --coordinator_address is given).")
  flags.DEFINE_string("coordinator_address", None, "Multi-process job without a scheduler that JAX "
                      "detects: HOST:PORT of process 0, where it serves the other processes "
                      "(with --num_processes and --process_id).")
  flags.DEFINE_integer("num_processes", None, "Multi-process job: how many processes (with "
                       "--coordinator_address and --process_id).", lower_bound=1)
  flags.DEFINE_integer("process_id", None, "Multi-process job: this process's index, 0 to "
                       "--num_processes - 1 (process 0 is the coordinator).", lower_bound=0)
  flags.mark_flags_as_required(["workdir"])
  for flag in FLAGS.get_flags_for_module(__name__):  # --helpshort lists the running script's
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)


# ---------------------------------------------------------------- failures
def wants_traceback() -> bool:
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  return FLAGS.is_parsed() and "verbosity" in FLAGS and FLAGS.verbosity >= 1


def fail(error: errors.UserError, status: int = 2):
  """Prints ``error`` as its ``error:``/``hint:`` lines (after the traceback, if asked for) and
  exits with ``status``."""
  if wants_traceback():
    traceback.print_exc()
  print(error.lines(), file=sys.stderr, flush=True)
  sys.exit(status)


def guarded(main):
  """``main(argv)`` with expected failures as one ``error:`` line and status 2; a bug's
  traceback stays (it is what a bug report needs)."""
  def run(argv):
    try:
      return main(argv)
    except errors.UserError as e:
      fail(e)
    except KeyboardInterrupt:  # Ctrl-C: a person knows why; no traceback through JAX's frames
      fail(errors.UserError("interrupted", None, "training resumes from its latest checkpoint "
                            "when the same command runs again"), status=130)
  return run


def flag_error(e: Exception, argv: list) -> errors.UserError:
  """absl's and config_flags' parsing errors as ``UserError``s naming the flag."""
  message = str(e).strip()
  if isinstance(e, flags.UnrecognizedFlagError):
    return errors.ConfigError(message, f"--{e.flagname}", HELP)
  if isinstance(e, (KeyError, AttributeError)):  # --config.<no such field>=...
    word = re.search(r"\w+", message)  # the message quotes the key, escaped, and may suggest
    key = word.group() if word else message
    given = [a.split("=")[0] for a in argv if a.startswith("--config.")
             and key in a.split("=")[0].split(".")]
    near = re.search(r'Did you mean \W*"(\w+)\W*"', message)
    return errors.ConfigError(f"the config has no field {key!r}", given[0] if given else "--config",
                              (f"did you mean {near.group(1)!r}? " if near else "")
                              + "the config file lists the fields")
  if isinstance(e, OSError):  # the --config file: not found, or failed to load
    cause = message.splitlines()[-1].strip()
    return errors.ConfigError(f"cannot load the config file: {cause}", "--config",
                              "a path to a configs/*.py file, e.g. --config configs/sirst.py")
  m = re.match(r"flag (--[^=:\s]+)(=\S*)?: (.*)", message, re.S)
  if m:
    flag, value, what = m.groups()
    if "must have a value other than None" in what:
      return errors.ConfigError("this flag is required", flag, HELP)
    return errors.ConfigError(what, flag + (value or ""), HELP)
  return errors.ConfigError(message, "command line", HELP)


def parse_flags(argv: list) -> list:
  """absl's parsing, every flag or config problem reported by ``fail`` (status 2)."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # config_flags defers a --config file's load error to first use: now
  except (flags.Error, KeyError, AttributeError, OSError) as e:
    fail(flag_error(e, argv))
  return rest


# ---------------------------------------------------------------- modes
def wants_distributed(flag, environ) -> bool:
  """--distributed if given; else whether the environment describes a multi-process job."""
  if flag is not None:
    return flag
  if "JAX_COORDINATOR_ADDRESS" in environ:
    return True
  return any(int(environ.get(k, "1")) > 1 for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


JOB_FLAGS = ("coordinator_address", "num_processes", "process_id")


def distributed_args(flag, coordinator_address, num_processes, process_id, environ):
  """The keyword arguments of ``jax.distributed.initialize`` (None: a single-process run).

  The three job flags go together: JAX would fill a missing one from a scheduler's variables if
  it finds some (a job half described by hand, half detected), else fail with a traceback.
  Without them, JAX detects the job from the environment (SLURM, Open MPI, a TPU pod slice,
  JAX_COORDINATOR_ADDRESS)."""
  given = {k: v for k, v in zip(JOB_FLAGS, (coordinator_address, num_processes, process_id))
           if v is not None}
  if not given:
    return {} if wants_distributed(flag, environ) else None
  first = f"--{next(iter(given))}"
  if flag is False:
    raise errors.ConfigError(f"{first} starts a multi-process job", "--distributed=false",
                             "leave out one or the other")
  missing = [f"--{k}" for k in JOB_FLAGS if k not in given]
  if missing:
    raise errors.ConfigError(f"a multi-process job needs {' and '.join(missing)} too", first,
                             "a multi-process job on hosts of your own gives every process "
                             "--coordinator_address=HOST:PORT --num_processes=N --process_id=K")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise errors.ConfigError(f"{coordinator_address!r} is not HOST:PORT",
                             "--coordinator_address", "e.g. --coordinator_address=10.0.0.1:1234")
  if process_id >= num_processes:
    raise errors.ConfigError(f"{process_id} is not below --num_processes={num_processes}",
                             "--process_id", "processes are numbered 0 to --num_processes - 1")
  return given


def init_distributed(args: dict):
  """``jax.distributed.initialize(**args)``, before any JAX computation (it must come first)."""
  import jax  # pylint: disable=g-import-not-at-top
  # CPU devices of several processes talk through gloo (GPUs use NCCL, TPUs their interconnect;
  # this option only concerns the CPU backend). It is jax 0.10's default; naming it keeps a CPU
  # job, such as tests/test_multiprocess.py, working where a version defaults to none.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**args)


class _NoOrbaxChatter(py_logging.Filter):
  def filter(self, record):  # orbax logs several INFO lines per save
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def _given_config():
  return FLAGS.config if FLAGS["config"].present else None


def _eval():
  from eaau_jax import evaluate  # pylint: disable=g-import-not-at-top
  import_weights = FLAGS["import-weights"].value  # a hyphenated flag, as the issue names it
  output = FLAGS.output or (os.path.join(FLAGS.workdir, "eval") if import_weights else None)
  evaluate.run_eval(FLAGS.checkpoint or FLAGS.workdir, FLAGS.split, output, _given_config(),
                    FLAGS.protocol, import_weights=import_weights)


def _predict():
  from eaau_jax import evaluate  # pylint: disable=g-import-not-at-top
  for name in ("input", "output"):
    if not FLAGS[name].value:
      raise errors.ConfigError("--mode=predict needs --input (a folder of images) and --output",
                               f"--{name}")
  result = evaluate.run_predict(FLAGS.checkpoint or FLAGS.workdir, FLAGS.input, FLAGS.output,
                                FLAGS.threshold, FLAGS.protocol[0] if FLAGS.protocol else None)
  if result["failed"]:  # the rest were written; a pipeline must still see that some were not
    print(f"error: {len(result['failed'])} image(s) could not be read ({result['detections']} "
          "lists them)", file=sys.stderr, flush=True)
    sys.exit(1)


def _import():
  from eaau_jax import baselines  # pylint: disable=g-import-not-at-top
  if not FLAGS["import-weights"].value or not FLAGS["config"].present:
    raise errors.ConfigError("--mode=import needs --import-weights FILE and --config",
                             "--import-weights" if FLAGS["config"].present else "--config")
  logging.info("wrote %s", baselines.write_imported(FLAGS.config, FLAGS["import-weights"].value,
                                                    FLAGS.workdir))


def _compare():
  from eaau_jax import compare  # pylint: disable=g-import-not-at-top
  compare.run_from_flags(_given_config(), FLAGS.workdir, FLAGS)


def _train():
  from eaau_jax import train  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.Preempted:
    pass  # saved and summarised; a scheduler's SIGTERM is a clean stop: exit 0


MODES = {"train": _train, "eval": _eval, "predict": _predict, "import": _import,
         "compare": _compare}


THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
# glibc's malloc in transparent huge pages: what the CPU hint recommends and what
# benchmarks/speed.py --malloc hugetlb measured.
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"


def thp_mode(path: str = THP_MODE) -> str:
  """The kernel's transparent huge page mode ("always [madvise] never" -> "madvise"), or ""."""
  try:
    with open(path, encoding="utf-8") as f:
      return re.search(r"\[(\w+)\]", f.read()).group(1)
  except (OSError, AttributeError):
    return ""


def cpu_malloc_hint(backend: str, environ, libc: str, thp: str) -> str | None:
  """A line for whoever trains on a CPU with glibc's default allocator: it unmaps each step's
  large buffers and faults them in again, and HUGETLB_TUNABLE made the train step
  1.22-1.39x faster on a 2-core AVX-512 CPU, 1.0-1.1x on 2-core AVX2 ones (BENCHMARKS.md: page
  faults; 2026-11-28): how much depends on the machine. glibc reads GLIBC_TUNABLES only when a
  process starts, so the project can say it but not set it. None where it does not apply:
  another backend, another C library, glibc's malloc tunables already set, or transparent huge
  pages not in "madvise" mode (the tunable asks for them by madvise: "always" has them already,
  "never" refuses them)."""
  if (backend != "cpu" or libc != "glibc" or thp != "madvise"
      or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")):
    return None
  return (f"training on the CPU: starting it with GLIBC_TUNABLES={HUGETLB_TUNABLE} made the "
          "train step 1.2-1.4x faster on a 2-core AVX-512 CPU, 1.0-1.1x on AVX2 ones (fewer "
          "page faults; BENCHMARKS.md)")


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments {argv[1:]}", "command line",
                             f"flags take the form --name=value; {HELP}")
  job = distributed_args(FLAGS.distributed, *(FLAGS[k].value for k in JOB_FLAGS), os.environ)
  if job is not None:
    init_distributed(job)
  import jax  # pylint: disable=g-import-not-at-top  (after absl has parsed the flags: XLA_FLAGS)
  py_logging.getLogger("absl").addFilter(_NoOrbaxChatter())
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  hint = FLAGS.mode == "train" and cpu_malloc_hint(jax.default_backend(), os.environ,
                                                   platform.libc_ver()[0], thp_mode())
  if hint:
    logging.info(hint)
  MODES[FLAGS.mode]()


def run():
  """The entry point of ``python main.py`` and of the ``eaau-jax`` command (pyproject.toml)."""
  define_flags()
  main_module = sys.modules["__main__"]
  if not main_module.__doc__:  # the eaau-jax script: --help shows this module's usage
    main_module.__doc__ = __doc__
  app.run(guarded(main), flags_parser=parse_flags)
