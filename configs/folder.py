"""EAAU-Net with configs/sirst.py's recipe on a release in the `folder` layout (tfds_sirst's
FOLDER: ``images/``, ``masks/`` named as the images, ``trainval.txt`` and ``test.txt`` at the root,
as NUDT-SIRST ships), given as ``--config.dataset.manual_dir=/path/to/release``.

Such a release lists no validation split, so the checkpoint is chosen on ``test``, as the papers
that publish them do (DNANet on NUDT-SIRST). best/'s test numbers are then not held out: for a
held-out choice, write a val list and name it (``--config.dataset.folder`` ``split_files``, and
``--config.dataset.eval_split=val``).
"""

from configs import sirst


def get_config():
  config = sirst.get_config()
  d = config.dataset
  d.name = "folder"
  d.manual_dir = ""  # no default: a folder release cannot be downloaded (the builder says so)
  d.train_split = "train"  # trainval.txt
  d.eval_split = "test"  # the layout has no val list
  d.test_split = "test"
  return config
