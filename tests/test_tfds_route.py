"""tfds:<name>[/<config>]: any TFDS image classification dataset, superclassed by a
hierarchy or by its own coarse label, on a tiny dataset built here from dummy data (nothing
downloads)."""

import importlib
import json

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub.data import prepare
from super_sub.data import sources

FINE = ["apple", "pear", "rose", "tulip", "bus", "train"]
COARSE = ["fruit", "flower", "vehicle"]
COARSE_OF = [0, 0, 1, 1, 2, 2]


class TinyCoarseClasses(tfds.core.GeneratorBasedBuilder):
  """Six classes in three coarse groups, 8x8 RGB; configs: `clean` (train + test),
  `train_only`, and `conflict` (one class comes with two coarse labels)."""

  VERSION = tfds.core.Version("1.0.0")
  # TFDS looks for README/CITATIONS beside a builder's package; a test module is none.
  pkg_dir_path = epath.Path(__file__).parent
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("clean", "train_only", "conflict")]

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3)),
        "label": tfds.features.ClassLabel(names=FINE),
        "coarse_label": tfds.features.ClassLabel(names=COARSE)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = {"train": self._generate_examples(0, 4)}
    if self.builder_config.name != "train_only":
      splits["test"] = self._generate_examples(1, 2)
    return splits

  def _generate_examples(self, seed, per_class):
    rng = np.random.default_rng(seed)
    for label in range(len(FINE)):
      for i in range(per_class):
        coarse = COARSE_OF[label]
        if self.builder_config.name == "conflict" and label == 1 and i == 0:
          coarse = 2  # pear once filed under vehicle
        yield f"{label}_{i}", {"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                               "label": label, "coarse_label": coarse}


def _hierarchy(tmp_path, subclasses_by_super) -> str:
  path = tmp_path / "h.json"
  path.write_text(json.dumps({"name": "mine", "superclasses": [
      {"name": sup, "subclasses": [{"name": n, "source_label": i} for n, i in subs]}
      for sup, subs in subclasses_by_super.items()]}))
  return str(path)


def _labels(builder, split):
  return [(int(ex["label"]), int(ex["superclass"]))
          for ex in tfds.as_numpy(builder.as_dataset(split=split))]


def test_coarse_label_feature_as_hierarchy(tmp_path):
  builder = prepare.prepare_dataset("tfds:tiny_coarse_classes/clean", data_dir=str(tmp_path),
                                    hierarchy="from_feature:coarse_label")
  h = builder.hierarchy
  assert h.superclass_names == COARSE and h.subclass_names == FINE
  source = tfds.builder("tiny_coarse_classes/clean", data_dir=str(tmp_path))
  want = sorted((int(ex["label"]), int(ex["coarse_label"]))
                for ex in tfds.as_numpy(source.as_dataset(split="test")))
  assert sorted(_labels(builder, "test")) == want
  assert builder.info.metadata["superclass_counts"]["test"] == [4, 4, 4]
  plain = tfds.builder_from_directory(str(builder.data_path))  # no super-sub code
  assert plain.info.features["superclass"].names == COARSE


def test_hierarchy_maps_labels_by_name_or_index_and_holds_out_validation(tmp_path):
  # "apple" by name (source_label agrees); "first" and "second" by index (no such class name).
  path = _hierarchy(tmp_path, {"food": [("apple", 0), ("second", 1)],
                               "rest": [("rose", 2), ("tulip", 3), ("bus", 4), ("train", 5)]})
  builder = prepare.prepare_dataset("tfds:tiny_coarse_classes/train_only", data_dir=str(tmp_path),
                                    hierarchy=path)
  assert set(builder.info.splits) == {"train", "validation"}
  assert builder.info.splits["validation"].num_examples == 6  # one of each class's 4
  assert any("no validation or test split" in n for n in builder.info.metadata["notes"])
  labels = _labels(builder, "train") + _labels(builder, "validation")
  assert sorted(set(labels)) == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 1)]


