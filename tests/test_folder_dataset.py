"""Your own images: folder:<PATH> in both layouts, with real PNG/JPEG files written
here, read back without super-sub code, trained flat, and every bad tree refused in one line
with nothing prepared."""

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from super_sub.data import encoding
from super_sub.data import folders
from super_sub.data import prepare
from super_sub.data import sources
from super_sub.training import config as config_lib

_RNG = np.random.default_rng(0)


def write_image(path: pathlib.Path, size=(12, 12), mode="RGB", fmt=None) -> pathlib.Path:
  """A random image file of `mode`, in the format its suffix names (or `fmt`)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  w, h = size
  pixels = _RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
  image = Image.fromarray(pixels, "RGB")
  if mode != "RGB":
    image = image.convert(mode)
  image.save(path, fmt)
  return path


def make_tree(root: pathlib.Path, layout: dict, splits=("train", "test"), per_class=4,
              size=(12, 12)) -> pathlib.Path:
  """`layout`: {class: None} (flat) or {superclass: [classes]}; half PNG, half JPEG."""
  for split in splits:
    for key, value in layout.items():
      classes = [(key, None)] if value is None else [(c, key) for c in value]
      for name, sup in classes:
        folder = root / split / (sup or "") / name
        for i in range(per_class):
          write_image(folder / (f"{i}.png" if i % 2 else f"{i}.jpg"), size=size)
  return root


def snapshot(root: pathlib.Path) -> dict:
  """Every file under root with its bytes' digest and mtime: what a build must not change."""
  return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                     p.stat().st_mtime_ns)
          for p in sorted(root.rglob("*")) if p.is_file()}


def prepared(data_dir: pathlib.Path) -> list[str]:
  """Every prepared dataset (dataset_info.json) under data_dir, and any incomplete one."""
  return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                if p.name == "dataset_info.json" or p.name.startswith("incomplete"))


def examples(builder, split):
  return sorted(tfds.as_numpy(builder.as_dataset(split=split)), key=lambda ex: ex["file_name"])


SUPER = {"animals": ["cat", "dog"], "vehicles": ["car"]}


@pytest.fixture(scope="module")
def superclass_build(tmp_path_factory):
  """The superclass layout with odd files among them, built once; (builder, root, before)."""
  root = make_tree(tmp_path_factory.mktemp("pets") / "pets", SUPER)
  # Odd files: RGBA PNG, palette GIF, CMYK JPEG, grayscale BMP, a PNG named .jpg.
  write_image(root / "train/animals/cat/rgba.png", mode="RGBA")
  write_image(root / "train/animals/dog/palette.gif", mode="P")
  write_image(root / "train/vehicles/car/cmyk.jpg", mode="CMYK")
  write_image(root / "train/vehicles/car/gray.bmp", mode="L")
  write_image(root / "train/animals/cat/png_named.jpg", fmt="PNG")
  (root / "train/animals/cat/.DS_Store").write_bytes(b"\0junk")  # hidden: ignored
  before = snapshot(root)
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(data_dir))
  return builder, root, before


def test_superclass_layout_is_its_own_hierarchy(superclass_build):
  builder, root, _ = superclass_build
  h = builder.hierarchy
  assert h.superclass_names == ["animals", "vehicles"]
  assert h.subclass_names == ["cat", "dog", "car"]
  assert set(builder.info.splits) == {"train", "validation", "test"}
  for split in builder.info.splits:
    for ex in examples(builder, split):
      sup, name = ex["file_name"].decode().split("/")[1:3]
      assert h.subclass_names[ex["label"]] == name
      assert h.superclass_names[ex["superclass"]] == sup
      assert ex["subclass"] == h.index_in_superclass[ex["label"]]


