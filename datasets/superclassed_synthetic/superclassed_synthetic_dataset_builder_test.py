"""Tests for the superclassed_synthetic builder (no dummy data: the data is generated)."""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from super_sub.data import synthetic
from super_sub.datasets.superclassed_synthetic import superclassed_synthetic_dataset_builder


class SuperclassedSyntheticTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = superclassed_synthetic_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["32px"]
  SPLITS = {"train": 150 * 21, "validation": 50 * 21}
  SKIP_CHECKSUMS = True
  # Nothing to read (images are drawn); TFDS still wants a folder to point the mocks at.
  EXAMPLE_DIR = str(pathlib.Path(__file__).parent)


class SuperclassedSyntheticContentTest(tfds.testing.TestCase):

  def test_labels_agree_with_hierarchy(self):
    builder = superclassed_synthetic_dataset_builder.Builder(
        data_dir=self.get_temp_dir(),
        config=superclassed_synthetic_dataset_builder.SyntheticConfig(
            name="tiny", image_size=16, train_per_class=2, validation_per_class=1))
    builder.download_and_prepare()
    h = synthetic.load_hierarchy()
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    self.assertLen(examples, 2 * h.num_subclasses)
    labels = np.array([ex["label"] for ex in examples])
    np.testing.assert_array_equal(np.bincount(labels), np.full(h.num_subclasses, 2))
    for ex in examples:
      self.assertEqual(ex["superclass"], h.superclass_of[ex["label"]])
      self.assertEqual(h.global_index(ex["superclass"], ex["subclass"]), ex["label"])
      self.assertEqual(ex["image"].shape, (16, 16, 3))
    self.assertEqual(builder.info.features["label"].names, h.subclass_names)
    self.assertEqual(builder.info.features["superclass"].names, h.superclass_names)


if __name__ == "__main__":
  tfds.testing.test_main()
