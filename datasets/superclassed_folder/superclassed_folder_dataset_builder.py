"""superclassed_folder: your own image folders, labelled by a Super-Sub hierarchy.

  <path>/<split>/<class>/<image>               with a hierarchy JSON (or none: one superclass)
  <path>/<split>/<superclass>/<class>/<image>  the folders are the hierarchy

The folder, the hierarchy and what to do with class folders outside it are the builder
config (`folder_config`); super_sub.data.folders checks the tree before anything is written.
Images are stored as the other builders store them (super_sub.data.encoding): large natural
images as JPEG (their random-resized crops decode only the box), small ones as lossless PNG.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub.data import encoding
from super_sub.data import features
from super_sub.data import folders
from super_sub.data import sources


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """Which folder, and how its classes map to superclasses (`folders.scan`'s arguments).

  Attributes:
    path: the folder holding train/ (and validation/ or val/, test/).
    hierarchy: flat layout only: a hierarchy JSON path or shipped name; None puts every
      class in one superclass.
    unmapped_labels: "error" or "skip" class folders outside the hierarchy.
    validation_share: with no validation folder, the share of train held out as one.
    seed: the seed of that draw.
  """
  path: str = ""
  hierarchy: str | None = None
  unmapped_labels: str = "error"
  validation_share: float = 0.1
  seed: int = 0


def folder_config(path: str, hierarchy: str | None = None, unmapped_labels: str = "error",
                  validation_share: float = 0.1, seed: int = 0) -> FolderConfig:
  """The config of a folder: paths made absolute, named by the folder and a digest of every
  field, so two folders (or one folder under two hierarchies) never share prepared data."""
  path = os.path.abspath(os.path.expanduser(path))
  hierarchy = sources.canonical_hierarchy(hierarchy)
  fields = {"path": path, "hierarchy": hierarchy, "unmapped_labels": unmapped_labels,
            "validation_share": validation_share, "seed": seed}
  return FolderConfig(name=sources.config_name(os.path.basename(path) or "folder", fields),
                      description=f"Images of {path}.", **fields)


class Builder(sources.ConfiguredBuilder, tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for superclassed_folder (needs a `folder_config`)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "The held-out validation split depends on the seed and each image's key "
               "alone, no longer on the label numbers: the same images whatever the hierarchy.",
  }
  CONFIG_TYPE = FolderConfig
  NEEDS_CONFIG = ("superclassed_folder reads the folder its config names: pass "
                  "config=folder_config(path, ...) (super-sub-build --dataset=folder:<PATH>), "
                  "or read prepared data with tfds.builder_from_directory")

  @property
  def plan(self) -> folders.Plan:
    """The folder's plan (scanned once; raises folders.FolderError on a bad tree)."""
    if not hasattr(self, "_plan"):
      c = self.builder_config
      self._plan = folders.scan(c.path, c.hierarchy, c.unmapped_labels, c.validation_share,
                                c.seed)
    return self._plan

  def _source_hierarchy(self) -> hierarchy_lib.Hierarchy:
    return self.plan.hierarchy

  def _info(self) -> tfds.core.DatasetInfo:
    # Prepared data is read without the folder (it may be gone): shape and encoding are in
    # its metadata.
    metadata = self.prepared_metadata
    if not metadata:
      plan = self.plan
      metadata = {"hierarchy": plan.hierarchy.to_dict(), "image_shape": list(plan.shape),
                  "encoding": plan.encoding, "source": os.fspath(plan.root),
                  "fingerprint": folders.fingerprint(plan.root),
                  "skipped": plan.skipped, "notes": list(plan.notes)}
    return features.dataset_info(self, self.hierarchy, features.image_from_metadata(metadata),
                                 metadata)

  def check_unchanged(self) -> None:
    """Refuses prepared data whose folder has changed since (images added, removed or
    replaced), so a rebuild never silently reuses the old images. A folder that is gone is
    no change: the prepared data is all training and evaluation need.

    Raises:
      folders.FolderError: naming the folder and the prepared data to delete.
    """
    prepared, path = self.prepared_metadata, epath.Path(self.builder_config.path)
    if prepared and path.is_dir() and prepared.get("fingerprint") != folders.fingerprint(path):
      raise folders.FolderError(
          f"{path} has changed since it was prepared into {self.data_path}; delete that "
          "folder to prepare it again, or give another --data_dir")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the folder is the config's
    return {split: features.recording_superclass_counts(self.info, split,
                                                        self._generate_examples(items))
            for split, items in self.plan.splits.items()}

  def _generate_examples(self, items):
    """Yields each planned file, stored in the plan's encoding; keys are relative paths."""
    plan, h = self.plan, self.hierarchy
    odd = 0
    for rel, label in items:
      path = plan.root / rel
      image, is_odd = encoding.reencode(path.read_bytes(), os.fspath(path), plan.encoding,
                                        channels=plan.shape[-1])
      odd += is_odd
      yield rel, {"image": image, "file_name": rel, **features.labels(h, label)}
    logging.info("superclassed_folder: %d images from %s, %d of them re-encoded as %s.",
                 len(items), plan.root, odd, plan.encoding.upper())