def test_odd_files_reencoded_as_the_small_datasets_store_them(superclass_build):
  builder, root, _ = superclass_build
  feature = builder.info.features["image"]
  assert feature.shape == (12, 12, 3) and feature.encoding_format == "png"
  raw = {ex["file_name"].decode(): ex["image"] for split in builder.info.splits
         for ex in tfds.as_numpy(builder.as_dataset(
             split=split, decoders={"image": tfds.decode.SkipDecoding()}))}
  assert len(raw) == 3 * 4 * 2 + 5  # every image, hidden file left out
  for name, data in raw.items():
    with Image.open(io.BytesIO(data)) as image:
      assert image.format == "PNG" and image.mode in ("RGB", "L"), name
  # A plain RGB PNG is stored byte for byte; a CMYK JPEG is converted, pixels kept.
  assert raw["train/animals/cat/1.png"] == (root / "train/animals/cat/1.png").read_bytes()
  decoded = {ex["file_name"].decode(): ex["image"] for split in builder.info.splits
             for ex in examples(builder, split)}
  with Image.open(root / "train/vehicles/car/cmyk.jpg") as cmyk:
    np.testing.assert_array_equal(decoded["train/vehicles/car/cmyk.jpg"],
                                  np.asarray(cmyk.convert("RGB")))


def test_build_leaves_the_folder_untouched(superclass_build):
  _, root, before = superclass_build
  assert snapshot(root) == before


def test_held_out_validation_is_seeded_and_said(superclass_build, tmp_path):
  builder, root, _ = superclass_build
  notes = builder.info.metadata["notes"]
  assert any("no validation folder" in n and "seed 0" in n for n in notes)
  summary = prepare.format_summary(builder, prepare.summarize_dataset(builder))
  assert "note: no validation folder" in summary
  again = prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path))
  names = lambda b: [ex["file_name"] for ex in examples(b, "validation")]  # noqa: E731
  assert names(again) == names(builder)
  assert len(names(builder)) == 3  # one of each class's 5-7 train images


def test_held_out_images_do_not_depend_on_the_hierarchy(tmp_path):
  """A flat-only run and a Super-Sub run of one folder (--flat_from reuses the first's network)
  must hold out the same images: read with no hierarchy, with one that numbers the classes in
  another order, and with one that skips a class, each class keeps its validation images."""
  root = make_tree(tmp_path / "flat", {"bird": None, "car": None, "cat": None, "truck": None},
                   splits=("train",), per_class=20)
  hierarchy = tmp_path / "h.json"
  hierarchy.write_text(json.dumps({"name": "h", "superclasses": [  # truck, car, bird: 0, 1, 2
      {"name": "vehicles", "subclasses": [{"name": "truck", "source_label": 0},
                                          {"name": "car", "source_label": 1}]},
      {"name": "animals", "subclasses": [{"name": "bird", "source_label": 2}]}]}))
  held = lambda plan: {f for f, _ in plan.splits["validation"]}  # noqa: E731
  flat = folders.scan(root)
  assert flat.hierarchy.subclass_names == ["bird", "car", "cat", "truck"]
  assert len(held(flat)) == 8  # 10% of each class's 20
  assert {f.split("/")[1] for f in held(flat)} == {"bird", "car", "cat", "truck"}
  grouped = folders.scan(root, str(hierarchy), unmapped_labels="skip")
  assert grouped.hierarchy.subclass_names == ["truck", "car", "bird"]
  assert held(grouped) == {f for f in held(flat) if not f.startswith("train/cat/")}
  assert held(folders.scan(root, seed=1)) != held(flat)  # seeded


def test_read_without_super_sub_code(superclass_build):
  builder, _, _ = superclass_build
  counts = builder.info.metadata["superclass_counts"]
  plain = tfds.builder_from_directory(str(builder.data_path))
  assert dict(plain.info.splits) .keys() == builder.info.splits.keys()
  assert plain.info.metadata["superclass_counts"] == counts
  # tfds.load finds the prepared config in data_dir (its code does not list it).
  ds = tfds.load(f"superclassed_folder/{builder.builder_config.name}",
                 data_dir=str(builder.data_dir).split("/superclassed_folder/")[0], split="test")
  assert sum(1 for _ in ds) == sum(counts["test"])


