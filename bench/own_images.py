r"""Benchmark of the "your own images" route: Fashion-MNIST as PNG folders through folder:.

  apt-get install dataset-fashion-mnist
  .venv/bin/python bench/own_images.py --image_dir=/work/fmnist_png \
      --out=bench/results/own_images                        # write, build, check: no training
  .venv/bin/python bench/own_images.py --image_dir=/work/fmnist_png --epochs=2 --seeds=0,1,2 \
      --work_dir=/work/bench_own_images --out=bench/results/own_images     # and train

1. Writes the four IDX files as <image_dir>/<split>/<superclass>/<class>/<index>.png, the
   superclass layout of the shipped fashion_mnist hierarchy (class folders named without
   "/": T-shirt_top). Existing files are left as they are (the folder is reused).
2. Builds folder:<image_dir> (no hierarchy file: the folders are the hierarchy) and times it;
   checks that every image's pixels and every superclass count equal superclassed_fashion_mnist's,
   read from the same IDX files.
3. With --epochs: trains Super-Sub (flat, generalist, specialists) on both datasets (or the
   --routes named) with the same flags and seeds and compares flat and two-stage top-1 on the
   test split.
   The dedicated builder has no validation split: it trains on all 60,000 training images
   and validates on test. With --validation=holdout (a user's tree) the folder has no
   validation folder either, so `folder:` holds 10% of train out (seeded) and trains on 54,000:
   fewer images and, at a fixed number of epochs, fewer steps. --validation=test makes the
   same splits as the dedicated builder: <image_dir>/validation/ holds hard links to the test
   images (a new --image_dir: a tree built without it is refused, its prepared data would not
   know the new folder).
Writes <out>.json and <out>.md.

  .venv/bin/python bench/own_images.py --image_dir=/work/fmnist_png_val_test --validation=test \
      --epochs=2 --seeds=0 --routes=folder --work_dir=/work/bench_own_images \
      --out=bench/results/own_images_e2_same_splits
"""

import os
import platform
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from _common import FASHION_MNIST_SPLITS
from _common import write_fashion_mnist_pngs
from _common import write_results
from super_sub.analysis.stats import pct
from super_sub.analysis.stats import seed_stats
from super_sub.analysis.tables import markdown_table
from super_sub.data import prepare
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

_MANUAL_DIR = flags.DEFINE_string("manual_dir", "/usr/share/datasets/fashion-mnist",
                                  "Folder of the four Fashion-MNIST IDX files.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", "/tmp/fmnist_png", "Where the PNG folders go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/bench_own_images", "Model dirs go here.")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epochs per network; 0: no training.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds of the trainings.")
_VALIDATION = flags.DEFINE_enum(
    "validation", "holdout", ["holdout", "test"],
    "holdout: no validation folder (folder: holds 10% of train out); test: validation/ links "
    "to the test images, the dedicated builder's splits.")
_ROUTES = flags.DEFINE_list("routes", ["folder", "idx"], "Which routes to train (with --epochs).")
flags.register_validator("routes", lambda routes: set(routes) <= {"folder", "idx"},
                         "--routes takes folder and/or idx")
_OUT = flags.DEFINE_string("out", "bench/results/own_images", "Results: <out>.json, <out>.md.")

_SPLITS = FASHION_MNIST_SPLITS


def check_same_pixels(folder_builder, idx_builder) -> dict:
  """Every folder image against the IDX builder's image of the same split and index."""
  out = {}
  for split in _SPLITS:
    idx = {ex["file_name"].decode().split("/")[1]: ex["image"]
           for ex in tfds.as_numpy(idx_builder.as_dataset(split=split))}
    same = total = 0
    for ex in tfds.as_numpy(folder_builder.as_dataset(split=split)):
      index = os.path.splitext(ex["file_name"].decode().rsplit("/", 1)[1])[0]  # 00042.png
      same += int(np.array_equal(ex["image"], idx[index]))
      total += 1
    out[split] = {"images": total, "identical": same}
  return out


def link_tree(source: str, target: str) -> int:
  """Hard links in `target` to every file under `source`, same relative paths; existing ones
  kept. Returns how many were made."""
  made = 0
  for root, _, names in os.walk(source):
    for name in names:
      path = os.path.join(target, os.path.relpath(os.path.join(root, name), source))
      if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.link(os.path.join(root, name), path)
        made += 1
  return made


