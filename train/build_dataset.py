r"""Builds a super-sub TFDS dataset (default: the offline synthetic one) and prints its summary.

  super-sub-build                                   # superclassed_synthetic, no network
  super-sub-build --dataset=superclassed_fashion_mnist \
      --manual_dir=/usr/share/datasets/fashion-mnist
  super-sub-build --dataset=superclassed_imagenet/64x64 --manual_dir=~/ILSVRC2012
"""

import time

from absl import app
from absl import flags

from super_sub._internal import cli

_DATASET = flags.DEFINE_string(
    "dataset", "superclassed_synthetic",
    "TFDS name, optionally with config and version: superclassed_synthetic[/32px|/64px], "
    "superclassed_fashion_mnist, superclassed_imagenet/<config>.")
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
  builder = data.prepare(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
  prepared = time.perf_counter()
  print(data.format_summary(builder, data.summarize(builder)))
  print(f"\nprepared in {prepared - start:.1f} s, summarised in "
        f"{time.perf_counter() - prepared:.1f} s")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