def test_changed_folder_is_refused_not_silently_reused(tmp_path):
  root = make_tree(tmp_path / "imgs", {"a": None, "b": None})
  data_dir = str(tmp_path / "tfds")
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=data_dir)
  prepare.prepare_dataset(f"folder:{root}", data_dir=data_dir)  # unchanged: reused
  write_image(root / "train" / "a" / "new.png")
  with pytest.raises(folders.FolderError, match=r"has changed since it was prepared into .*; "
                                                r"delete that folder"):
    prepare.prepare_dataset(f"folder:{root}", data_dir=data_dir)
  (root / "train" / "a" / "new.png").unlink()
  (root / "notes.txt").write_text("not a split")  # outside the split folders: no change
  prepare.prepare_dataset(f"folder:{root}", data_dir=data_dir)
  os.rename(root, tmp_path / "elsewhere")  # gone: the prepared data still serves
  assert prepare.prepare_dataset(f"folder:{root}", data_dir=data_dir).data_path == builder.data_path


def test_non_image_files_are_left_out_and_counted(tmp_path):
  root = make_tree(tmp_path / "imgs", {"a": None, "b": None})
  (root / "train" / "a" / "labels.csv").write_text("x")
  (root / "test" / "b" / "README").write_text("x")
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  assert builder.info.splits["test"].num_examples == 8
  assert any(n.startswith("ignored 2 files that are not images by their suffix") and
             "test/b/README, train/a/labels.csv" in n for n in builder.info.metadata["notes"])


def test_flat_layout_with_hierarchy_by_name_and_wnid(tmp_path):
  root = make_tree(tmp_path / "flat", {"tabby": None, "n02124075": None, "car": None},
                   splits=("train", "val"))
  hierarchy = tmp_path / "mine.json"
  hierarchy.write_text(json.dumps({"name": "mine", "superclasses": [
      {"name": "cats", "subclasses": [{"name": "tabby", "source_label": 0},
                                      {"name": "Egyptian cat", "wnid": "n02124075",
                                       "source_label": 1}]},
      {"name": "cars", "subclasses": [{"name": "car", "source_label": 2}]}]}))
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"),
                                    hierarchy=str(hierarchy))
  assert set(builder.info.splits) == {"train", "validation"}  # val/ is the validation split
  h = builder.hierarchy
  for ex in examples(builder, "validation"):
    folder = ex["file_name"].decode().split("/")[1]
    expected = {"tabby": "tabby", "n02124075": "Egyptian cat", "car": "car"}[folder]
    assert h.subclass_names[ex["label"]] == expected
  assert not builder.info.metadata["notes"]


def test_run_reopens_a_folder_dataset_with_its_hierarchy(tmp_path):
  """What eval and export do: the saved config alone (absolute folder and hierarchy paths)
  reopens the dataset under its hierarchy, from another working directory."""
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  root = make_tree(tmp_path / "flat", {"car": None, "tabby": None}, splits=("train", "val"))
  (tmp_path / "h.json").write_text(json.dumps({"name": "h", "superclasses": [
      {"name": "cats", "subclasses": [{"name": "tabby", "source_label": 0}]},
      {"name": "cars", "subclasses": [{"name": "car", "source_label": 1}]}]}))
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:  # relative paths, as typed on a command line
    config = config_lib.TrainConfig(model_dir="run", dataset="folder:flat", hierarchy="h.json",
                                    data_dir=str(tmp_path / "tfds"))
    builder = prepare.prepare_dataset(config.dataset, config.data_dir, **config.dataset_options())
    run_lib.Run.create(config_lib.resolve(config, builder), builder)
  finally:
    os.chdir(cwd)
  reopened = run_lib.Run.open(str(tmp_path / "run"))
  assert reopened.config.hierarchy == str(tmp_path / "h.json")
  assert reopened.hierarchy == builder.hierarchy
  assert reopened.hierarchy.superclass_names == ["cats", "cars"]
  assert reopened.builder.data_path == builder.data_path


