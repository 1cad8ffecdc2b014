"""superclassed_imagenet: ILSVRC2012 restricted to, and labelled by, a Super-Sub hierarchy.

Reads the user's own ImageNet copy from `manual_dir` (official tars or an extracted
tree), keeps only the hierarchy's subclasses, and stores each image with its global
subclass label, its superclass and its index within that superclass.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterator

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from super_sub.data import encoding
from super_sub.data import features
from super_sub import hierarchy as hierarchy_lib

_TRAIN_TAR = "ILSVRC2012_img_train.tar"
_VAL_TAR = "ILSVRC2012_img_val.tar"
# split -> (official archive, extracted folder), both relative to manual_dir.
_SOURCES = {"train": (_TRAIN_TAR, "train"), "validation": (_VAL_TAR, "val")}
_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_TAR = tfds.download.ExtractMethod.TAR_STREAM

# Each example: (key, wnid, image bytes); keys are paths relative to manual_dir.
_Files = Iterator[tuple[str, str, bytes]]


@dataclasses.dataclass(eq=False)
class SuperclassedImagenetConfig(tfds.core.BuilderConfig):
  """Which hierarchy selects and groups the classes, and how images are stored.

  Attributes:
    hierarchy: a shipped hierarchy name (`super_sub.hierarchy.shipped_hierarchies()`)
      or the path of a hierarchy JSON file. Its subclasses must carry ImageNet-1k
      WordNet ids, with `source_label` = the id's index in TFDS's imagenet2012 labels.
    image_size: None stores images as in ILSVRC2012; S resizes the shorter side to S
      (bicubic, with PIL) and center-crops to S x S.
  """
  hierarchy: str = "superclassed_imagenet"
  image_size: int | None = None

  def __post_init__(self):
    if self.image_size is not None and self.image_size <= 0:
      raise ValueError(f"config {self.name!r}: image_size must be None or positive, "
                       f"got {self.image_size}")


def _resized(size: int) -> SuperclassedImagenetConfig:
  return SuperclassedImagenetConfig(
      name=f"{size}x{size}", image_size=size,
      description=f"Shorter side resized to {size} (bicubic), center-cropped to {size}x{size}.")


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for superclassed_imagenet."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SuperclassedImagenetConfig(name="full", description="Images as stored in ILSVRC2012."),
      _resized(32), _resized(64), _resized(128),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "full"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Register at https://image-net.org/download-images and put ILSVRC2012 in manual_dir
  in either layout (per split; a folder wins over an archive, as it is faster to read):
    (a) the official archives, as for TFDS's imagenet2012:
        manual_dir/{_TRAIN_TAR}  (one <wnid>.tar per class inside)
        manual_dir/{_VAL_TAR}    (flat ILSVRC2012_val_XXXXXXXX.JPEG files)
    (b) an extracted tree:
        manual_dir/train/<wnid>/*.JPEG
        manual_dir/val/<wnid>/*.JPEG  (or unsorted val/ILSVRC2012_val_XXXXXXXX.JPEG)
  Only the hierarchy's classes are read. Validation files are labelled by the number in
  their name, via TFDS's imagenet2012 validation_labels.txt.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._check_prepared_hierarchy()

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The hierarchy of this builder's config (validated against ImageNet-1k)."""
    if not hasattr(self, "_hierarchy"):
      self._hierarchy = load_hierarchy(self.builder_config.hierarchy)
    return self._hierarchy

  def _info(self) -> tfds.core.DatasetInfo:
    h = self.hierarchy
    size = self.builder_config.image_size
    image = tfds.features.Image(shape=(size, size, 3) if size else (None, None, 3),
                                encoding_format="jpeg")
    # The hierarchy is saved with the data, so a prepared dataset carries its own.
    return features.dataset_info(
        self, h, image, {"hierarchy": h.to_dict()},
        wnid=tfds.features.Text())  # file_name e.g. n01530575_10018.JPEG, wnid n01530575

  def _check_prepared_hierarchy(self) -> None:
    """Refuses data prepared under this config name with a different hierarchy."""
    stored = self.data_path / "metadata.json"
    if not stored.exists():
      return
    prepared = json.loads(stored.read_text()).get("hierarchy")
    if prepared is not None and prepared != self.hierarchy.to_dict():
      raise ValueError(
          f"{self.data_path} was prepared with hierarchy {prepared.get('name')!r}, which "
          f"differs from this config's {self.builder_config.hierarchy!r}. Give the config "
          "another name, use another data_dir, or delete that folder to rebuild.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = epath.Path(dl_manager.manual_dir)
    splits = {}
    for split, (archive, folder) in _SOURCES.items():
      if (manual_dir / folder).is_dir():
        source = folder
      elif (manual_dir / archive).exists():
        source = archive
      else:
        logging.warning("superclassed_imagenet: no %s split: neither %s/ nor %s in %s.",
                        split, folder, archive, manual_dir)
        continue
      splits[split] = features.recording_superclass_counts(
          self.info, split, self._generate_examples(manual_dir, source))
    if not splits:
      raise FileNotFoundError(
          f"No ILSVRC2012 data in manual_dir {manual_dir}. Expected, for each split, the "
          "official archive or the extracted folder:\n"
          f"  train:      {manual_dir / _TRAIN_TAR}  or  {manual_dir / 'train'}/<wnid>/*.JPEG\n"
          f"  validation: {manual_dir / _VAL_TAR}  or  {manual_dir / 'val'}/<wnid>/*.JPEG\n"
          f"              (or unsorted {manual_dir / 'val'}/ILSVRC2012_val_XXXXXXXX.JPEG)\n"
          "ImageNet is downloaded by hand: https://image-net.org/download-images")
    return splits

  def _generate_examples(self, manual_dir: epath.Path, source: str):
    """Yields the hierarchy's images from `manual_dir/source`, a tar or a folder."""
    h = self.hierarchy
    by_wnid = {s.wnid: i for i, s in enumerate(h.subclasses)}
    reader = {_TRAIN_TAR: _train_archive, _VAL_TAR: _val_archive,
              "train": _train_folder, "val": _val_folder}[source]
    size = self.builder_config.image_size
    odd, seen, file_names = 0, set(), set()
    for key, wnid, data in reader(manual_dir, set(by_wnid)):
      file_name = key.rsplit("/", 1)[-1]
      if file_name in file_names:  # e.g. val/X.JPEG left over next to val/<wnid>/X.JPEG
        raise ValueError(f"superclassed_imagenet: {file_name} appears twice in {manual_dir}"
                         f" (again as {key}); remove one copy.")
      # CMYK JPEGs and PNGs named .JPEG are found by decoding and stored as RGB JPEG.
      image, is_odd = encoding.reencode(data, f"{key} (in {manual_dir})", "jpeg", size=size)
      odd += is_odd
      seen.add(wnid)
      file_names.add(file_name)
      label = by_wnid[wnid]
      yield key, {"image": image, "file_name": file_name, "wnid": wnid,
                  **features.labels(h, label)}
    # Counted, so that a partial copy of ImageNet shows up in the logs.
    logging.info("superclassed_imagenet: %d images from %s, %d of them odd files (CMYK, "
                 "PNG, ...) re-encoded as RGB JPEG.", len(file_names), source, odd)
    if missing := sorted(set(by_wnid) - seen):
      logging.warning("superclassed_imagenet: %s has no images of %d of the %d hierarchy "
                      "classes, e.g. %s", source, len(missing), len(by_wnid),
                      " ".join(missing[:10]))


def load_hierarchy(name_or_path: str) -> hierarchy_lib.Hierarchy:
  """Loads a hierarchy and checks that its subclasses are ImageNet-1k classes.

  Raises:
    hierarchy_lib.HierarchyError: naming the subclass whose wnid is missing, is not an
      ImageNet-1k class, or whose source_label is not that class's ImageNet-1k label.
  """
  h = hierarchy_lib.load_hierarchy(name_or_path)
  labels = {wnid: i for i, wnid in enumerate(_imagenet_wnids())}
  for sub in h.subclasses:
    if labels.get(sub.wnid) != sub.source_label:
      expected = (f"ImageNet-1k label {labels[sub.wnid]}" if sub.wnid in labels
                  else "an ImageNet-1k WordNet id")
      raise hierarchy_lib.HierarchyError(
          f"hierarchy {h.name!r} ({name_or_path}): subclass {sub.name!r} has wnid {sub.wnid!r} "
          f"and source_label {sub.source_label}; superclassed_imagenet needs {expected}.")
  return h


def _imagenet_wnids() -> list[str]:
  """ImageNet-1k's wnids in label order, from the installed tensorflow_datasets."""
  path = tfds.core.tfds_path("datasets/imagenet2012/labels.txt")
  return path.read_text().split()


def validation_wnids() -> list[str]:
  """Line k (1-based) is the wnid of ILSVRC2012_val_%08d.JPEG % k (TFDS's file)."""
  path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
  return path.read_text().split()


def _val_wnid(file_name: str, labels: list[str], where: str) -> str:
  """Labels a validation file by the number in its name, not by its position."""
  match = _VAL_FILE.fullmatch(file_name)
  if not match or not 1 <= int(match.group(1)) <= len(labels):
    raise ValueError(f"{where}: {file_name!r} is not an ILSVRC2012 validation file name "
                     f"(ILSVRC2012_val_00000001.JPEG .. _{len(labels):08d}.JPEG)")
  return labels[int(match.group(1)) - 1]


def _train_archive(manual_dir: epath.Path, wanted: set[str]) -> _Files:
  # Streams the outer tar and, for wanted classes only, each inner <wnid>.tar.
  for inner_name, inner in tfds.download.iter_archive(manual_dir / _TRAIN_TAR, _TAR):
    wnid = inner_name.removesuffix(".tar")
    if wnid in wanted:
      for name, fobj in tfds.download.iter_archive(inner, _TAR):
        yield f"{_TRAIN_TAR}/{inner_name}/{name}", wnid, fobj.read()


def _val_archive(manual_dir: epath.Path, wanted: set[str]) -> _Files:
  labels = validation_wnids()
  for name, fobj in tfds.download.iter_archive(manual_dir / _VAL_TAR, _TAR):
    wnid = _val_wnid(name.rsplit("/", 1)[-1], labels, where=_VAL_TAR)
    if wnid in wanted:
      yield f"{_VAL_TAR}/{name}", wnid, fobj.read()


def _images_in(folder: epath.Path) -> list[epath.Path]:
  return sorted(p for p in folder.iterdir()
                if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))


def _train_folder(manual_dir: epath.Path, wanted: set[str]) -> _Files:
  train = manual_dir / "train"
  for wnid in sorted(w for w in wanted if (train / w).is_dir()):
    for path in _images_in(train / wnid):
      yield f"train/{wnid}/{path.name}", wnid, path.read_bytes()


def _val_folder(manual_dir: epath.Path, wanted: set[str]) -> _Files:
  # val/<wnid>/ folders (sorted by the user) and/or flat files labelled by name.
  val = manual_dir / "val"
  for wnid in sorted(w for w in wanted if (val / w).is_dir()):
    for path in _images_in(val / wnid):
      yield f"val/{wnid}/{path.name}", wnid, path.read_bytes()
  flat = _images_in(val)
  labels = validation_wnids() if flat else []
  for path in flat:
    wnid = _val_wnid(path.name, labels, where=str(val))
    if wnid in wanted:
      yield f"val/{path.name}", wnid, path.read_bytes()
