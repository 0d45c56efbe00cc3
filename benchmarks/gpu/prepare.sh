#!/usr/bin/env bash
# The CPU side of a session lent a GPU machine (issue 10, item 4; DEVELOPERS.md "A GPU, when one is
# lent"): what that machine lacks, into ignored folders of the checkout that `run` carries.
#
#   bash benchmarks/gpu/prepare.sh [BEFORE [AFTER]]   # then run(carry=[".whl", ".data", ...])
#
#   .whl/     Python 3.12 manylinux wheels of what the GPU machine lacks (it has jax, flax, optax,
#             orbax, torch; not tensorflow-datasets, array_record, clu, ml_collections, grain and
#             their small dependencies). No TensorFlow: tfds reads the built dataset through
#             array_record. tensorflow-datasets is 4.9.10, not 4.9.9: 4.9.9 fails on the machine's
#             protobuf 7 (`FieldDescriptor.label`).
#   .data/    SIRST built by tfds_sirst from ../shared/datasets/sirst (needs this venv's TensorFlow).
#   .before/  with BEFORE (a commit): its tree, for tree_speed.py's A/B against this tree, or
#   .after/   against AFTER's (e.g. `02dbdf8~1 02dbdf8`: that change alone). Carry them too.
#
# Carry is limited to 64 MiB in all: .whl is ~11 MB, .data ~32 MB, a tree ~3 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}

WHEELS=(tensorflow-datasets==4.9.10 array_record clu ml_collections grain dill dm-tree
        immutabledict simple_parsing tensorflow-metadata termcolor toml docstring_parser
        googleapis-common-protos importlib_resources portpicker)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64 any)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d .whl "${WHEELS[@]}"
# promise (a tfds dependency) has only a source distribution: build its pure-Python wheel here.
ls .whl/promise-*.whl >/dev/null 2>&1 || "$PY" -m pip wheel -q --no-deps -w .whl promise

if [ ! -d .data/sirst ]; then
  "$PY" -c "from configs import sirst; from eaau_jax import input_pipeline as ip
d = sirst.get_config().dataset; d.data_dir = '.data'; ip.prepare(d)"
fi

rm -rf .before .after
if [ -n "${1:-}" ]; then mkdir .before && git archive "$1" | tar -x -C .before; fi
if [ -n "${2:-}" ]; then mkdir .after && git archive "$2" | tar -x -C .after; fi
du -sh .whl .data ${1:+.before} ${2:+.after}
