"""An ImageNet-shaped ILSVRC2012 tree made offline (JPEGs of ImageNet's usual sizes, the extracted
layout), built by the real superclassed_imagenet builder in the benchmarks that work at 224 px:
ImageNet itself is never on these machines.

  .venv/bin/python bench/imagenet_shaped.py /tmp/ILSVRC2012 4000 400   # root, train, validation

makes the tree (nothing if <root>/done exists); bench/imagenet_pipeline.py and
bench/qat_stability.py call `make_tree` themselves."""

import os

import numpy as np
from PIL import Image

from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder as sib

SIZES = ((500, 375), (375, 500))  # ImageNet's most common (width, height)


def make_tree(root: str, train_images: int, validation_images: int) -> None:
  """An extracted ILSVRC2012 tree of smooth random JPEGs over the hierarchy's classes."""
  if os.path.exists(os.path.join(root, "done")):
    return
  wnids = [s.wnid for s in sib.load_hierarchy("superclassed_imagenet").subclasses]
  rng = np.random.default_rng(0)

  def write(path, i):
    width, height = SIZES[i % 2]
    # Low-frequency colour field (a 12x9 grid, bicubic) plus grain: JPEG sizes like photos'.
    field = Image.fromarray(rng.integers(0, 256, (9, 12, 3), np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, np.int16) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)

  for i in range(train_images):
    wnid = wnids[i % len(wnids)]
    folder = os.path.join(root, "train", wnid)
    os.makedirs(folder, exist_ok=True)
    write(os.path.join(folder, f"{wnid}_{i}.JPEG"), i)
  # Validation files are labelled by their number (TFDS's validation_labels.txt): take the
  # first numbers whose class is in the hierarchy.
  wanted = set(wnids)
  numbers = [k for k, w in enumerate(sib.validation_wnids(), start=1) if w in wanted]
  for i, number in enumerate(numbers[:validation_images]):
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    write(os.path.join(root, "val", f"ILSVRC2012_val_{number:08d}.JPEG"), i)
  open(os.path.join(root, "done"), "w", encoding="utf-8").close()


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  if len(sys.argv) != 4:
    sys.exit("usage: imagenet_shaped.py ROOT TRAIN_IMAGES VALIDATION_IMAGES")
  make_tree(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
