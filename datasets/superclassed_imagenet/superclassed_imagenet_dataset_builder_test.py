"""Tests for superclassed_imagenet on dummy_data/ (written by make_dummy_data.py), both layouts."""

import io
import json
import shutil
import tempfile

from absl.testing import parameterized
from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder as sib

DUMMY = epath.Path(sib.__file__).parent / "dummy_data"
LAYOUTS = ("archives", "extracted")
# With the shipped hierarchy: tench (n01440764) is left out of both splits.
TRAIN_FILES = {"n01530575_10018.JPEG", "n01530575_10086.JPEG", "n01531178_1001.JPEG",
               "n02085620_1073.JPEG", "n02085620_10074.JPEG", "n13037406_10.JPEG",
               "n13037406_11.JPEG"}
VAL_FILES = {f"ILSVRC2012_val_{n:08d}.JPEG" for n in (200, 651, 1049, 2917)}
CMYK, PNG, GRAY, PLAIN = ("n01530575_10086.JPEG", "n02085620_10074.JPEG",
                          "n01531178_1001.JPEG", "n01530575_10018.JPEG")


class ArchivesBuilderTest(tfds.testing.DatasetBuilderTestCase):
  """TFDS's standard checks on the official-archives layout."""
  DATASET_CLASS = sib.Builder
  EXAMPLE_DIR = DUMMY / "archives"
  BUILDER_CONFIG_NAMES_TO_TEST = ["full", "64x64"]
  SPLITS = {"train": len(TRAIN_FILES), "validation": len(VAL_FILES)}


class ExtractedBuilderTest(ArchivesBuilderTest):
  """TFDS's standard checks on the extracted-tree layout."""
  EXAMPLE_DIR = DUMMY / "extracted"
  BUILDER_CONFIG_NAMES_TO_TEST = ["full"]


def tmpdir(test):
  # absltest's create_tempdir needs parsed flags, which pytest does not provide.
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path)
  return path