def test_unmapped_class_folders_refused_by_name_or_skipped_and_counted(tmp_path):
  root = make_tree(tmp_path / "flat", {"car": None, "truck": None, "zebra": None})
  hierarchy = tmp_path / "h.json"
  hierarchy.write_text(json.dumps({"name": "h", "superclasses": [
      {"name": "vehicles", "subclasses": [{"name": "car", "source_label": 0},
                                          {"name": "truck", "source_label": 1}]}]}))
  data_dir = tmp_path / "tfds"
  with pytest.raises(folders.FolderError, match=r"not subclasses .* zebra; .*--unmapped_labels=skip"):
    prepare.prepare_dataset(f"folder:{root}", data_dir=str(data_dir),
                            hierarchy=str(hierarchy))
  assert prepared(data_dir) == []
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(data_dir),
                                    hierarchy=str(hierarchy), unmapped_labels="skip")
  assert builder.info.splits["test"].num_examples == 8
  assert builder.info.metadata["skipped"] == {"zebra": 8}
  assert "skipped 8 images of 1 class folders" in prepare.format_summary(
      builder, prepare.summarize_dataset(builder))


def test_two_folders_of_one_subclass_refused(tmp_path):
  """A class folder by name and another by WordNet id of the same subclass: a class twice."""
  root = make_tree(tmp_path / "flat", {"Egyptian cat": None, "n02124075": None})
  hierarchy = tmp_path / "h.json"
  hierarchy.write_text(json.dumps({"name": "h", "superclasses": [{"name": "cats", "subclasses": [
      {"name": "Egyptian cat", "wnid": "n02124075", "source_label": 0}]}]}))
  with pytest.raises(folders.FolderError, match=r"Egyptian cat and n02124075 are the same "
                                                r"subclass"):
    prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"),
                            hierarchy=str(hierarchy))
  assert prepared(tmp_path / "tfds") == []


@pytest.mark.slow
def test_flat_layout_without_hierarchy_trains_the_flat_network(tmp_path, smoke_config):
  from conftest import train_run  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  root = make_tree(tmp_path / "shapes", {"a": None, "b": None, "c": None},
                   splits=("train", "validation"), per_class=6, size=(16, 16))
  config = smoke_config(tmp_path / "run", dataset=f"folder:{root}", stage="flat",
                        data_dir=str(tmp_path / "tfds"))
  with pytest.raises(sources.DatasetError, match=r"one superclass .* pass --stage=flat"):
    train_run(dataclasses.replace(config, stage="all"))  # refused before any training
  assert not (tmp_path / "run" / "flat").exists()
  run = train_run(config, evaluate=True)
  h = run.hierarchy
  assert h.num_superclasses == 1 and h.subclass_names == ["a", "b", "c"]
  # Evaluated alone: the flat entries and predictions, what learning a hierarchy reads.
  result = json.loads((tmp_path / "run" / "eval.json").read_text())
  assert set(result) == {"dataset", "split", "num_examples", "hierarchy",
                         "hierarchy_definition", "flat", "flat_per_superclass"}
  assert result["hierarchy_definition"] == h.to_dict()  # no shipped name to load it by
  assert sorted(os.listdir(tmp_path / "run" / "predictions")) == ["flat.npz"]
  assert run.config.augment == "flip_crop" and run.config.image_size == 16
  assert run.is_done(run_lib.FLAT)
  # Evaluation and export reopen the dataset from the saved config alone, from anywhere.
  saved = config_lib.load_config(str(tmp_path / "run"))
  assert saved.dataset == f"folder:{root}" and saved.hierarchy is None
  assert run_lib.Run.open(str(tmp_path / "run")).builder.info.splits["train"].num_examples == 18

  # Super-Sub under a hierarchy of those classes, from that flat network (--flat_from): the
  # same network, its outputs in the new class order (c, a, b); no flat training.
  grouped = tmp_path / "grouped.json"
  grouped.write_text(json.dumps({"name": "grouped", "superclasses": [
      {"name": "ca_group", "subclasses": [{"name": "c", "source_label": 0},
                                          {"name": "a", "source_label": 1}]},
      {"name": "b_group", "subclasses": [{"name": "b", "source_label": 2}]}]}))
  second = train_run(dataclasses.replace(config, model_dir=str(tmp_path / "grouped_run"),
                                         hierarchy=str(grouped), stage="all",
                                         flat_from=str(tmp_path / "run")))
  assert second.hierarchy.subclass_names == ["c", "a", "b"]
  metrics = second.metrics(run_lib.FLAT)
  assert metrics["copied_from"] == str(tmp_path / "run")
  assert metrics["history"] == run.metrics(run_lib.FLAT)["history"]
  images = np.random.default_rng(0).random((5, 16, 16, 3), np.float32)
  np.testing.assert_allclose(second.load_model(run_lib.FLAT).predict(images, verbose=0),
                             run.load_model(run_lib.FLAT).predict(images, verbose=0)[:, [2, 0, 1]],
                             atol=1e-5)
  assert second.is_done(second.generalist) and second.is_done(run_lib.specialist(0))
  # A flat network that knows other classes is refused before anything is written.
  only_ca = tmp_path / "only_ca.json"
  only_ca.write_text(json.dumps({"name": "only_ca", "superclasses": [
      {"name": "c_group", "subclasses": [{"name": "c", "source_label": 0}]},
      {"name": "a_group", "subclasses": [{"name": "a", "source_label": 1}]}]}))
  with pytest.raises(run_lib.RunMismatchError, match=r"other classes: none only here, \['b'\] "
                                                     r"only there"):
    train_run(dataclasses.replace(config, model_dir=str(tmp_path / "only_ca_run"),
                                  hierarchy=str(only_ca), unmapped_labels="skip", stage="all",
                                  flat_from=str(tmp_path / "run")))
  assert not (tmp_path / "only_ca_run" / "flat").exists()