def train_and_score(dataset: str, model_dir: str, seed: int) -> dict:
  config = config_lib.TrainConfig(model_dir=model_dir, dataset=dataset, data_dir=_DATA_DIR.value,
                                  manual_dir=_MANUAL_DIR.value, epochs=_EPOCHS.value, seed=seed)
  fit.train(config)
  from super_sub import evaluation  # pylint: disable=import-outside-toplevel
  # Both on the test split: the folder route holds 10% of train out as its validation split.
  result = evaluation.evaluate(run_lib.Run.open(model_dir), split="test")
  flat, two_stage = result["flat"]["top1"], result["two_stage"]["hard"]["top1"]
  return {"flat": flat, "two_stage": two_stage, "gain": two_stage - flat}


def main(argv):
  del argv
  start = time.perf_counter()
  validation_dir = os.path.join(_IMAGE_DIR.value, "validation")
  if (_VALIDATION.value == "test" and os.path.isdir(os.path.join(_IMAGE_DIR.value, "train"))
      and not os.path.isdir(validation_dir)):
    raise app.UsageError(f"{_IMAGE_DIR.value} was written without a validation folder; "
                         "--validation=test needs a new --image_dir")
  written = write_fashion_mnist_pngs(_MANUAL_DIR.value, _IMAGE_DIR.value, superclass_folders=True)
  if _VALIDATION.value == "test":
    written += link_tree(os.path.join(_IMAGE_DIR.value, "test"), validation_dir)
  wrote_s = time.perf_counter() - start
  start = time.perf_counter()
  folder = prepare.prepare_dataset(f"folder:{_IMAGE_DIR.value}", data_dir=_DATA_DIR.value)
  build_s = time.perf_counter() - start
  idx = prepare.prepare_dataset("superclassed_fashion_mnist", data_dir=_DATA_DIR.value,
                                manual_dir=_MANUAL_DIR.value)
  counts = {s: {"folder": folder.info.metadata["superclass_counts"][s]} for s in _SPLITS}
  for s in _SPLITS:  # the folder's superclasses are in name order; the shipped hierarchy's not
    named = dict(zip(idx.hierarchy.superclass_names, idx.info.metadata["superclass_counts"][s]))
    counts[s]["idx"] = [named[n] for n in folder.hierarchy.superclass_names]
  result = {"command": "python bench/own_images.py " + " ".join(sys.argv[1:]),
            "platform": platform.platform(), "images_written": written,
            "validation": _VALIDATION.value,
            "write_s": round(wrote_s, 1), "build_s": round(build_s, 1),
            "images_per_s": round(sum(folder.info.splits[s].num_examples
                                      for s in folder.info.splits) / build_s, 1),
            "splits": {s: folder.info.splits[s].num_examples for s in folder.info.splits},
            "superclass_counts": counts, "pixels": check_same_pixels(folder, idx),
            "notes": folder.info.metadata.get("notes", []), "runs": {}}
  lines = ["# Fashion-MNIST as PNG folders through folder:", "",
           f"built {sum(result['splits'].values())} images in {result['build_s']} s "
           f"({result['images_per_s']} images/s); splits {result['splits']}", ""]
  lines += [f"- {s}: {v['identical']} of {v['images']} images pixel-identical to "
            f"superclassed_fashion_mnist" for s, v in result["pixels"].items()]
  lines += [f"- note: {n}" for n in result["notes"]]
  if _EPOCHS.value:
    routes = {"folder": f"folder:{_IMAGE_DIR.value}", "idx": "superclassed_fashion_mnist"}
    for name, dataset in ((r, routes[r]) for r in _ROUTES.value):
      scores = [train_and_score(dataset, os.path.join(_WORK_DIR.value, f"seed{s}", name), int(s))
                for s in _SEEDS.value]
      result["runs"][name] = {k: seed_stats([r[k] for r in scores]) for k in scores[0]}
    lines += ["", f"{_EPOCHS.value} epochs per network, seeds {','.join(_SEEDS.value)} (mean ± "
              "standard deviation), test split, hard routing:", ""] + markdown_table(
        ["route", "flat top-1", "two-stage top-1", "gain over flat"],
        [[name, pct(r["flat"]), pct(r["two_stage"]), pct(r["gain"], signed=True)]
         for name, r in result["runs"].items()])
  write_results(_OUT.value, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
