"""Writes tfds_sirst/dummy_data/: tiny fake releases in the sirst, sirst_v2 and folder layouts.

Images come in the modes real releases use (L, P, RGB, RGBA and one 16-bit), small odd sizes, one
image without a target. Re-run after changing it: ``python -m tfds_sirst.make_dummy_data``.
"""

import os
import shutil

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
MODES = ("L", "P", "RGB", "RGBA", "I;16")


def fake_pair(rng, index, size):
  h, w = size
  gray = rng.integers(20, 120, (h, w)).astype(np.uint8)
  mask = np.zeros((h, w), np.uint8)
  if index % 4 != 3:  # every fourth image has no target
    y, x = rng.integers(2, h - 3), rng.integers(2, w - 3)
    mask[y - 1:y + 2, x - 1:x + 1] = 255
    gray[mask > 0] = 250
  mode = MODES[index % len(MODES)]
  if mode == "I;16":
    img = Image.fromarray(gray.astype(np.uint16) * 16 + 100)  # 12-bit data in a 16-bit PNG
    assert img.mode == "I;16"
  elif mode == "L":
    img = Image.fromarray(gray)
  elif mode == "P":
    img = Image.fromarray(gray).convert("P")
  else:
    img = Image.fromarray(np.repeat(gray[..., None], len(mode), -1) if mode == "RGB"
                          else np.dstack([gray, gray, gray, np.full_like(gray, 255)]), mode)
  return img, Image.fromarray(mask)


def write_release(name, ids, image_dir, mask_dir, mask_suffix, split_dir, splits, seed):
  rng = np.random.default_rng(seed)
  base = os.path.join(ROOT, name)
  for d in (image_dir, mask_dir, split_dir):
    os.makedirs(os.path.join(base, d), exist_ok=True)
  for i, sample_id in enumerate(ids):
    img, mask = fake_pair(rng, i, (int(rng.integers(17, 30)), int(rng.integers(19, 33))))
    img.save(os.path.join(base, image_dir, f"{sample_id}.png"))
    mask.save(os.path.join(base, mask_dir, f"{sample_id}{mask_suffix}.png"))
  _write_splits(os.path.join(base, split_dir), ids, splits)


def _write_splits(folder, ids, splits):
  os.makedirs(folder, exist_ok=True)
  for fname, members in splits.items():
    with open(os.path.join(folder, fname), "w") as f:
      f.write("\n".join(ids[j] for j in members))  # no trailing newline, as the real files


def main():
  shutil.rmtree(ROOT, ignore_errors=True)
  ids = [f"Misc_{i}" for i in range(1, 11)]
  tr, va, te = range(0, 5), range(5, 7), range(7, 10)
  write_release("sirst", ids, "images", "masks", "_pixels0", "idx_427",
                {"train.txt": tr, "val.txt": va, "test.txt": te, "trainval.txt": range(0, 7),
                 "trainvaltest.txt": range(10)}, seed=0)
  # The idx_320 split folder of the same release (SIRST ships both).
  _write_splits(os.path.join(ROOT, "sirst", "idx_320"), ids,
                {"train.txt": range(0, 4), "val.txt": range(4, 6), "test.txt": range(6, 9),
                 "trainval.txt": range(0, 6), "trainvaltest.txt": range(9)})
  v2 = ids[:6] + [f"{i:06d}" for i in range(1, 7)]
  v2_splits = {"train_full.txt": range(0, 6), "val_full.txt": range(6, 8),
               "test_full.txt": range(8, 12), "trainval_full.txt": range(0, 8),
               "train_v1.txt": range(0, 3), "val_v1.txt": range(3, 4), "test_v1.txt": range(4, 6),
               "trainval_v1.txt": range(0, 4)}
  write_release("sirst_v2", v2, "mixed", "annotations/masks", "_pixels0", "splits", v2_splits,
                seed=1)
  write_release("folder", [f"{i:06d}" for i in range(8)], "images", "masks", "", ".",
                {"trainval.txt": range(0, 5), "test.txt": range(5, 8)}, seed=2)


if __name__ == "__main__":
  main()