def test_large_or_varying_images_are_jpeg_with_imagenet_crops(tmp_path):
  root = tmp_path / "photos"
  for split in ("train", "validation"):
    write_image(root / split / "a" / "0.jpg", size=(40, 30))
    write_image(root / split / "a" / "1.png", size=(24, 36))
    write_image(root / split / "b" / "0.jpg", size=(20, 20))
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  feature = builder.info.features["image"]
  assert feature.shape == (None, None, 3) and feature.encoding_format == "jpeg"
  assert config_lib.default_augmentation(builder) == "random_resized_crop"
  raw = {ex["file_name"].decode(): ex["image"] for ex in tfds.as_numpy(builder.as_dataset(
      split="train", decoders={"image": tfds.decode.SkipDecoding()}))}
  assert raw["train/a/0.jpg"] == (root / "train/a/0.jpg").read_bytes()  # JPEG kept as it is
  assert raw["train/a/1.png"][:2] == b"\xff\xd8"  # PNG re-encoded as JPEG
  with pytest.raises(sources.DatasetError, match="--image_size"):
    config_lib.resolve(config_lib.TrainConfig(model_dir=str(tmp_path / "r"), stage="flat",
                                              dataset=f"folder:{root}"), builder)


def test_grayscale_folders_store_one_channel(tmp_path):
  root = tmp_path / "gray"
  for split in ("train", "test"):
    for c in ("a", "b"):
      for i in range(2):
        write_image(root / split / c / f"{i}.png", mode="L")
  builder = prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  assert builder.info.features["image"].shape == (12, 12, 1)


# --- bad input: one clear error, nothing prepared ------------------------------------------------