def test_unmapped_labels_refused_by_name_or_skipped(tmp_path):
  path = _hierarchy(tmp_path, {"food": [("apple", 0), ("pear", 1)]})
  with pytest.raises(sources.DatasetError, match=r"4 labels .* rose, tulip, bus, train; .*"
                                                 r"--unmapped_labels=skip"):
    prepare.prepare_dataset("tfds:tiny_coarse_classes/clean", data_dir=str(tmp_path),
                            hierarchy=path)
  builder = prepare.prepare_dataset("tfds:tiny_coarse_classes/clean", data_dir=str(tmp_path),
                                    hierarchy=path, unmapped_labels="skip")
  assert builder.info.splits["test"].num_examples == 4
  assert any("skipped 24 examples" in n for n in builder.info.metadata["notes"])


@pytest.mark.parametrize("dataset,hierarchy,pattern", [
    ("tfds:tiny_coarse_classes/conflict", "from_feature:coarse_label",
     r"'pear' comes with coarse_label 'fruit' and 'vehicle'"),
    ("tfds:tiny_coarse_classes/clean", "from_feature:no_such", r"no ClassLabel feature"),
    ("tfds:tiny_coarse_classes/clean", None, r"needs --hierarchy"),
    ("tfds:no_such_dataset_anywhere", "from_feature:coarse_label", r"no such TFDS dataset"),
])
def test_bad_sources_refused(tmp_path, dataset, hierarchy, pattern):
  with pytest.raises(sources.DatasetError, match=pattern):
    prepare.prepare_dataset(dataset, data_dir=str(tmp_path / "tfds"), hierarchy=hierarchy)
  assert not list((tmp_path / "tfds").glob("superclassed_tfds/*/*/dataset_info.json"))


def test_source_label_disagreeing_with_the_class_name_is_refused(tmp_path):
  path = _hierarchy(tmp_path, {"food": [("apple", 1), ("pear", 0)]})
  with pytest.raises(sources.DatasetError, match=r"'apple' has source_label 1.*fix"):
    prepare.prepare_dataset("tfds:tiny_coarse_classes/clean", data_dir=str(tmp_path),
                            hierarchy=path, unmapped_labels="skip")


def test_run_reopens_a_tfds_dataset_from_its_config(tmp_path):
  """What eval and export do: the saved config (dataset tfds:..., its --hierarchy) alone
  reopens the superclassed copy."""
  from super_sub.training import config as config_lib  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.TrainConfig(model_dir=str(tmp_path / "run"), data_dir=str(tmp_path),
                                  dataset="tfds:tiny_coarse_classes/clean",
                                  hierarchy="from_feature:coarse_label")
  builder = prepare.prepare_dataset(config.dataset, config.data_dir, **config.dataset_options())
  run_lib.Run.create(config_lib.resolve(config, builder), builder)
  reopened = run_lib.Run.open(str(tmp_path / "run"))
  assert reopened.config.hierarchy == "from_feature:coarse_label"
  assert reopened.builder.data_path == builder.data_path
  assert reopened.hierarchy.superclass_names == COARSE
  assert reopened.config.augment == "flip_crop" and reopened.config.image_size == 8


@pytest.mark.parametrize("module,pattern", [
    ("superclassed_folder", r"config=folder_config\(path.*builder_from_directory"),
    ("superclassed_tfds", r"config=tfds_config\(name, hierarchy\).*builder_from_directory"),
])
def test_user_source_builders_without_their_config_say_how_to_make_one(tmp_path, module,
                                                                       pattern):
  builder_module = importlib.import_module(
      f"super_sub.datasets.{module}.{module}_dataset_builder")
  with pytest.raises(ValueError, match=pattern):
    builder_module.Builder(data_dir=str(tmp_path))
  assert not list(tmp_path.iterdir())
