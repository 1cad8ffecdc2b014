"""Tests for the superclassed_folder builder on the dummy trees (make_dummy_data.py); the
bad trees and the commands are tested in tests/test_folder_dataset.py."""

import pathlib

import tensorflow_datasets as tfds

from super_sub.datasets.superclassed_folder import superclassed_folder_dataset_builder as folder

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


class FolderTest(tfds.testing.TestCase):

  def _prepare(self, path, **kwargs):
    builder = folder.Builder(config=folder.folder_config(str(path), **kwargs),
                             data_dir=self.get_temp_dir())
    builder.download_and_prepare()
    return builder

  def test_superclass_layout(self):
    builder = self._prepare(DUMMY / "superclass")
    self.assertEqual(builder.hierarchy.superclass_names, ["animals", "plants"])
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": 9, "validation": 3})  # val/ is the validation split
    self.assertEqual(builder.info.metadata["superclass_counts"]["train"], [6, 3])

  def test_flat_layout_with_hierarchy_and_held_out_validation(self):
    builder = self._prepare(DUMMY / "flat", hierarchy=str(DUMMY / "flat_hierarchy.json"))
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": 9, "validation": 3})
    names = builder.hierarchy.subclass_names
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
      folder_name = ex["file_name"].decode().split("/")[1]
      self.assertEqual(names[ex["label"]], {"n02124075": "Egyptian cat"}.get(folder_name,
                                                                             folder_name))

  def test_prepared_data_reads_without_the_folder_config_code(self):
    builder = self._prepare(DUMMY / "superclass")
    plain = tfds.builder_from_directory(str(builder.data_path))
    self.assertEqual(plain.info.features["superclass"].names, ["animals", "plants"])

  def test_config_names_differ_by_hierarchy(self):
    a = folder.folder_config(str(DUMMY / "flat"))
    b = folder.folder_config(str(DUMMY / "flat"), hierarchy=str(DUMMY / "flat_hierarchy.json"))
    self.assertNotEqual(a.name, b.name)
    self.assertEqual(a.name, folder.folder_config(str(DUMMY / "flat")).name)


if __name__ == "__main__":
  tfds.testing.test_main()
