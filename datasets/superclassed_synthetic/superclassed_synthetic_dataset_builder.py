"""superclassed_synthetic: procedurally drawn shapes in a two-level hierarchy, fully offline.

super-sub's embedded default dataset: superclasses are shape families, subclasses differ
in a finer attribute (see `super_sub.synthetic`). Deterministic for a config's seed.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from super_sub.data import features
from super_sub import hierarchy as hierarchy_lib
from super_sub.data import synthetic


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Image size, examples per subclass per split, and the generator's seed."""
  image_size: int = 32
  train_per_class: int = 150
  validation_per_class: int = 50
  seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for superclassed_synthetic."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name="32px", description="32x32 RGB, 150 train and 50 validation "
                      "images per subclass."),
      SyntheticConfig(name="64px", description="64x64 RGB, 300 train and 100 validation "
                      "images per subclass.", image_size=64, train_per_class=300,
                      validation_per_class=100),
      SyntheticConfig(name="smoke", description="16x16 RGB, 8 train and 4 validation images "
                      "per subclass: a run of every stage in seconds, for tests.",
                      image_size=16, train_per_class=8, validation_per_class=4),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "32px"

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The hierarchy that `label` and `superclass` follow."""
    return synthetic.load_hierarchy()

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    # metadata: superclass_counts, recorded while preparing.
    return features.dataset_info(self, self.hierarchy, tfds.features.Image(shape=(size, size, 3)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: every image is drawn on the fly.
    cfg = self.builder_config
    return {split: features.recording_superclass_counts(
        self.info, split, self._generate_examples(split, per_class))
            for split, per_class in (("train", cfg.train_per_class),
                                     ("validation", cfg.validation_per_class))}

  def _generate_examples(self, split: str, per_class: int):
    h = self.hierarchy
    cfg = self.builder_config
    for key, image, label in synthetic.generate(split, per_class, cfg.image_size, cfg.seed):
      yield key, {"image": image, "file_name": key, **features.labels(h, label)}