def prepare(data_dir, manual_dir, config="full"):
  builder = sib.Builder(data_dir=data_dir, config=config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def examples(builder, split, decode=True):
  """{file_name: example} of a split; `decode=False` keeps the stored JPEG bytes."""
  decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
  ds = builder.as_dataset(split=split, decoders=decoders)
  return {ex["file_name"].decode(): ex for ex in tfds.as_numpy(ds)}


class ContentTest(parameterized.TestCase):
  """Labels, odd files and layouts, on data prepared once per layout."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.builders = {layout: prepare(f"{cls.tmp}/{layout}", DUMMY / layout) for layout in LAYOUTS}
    cls.hierarchy = hierarchy_lib.load_hierarchy("superclassed_imagenet")
    path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
    cls.val_labels = path.read_text().split()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  @parameterized.parameters(*LAYOUTS)
  def test_labels_agree_with_hierarchy_wnid_and_file_name(self, layout):
    h = self.hierarchy
    builder = self.builders[layout]
    self.assertEqual(builder.info.features["label"].names, h.subclass_names)
    self.assertEqual(builder.info.features["superclass"].names, h.superclass_names)
    self.assertEqual(builder.info.metadata["hierarchy"], h.to_dict())
    for split, expected in (("train", TRAIN_FILES), ("validation", VAL_FILES)):
      exs = examples(builder, split)
      self.assertEqual(set(exs), expected)  # Also: tench (not in the hierarchy) is skipped.
      for name, ex in exs.items():
        label, wnid = ex["label"], ex["wnid"].decode()
        self.assertEqual(h.subclasses[label].wnid, wnid)
        self.assertEqual(ex["superclass"], h.superclass_of[label])
        self.assertEqual(h.global_index(ex["superclass"], ex["subclass"]), label)
        if split == "train":
          self.assertEqual(name.split("_")[0], wnid)
        else:  # Labelled by the number in the name: the files are a scattered subset.
          self.assertEqual(self.val_labels[int(name[15:23]) - 1], wnid, name)

  def test_layouts_give_the_same_examples(self):
    a, b = (self.builders[layout] for layout in LAYOUTS)
    for split in ("train", "validation"):
      exs_a, exs_b = examples(a, split, decode=False), examples(b, split, decode=False)
      self.assertEqual(set(exs_a), set(exs_b))
      for name, ex in exs_a.items():
        for feature in ("image", "label", "superclass", "subclass", "wnid"):
          self.assertEqual(ex[feature], exs_b[name][feature], f"{name}: {feature}")

  @parameterized.parameters(*LAYOUTS)
  def test_odd_files_are_rgb_jpeg_and_plain_jpegs_kept_as_stored(self, layout):
    raw = examples(self.builders[layout], "train", decode=False)
    for name, ex in raw.items():
      self.assertTrue(ex["image"].startswith(b"\xff\xd8"), f"{name} is not stored as JPEG")
    for name in (PLAIN, GRAY):
      wnid = name.split("_")[0]
      stored = (DUMMY / "extracted" / "train" / wnid / name).read_bytes()
      self.assertEqual(raw[name]["image"], stored, name)
    for name, kind in ((CMYK, ("JPEG", "CMYK")), (PNG, ("PNG", "RGB"))):
      source = (DUMMY / "extracted" / "train" / name.split("_")[0] / name).read_bytes()
      with Image.open(io.BytesIO(source)) as image:
        self.assertEqual((image.format, image.mode), kind, f"dummy {name} is not odd")
      with Image.open(io.BytesIO(raw[name]["image"])) as image:
        self.assertEqual((image.format, image.mode), ("JPEG", "RGB"), name)
    decoded = examples(self.builders[layout], "train")
    # make_dummy_data.py draws the CMYK picture red and the PNG one green.
    red, green = (decoded[n]["image"].mean(axis=(0, 1)) for n in (CMYK, PNG))
    self.assertGreater(red[0], red[1] + 50)
    self.assertGreater(green[1], green[0] + 50)

  def test_downsampled_config(self):
    builder = prepare(f"{self.tmp}/small", DUMMY / "archives", config="64x64")
    self.assertEqual(builder.info.features["image"].shape, (64, 64, 3))
    for split, expected in (("train", TRAIN_FILES), ("validation", VAL_FILES)):
      exs = examples(builder, split)
      self.assertEqual(set(exs), expected)
      for name, ex in exs.items():
        self.assertEqual(ex["image"].shape, (64, 64, 3), name)
        if name == CMYK:  # Drawn red; the resize path re-encodes it as RGB too.
          red = ex["image"].mean(axis=(0, 1))
          self.assertGreater(red[0], red[1] + 50)


class HierarchySwapTest(parameterized.TestCase):

  def test_custom_hierarchy_selects_and_groups_classes(self):
    path = DUMMY / "custom_hierarchy.json"
    h = hierarchy_lib.load_hierarchy(str(path))
    config = sib.SuperclassedImagenetConfig(name="custom", hierarchy=str(path), image_size=32)
    builder = prepare(tmpdir(self), DUMMY / "extracted", config=config)
    self.assertEqual(builder.info.features["label"].names, h.subclass_names)
    self.assertEqual(builder.info.metadata["hierarchy"], h.to_dict())
    train = examples(builder, "train")
    self.assertEqual({ex["wnid"].decode() for ex in train.values()},
                     {"n01440764", "n01530575", "n01531178", "n02085620"})  # No gyromitra.
    for ex in train.values():
      self.assertEqual(h.subclasses[ex["label"]].wnid, ex["wnid"].decode())
      self.assertEqual(ex["superclass"], h.superclass_of[ex["label"]])
      self.assertEqual(ex["subclass"], h.index_in_superclass[ex["label"]])
      self.assertEqual(ex["image"].shape, (32, 32, 3))
    self.assertLen(examples(builder, "validation"), 4)  # 293 (tench) in, 200 (gyromitra) out.

  def test_prepared_data_of_another_hierarchy_is_refused(self):
    data_dir, original = tmpdir(self), DUMMY / "custom_hierarchy.json"
    prepare(data_dir, DUMMY / "extracted",
            sib.SuperclassedImagenetConfig(name="mine", hierarchy=str(original)))
    custom = json.loads(original.read_text())
    # Same class names in the same order, grouped differently: only the metadata tells.
    fish, finch, _ = custom["superclasses"]
    fish["subclasses"].append(finch["subclasses"].pop(0))
    regrouped = epath.Path(tmpdir(self)) / "regrouped.json"
    regrouped.write_text(json.dumps(custom))
    with self.assertRaisesRegex(ValueError, "prepared with hierarchy 'dummy_custom'"):
      sib.Builder(data_dir=data_dir,
                  config=sib.SuperclassedImagenetConfig(name="mine", hierarchy=str(regrouped)))

  def test_hierarchy_without_imagenet_wnids_is_refused(self):
    with self.assertRaisesRegex(hierarchy_lib.HierarchyError, "T-shirt/top.*ImageNet-1k"):
      sib.load_hierarchy("fashion_mnist")


class ErrorTest(parameterized.TestCase):

  def test_manual_dir_without_imagenet_lists_expected_paths(self):
    manual = epath.Path(tmpdir(self))
    (manual / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")  # Not what is needed.
    with self.assertRaises(FileNotFoundError) as caught:
      prepare(tmpdir(self), manual)
    for expected in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                     f"{manual}/train/<wnid>/*.JPEG", f"{manual}/val/<wnid>/*.JPEG"):
      self.assertIn(expected, str(caught.exception))

  def test_empty_manual_dir_shows_instructions(self):
    manual = tmpdir(self)
    with self.assertRaisesRegex(AssertionError, r"(?s)ILSVRC2012_img_train.tar.*train/<wnid>"):
      prepare(tmpdir(self), manual)

  def test_validation_file_in_two_places_is_refused(self):
    manual = epath.Path(tmpdir(self)) / "imagenet"
    shutil.copytree(DUMMY / "extracted", manual)
    name = "ILSVRC2012_val_00000651.JPEG"  # Sorted into val/n01530575/, and left in val/.
    (manual / "val" / name).write_bytes((manual / "val" / "n01530575" / name).read_bytes())
    with self.assertRaisesRegex(ValueError, f"{name} appears twice"):
      prepare(tmpdir(self), manual)

  @parameterized.parameters(
      ("archives", r"ILSVRC2012_img_train\.tar/n01530575\.tar/n01530575_666\.JPEG"),
      ("extracted", r"train/n02085620/n02085620_666\.JPEG"))
  def test_undecodable_image_stops_the_build_naming_it(self, layout, name):
    with self.assertRaisesRegex(ValueError, f"cannot decode image {name}"):
      prepare(tmpdir(self), DUMMY / "broken" / layout)


if __name__ == "__main__":
  tfds.testing.test_main()
