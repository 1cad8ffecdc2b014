"""Tests for the superclassed_fashion_mnist builder on tiny IDX files (make_dummy_data.py)."""

import gzip
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub.datasets.superclassed_fashion_mnist import superclassed_fashion_mnist_dataset_builder as fmnist

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


class FromManualDirTest(tfds.testing.DatasetBuilderTestCase):
  """The Debian layout: the four official file names in manual_dir."""
  DATASET_CLASS = fmnist.Builder
  EXAMPLE_DIR = str(DUMMY / "manual")
  SPLITS = {"train": 20, "test": 10}
  SKIP_CHECKSUMS = True


class FromDownloadTest(tfds.testing.DatasetBuilderTestCase):
  """No files in manual_dir: the builder downloads (mocked here)."""
  DATASET_CLASS = fmnist.Builder
  EXAMPLE_DIR = str(DUMMY / "download")
  SPLITS = {"train": 20, "test": 10}
  DL_DOWNLOAD_RESULT = {"train_images": "train_images.gz", "train_labels": "train_labels.gz",
                        "test_images": "t10k_images.gz", "test_labels": "t10k_labels.gz"}


class ContentTest(tfds.testing.TestCase):

  def _prepare(self, manual_dir):
    builder = fmnist.Builder(data_dir=self.get_temp_dir())
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir)))
    return builder

  def test_labels_map_through_hierarchy(self):
    builder = self._prepare(DUMMY / "manual")
    h = hierarchy_lib.load_hierarchy("fashion_mnist")
    source = fmnist.read_idx(DUMMY / "manual" / "train-labels-idx1-ubyte.gz", ndim=1)
    images = fmnist.read_idx(DUMMY / "manual" / "train-images-idx3-ubyte.gz", ndim=3)
    examples = sorted(tfds.as_numpy(builder.as_dataset(split="train")),
                      key=lambda ex: ex["file_name"])
    self.assertLen(examples, 20)
    for index, ex in enumerate(examples):
      self.assertEqual(ex["file_name"], f"train/{index:05d}".encode())
      self.assertEqual(h.subclasses[ex["label"]].source_label, source[index])
      self.assertEqual(ex["superclass"], h.superclass_of[ex["label"]])
      self.assertEqual(h.global_index(ex["superclass"], ex["subclass"]), ex["label"])
      np.testing.assert_array_equal(ex["image"][..., 0], images[index])
    # Fashion-MNIST label 4 is "Coat": third subclass of "tops", global index 2.
    coat = next(ex for ex in examples if source[int(ex["file_name"][-5:])] == 4)
    self.assertEqual(builder.info.features["label"].int2str(coat["label"]), "Coat")
    self.assertEqual((coat["label"], coat["superclass"], coat["subclass"]), (2, 0, 2))

  def test_partial_manual_dir_names_missing_files(self):
    partial = pathlib.Path(self.get_temp_dir()) / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
      (partial / name).write_bytes((DUMMY / "manual" / name).read_bytes())
    with self.assertRaisesRegex(FileNotFoundError, "missing.*t10k-images-idx3-ubyte.gz"):
      self._prepare(partial)

  def test_read_idx_rejects_truncated_file(self):
    path = pathlib.Path(self.get_temp_dir()) / "bad.gz"
    header = np.array([2051, 2, 28, 28], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + bytes(28 * 28)))  # one image instead of two
    with self.assertRaisesRegex(ValueError, r"bad.gz: header announces shape \[2, 28, 28\]"):
      fmnist.read_idx(path, ndim=3)

  def test_read_idx_rejects_wrong_magic(self):
    with self.assertRaisesRegex(ValueError, "magic number 2049, expected 2051"):
      fmnist.read_idx(DUMMY / "manual" / "train-labels-idx1-ubyte.gz", ndim=3)


if __name__ == "__main__":
  tfds.testing.test_main()
