r"""Builds a super-sub TFDS dataset (default: the offline synthetic one) and prints its summary.

  super-sub-build                                   # superclassed_synthetic, no network
  super-sub-build --dataset=superclassed_fashion_mnist \
      --manual_dir=/usr/share/datasets/fashion-mnist
  super-sub-build --dataset=superclassed_imagenet/64x64 --manual_dir=~/ILSVRC2012
  super-sub-build --dataset=folder:~/pets --hierarchy=pets.json   # your own images
  super-sub-build --dataset=tfds:cifar100 --hierarchy=from_feature:coarse_label
"""

import time

from absl import app
from absl import flags

from super_sub._internal import cli

_DATASET = flags.DEFINE_string(
    "dataset", "superclassed_synthetic",
    "TFDS name, optionally with config and version: superclassed_synthetic[/32px|/64px], "
    "superclassed_fashion_mnist, superclassed_imagenet/<config>; folder:<PATH> for your own "
    "images in <PATH>/<split>/<class>/<image> or <PATH>/<split>/<superclass>/<class>/<image> "
    "(split: train, validation or val, test); tfds:<name>[/<config>] for any TFDS image "
    "classification dataset.")
_HIERARCHY = flags.DEFINE_string(
    "hierarchy", None, "With folder: (flat layout) or tfds:, a hierarchy JSON or shipped name "
    "whose subclasses name the classes (by name or WordNet id; for tfds: by name or "
    "source_label index), or for tfds: from_feature:<ClassLabel feature>. A flat folder "
    "without one becomes one superclass holding every class.")
_UNMAPPED_LABELS = flags.DEFINE_enum(
    "unmapped_labels", "error", ["error", "skip"], "With folder: or tfds:, classes outside "
    "--hierarchy are an error (naming them), or skipped and counted in the summary.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where TFDS stores prepared data (default: TFDS's, ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder with manually downloaded source files (ImageNet, Fashion-MNIST).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # TensorFlow is imported here, not for --help.
  from super_sub.data import prepare as data  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  # A bad folder or hierarchy (sources.DatasetError, HierarchyError) ends as one line: cli.run.
  builder = data.prepare_dataset(_DATASET.value, data_dir=_DATA_DIR.value,
                                 manual_dir=_MANUAL_DIR.value, hierarchy=_HIERARCHY.value,
                                 unmapped_labels=_UNMAPPED_LABELS.value)
  prepared = time.perf_counter()
  print(data.format_summary(builder, data.summarize_dataset(builder)))
  print(f"\nprepared in {prepared - start:.1f} s, summarised in "
        f"{time.perf_counter() - prepared:.1f} s")


def run():
  cli.run(main, needs_training_extra=True)


if __name__ == "__main__":
  run()