def _bad_trees(tmp: pathlib.Path):
  """name -> (dataset, regex of the error)."""
  empty = make_tree(tmp / "empty", {"a": None, "b": None})
  (empty / "train" / "c").mkdir()
  two = make_tree(tmp / "two", SUPER)
  write_image(two / "test" / "vehicles" / "cat" / "0.png")
  mixed = make_tree(tmp / "mixed", {"a": None, "b": None})
  write_image(mixed / "train" / "sup" / "c" / "0.png")
  across = make_tree(tmp / "across", {"a": None}, splits=("train",))
  make_tree(across, {"s": ["a"]}, splits=("test",))
  inside = make_tree(tmp / "inside", {"a": None, "b": None})
  write_image(inside / "train" / "a" / "sub" / "0.png")
  garbage = make_tree(tmp / "garbage", {"a": None, "b": None})
  (garbage / "train" / "b" / "broken.jpg").write_bytes(b"not an image at all")
  unknown = make_tree(tmp / "unknown", {"a": None})
  write_image(unknown / "training" / "a" / "0.png")
  both = make_tree(tmp / "both", {"a": None}, splits=("train", "val", "validation"))
  afile = tmp / "afile.png"
  write_image(afile)
  no_train = make_tree(tmp / "no_train", {"a": None}, splits=("val", "test"))
  return {
      "no train folder": (no_train, r"has no train/ folder \(found test, val/\)"),
      "empty class folder": (empty, r"train/c holds no images"),
      "class under two superclasses": (two, r"classes under two superclasses: cat in animals, "
                                            r"vehicles"),
      "mixed layouts in a split": (mixed, r"mixes layouts: a, b hold images .* sup hold folders"),
      "mixed layouts across splits": (across, r"mixes layouts across splits"),
      "images too deep (mixed)": (inside, r"holds both images and folders"),
      "undecodable header": (garbage, r"cannot read image .*train/b/broken\.jpg"),
      "not a split folder": (unknown, r"not splits: training"),
      "two validation folders": (both, r"both val/ and validation/"),
      "missing path": (tmp / "nowhere", r"nowhere does not exist"),
      "a file, not a folder": (afile, r"afile\.png is not a folder"),
  }


def test_bad_trees_refused_with_one_clear_error_and_nothing_prepared(tmp_path):
  data_dir = tmp_path / "tfds"
  for name, (root, pattern) in _bad_trees(tmp_path).items():
    with pytest.raises(folders.FolderError, match=pattern):
      prepare.prepare_dataset(f"folder:{root}", data_dir=str(data_dir))
    assert prepared(data_dir) == [], name


def test_hierarchy_for_the_superclass_layout_is_refused(tmp_path):
  root = make_tree(tmp_path / "sup", SUPER)
  with pytest.raises(folders.FolderError, match=r"superclass layout .* drop --hierarchy"):
    prepare.prepare_dataset(f"folder:{root}", data_dir=str(tmp_path / "tfds"),
                            hierarchy="fashion_mnist")


@pytest.mark.parametrize("name", ["0.jpg", "1.png"])  # re-encoded, and kept byte for byte
def test_truncated_image_fails_the_build_naming_it_and_prepares_nothing(tmp_path, name):
  root = make_tree(tmp_path / "trunc", {"a": None, "b": None}, size=(40, 40))
  good = (root / "train" / "a" / name).read_bytes()
  (root / "train" / "a" / name).write_bytes(good[:len(good) * 4 // 5])  # header intact
  data_dir = tmp_path / "tfds"
  with pytest.raises(encoding.UndecodableFileError,
                     match=rf"cannot decode image .*train/a/{name}"):
    prepare.prepare_dataset(f"folder:{root}", data_dir=str(data_dir))
  assert prepared(data_dir) == []


def test_hierarchy_for_a_dataset_with_its_own_is_refused():
  with pytest.raises(sources.DatasetError, match="carries its own hierarchy"):
    prepare.open_builder("superclassed_synthetic", hierarchy="fashion_mnist")


@pytest.mark.slow
def test_build_command_says_one_line_and_exits_2(tmp_path):
  """The entry point turns a bad tree into one line on stderr and exit status 2."""
  root = make_tree(tmp_path / "two", SUPER)
  write_image(root / "test" / "vehicles" / "cat" / "0.png")
  done = subprocess.run(
      [sys.executable, "-m", "super_sub.train.build_dataset", f"--dataset=folder:{root}",
       f"--data_dir={tmp_path / 'tfds'}"], capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert done.returncode == 2, done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("build_dataset.py: error: ") and "cat in animals, vehicles" in last
  assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_command_says_one_line_and_exits_2(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "super_sub.train.train", f"--model_dir={tmp_path / 'run'}",
       f"--dataset=folder:{tmp_path / 'nowhere'}", f"--data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert done.returncode == 2, done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("train.py: error: ") and "nowhere does not exist" in last
  assert "Traceback" not in done.stderr
