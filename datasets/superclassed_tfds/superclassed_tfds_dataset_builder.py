"""superclassed_tfds: any TFDS image-classification dataset, its `label` grouped by a hierarchy.

The source (a TFDS name[/config] with an `image` and a `label` ClassLabel) is prepared in the
same data_dir, then copied with super-sub's features: a hierarchy JSON or shipped name maps
its labels (a subclass names a source class by name, else by `source_label` index), or
`from_feature:<feature>` groups them by a coarser ClassLabel of the source (CIFAR-100's
`coarse_label`). Images are re-encoded as the other builders store them
(super_sub.data.encoding); no super-sub code is needed to read the result.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub.data import encoding
from super_sub.data import features
from super_sub.data import folders
from super_sub.data import images
from super_sub.data import sources

_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class TfdsConfig(tfds.core.BuilderConfig):
  """The source dataset and how its labels map to a hierarchy.

  Attributes:
    source: the TFDS name[/config] of the source dataset.
    hierarchy: a hierarchy JSON path or shipped name, or from_feature:<feature>.
    unmapped_labels: "error" or "skip" source labels outside the hierarchy.
    validation_share: with no validation or test split, the share of train held out.
    seed: the seed of that draw.
  """
  source: str = ""
  hierarchy: str | None = None
  unmapped_labels: str = "error"
  validation_share: float = 0.1
  seed: int = 0


def tfds_config(source: str, hierarchy: str | None, unmapped_labels: str = "error",
                validation_share: float = 0.1, seed: int = 0) -> TfdsConfig:
  """The config of a source dataset, named by it and a digest of every field."""
  if hierarchy is None:
    raise sources.DatasetError(
        f"--dataset=tfds:{source} needs --hierarchy: a hierarchy JSON or shipped name whose "
        "subclasses name its classes, or from_feature:<feature> for a coarse label feature")
  fields = {"source": source, "hierarchy": sources.canonical_hierarchy(hierarchy),
            "unmapped_labels": unmapped_labels, "validation_share": validation_share,
            "seed": seed}
  return TfdsConfig(name=sources.config_name(source, fields),
                    description=f"TFDS {source}, superclassed.",
                    **fields)


class Builder(sources.ConfiguredBuilder, tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for superclassed_tfds (needs a `tfds_config`)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "The held-out validation split depends on the seed and each image's key "
               "alone, no longer on the label numbers: the same images whatever the hierarchy.",
  }
  CONFIG_TYPE = TfdsConfig
  NEEDS_CONFIG = ("superclassed_tfds copies the dataset its config names: pass "
                  "config=tfds_config(name, hierarchy) (super-sub-build --dataset=tfds:<name>), "
                  "or read prepared data with tfds.builder_from_directory")

  @property
  def source(self) -> tfds.core.DatasetBuilder:
    """The source dataset's builder, in this builder's data_dir."""
    if not hasattr(self, "_source"):
      name = self.builder_config.source
      try:
        self._source = tfds.builder(name, data_dir=self._data_dir_root)
      except Exception as e:  # pylint: disable=broad-except  # TFDS raises several types
        raise sources.DatasetError(f"--dataset=tfds:{name}: no such TFDS dataset ({e})") from None
      feats = self._source.info.features
      if not (isinstance(feats, tfds.features.FeaturesDict) and "image" in feats
              and "label" in feats and isinstance(feats["label"], tfds.features.ClassLabel)):
        raise sources.DatasetError(f"--dataset=tfds:{name} is not an image classification "
                                   "dataset: it needs an `image` and a ClassLabel `label`")
    return self._source

  def _source_hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The config's hierarchy mapped onto the source's labels."""
    return self._mapped[0]

  @functools.cached_property
  def _mapped(self) -> tuple[hierarchy_lib.Hierarchy, np.ndarray]:
    """(hierarchy, source label -> global subclass index or -1), worked out once: a coarse
    label feature is read off the whole train split."""
    c, names = self.builder_config, self.source.info.features["label"].names
    if c.hierarchy.startswith(sources.FROM_FEATURE):
      h = self._from_feature(c.hierarchy[len(sources.FROM_FEATURE):])
      return h, h.source_to_global
    h = hierarchy_lib.load_hierarchy(c.hierarchy)
    index = {n: i for i, n in enumerate(names)}
    to_global = np.full(len(names), -1, np.int64)
    for g, sub in enumerate(h.subclasses):
      by_name = index.get(sub.name)
      if by_name is not None and sub.source_label != by_name:
        raise sources.DatasetError(
            f"hierarchy {h.name!r}: subclass {sub.name!r} has source_label {sub.source_label}, "
            f"but {c.source}'s label {sub.source_label} is "
            f"{names[sub.source_label] if sub.source_label < len(names) else 'out of range'}"
            f" and {sub.name!r} is its label {by_name}; fix the source_label")
      source = by_name if by_name is not None else sub.source_label
      if not 0 <= source < len(names):
        raise sources.DatasetError(
            f"hierarchy {h.name!r}: subclass {sub.name!r} is neither a class name of "
            f"{c.source} nor a label index below {len(names)} (source_label {source})")
      to_global[source] = g
    outside = [names[i] for i in np.nonzero(to_global < 0)[0]]
    if outside and c.unmapped_labels == "error":
      raise sources.DatasetError(
          f"{len(outside)} labels of {c.source} are not in hierarchy {h.name!r}: "
          f"{', '.join(outside[:10])}{', ...' if len(outside) > 10 else ''}; add them to the "
          "hierarchy or pass --unmapped_labels=skip")
    return h, to_global

  def _from_feature(self, feature: str) -> hierarchy_lib.Hierarchy:
    """Superclasses from the source's ClassLabel `feature`, read off the train split."""
    feats, name = self.source.info.features, self.builder_config.source
    if feature not in feats or not isinstance(feats[feature], tfds.features.ClassLabel):
      raise sources.DatasetError(f"--hierarchy=from_feature:{feature}: {name} has no ClassLabel "
                                 f"feature {feature!r}")
    self.source.download_and_prepare()
    pairs = set()
    ds = self.source.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    for batch in ds.map(lambda ex: (ex["label"], ex[feature])).batch(8192).as_numpy_iterator():
      pairs.update(zip(batch[0].tolist(), batch[1].tolist()))
    fine, coarse = feats["label"].names, feats[feature].names
    owners = collections.defaultdict(set)
    for label, sup in pairs:
      owners[label].add(sup)
    if twice := sorted(l for l, s in owners.items() if len(s) > 1):
      raise sources.DatasetError(
          f"{name}: label {fine[twice[0]]!r} comes with {feature} "
          + " and ".join(repr(coarse[s]) for s in sorted(owners[twice[0]]))
          + f" (a class under two superclasses); {feature} cannot be its hierarchy")
    groups = [(coarse[k], [(fine[l], l) for l in sorted(owners) if k in owners[l]])
              for k in range(len(coarse))]
    try:
      return hierarchy_lib.from_groups(f"{name.replace('/', '_')}_{feature}",
                                       [g for g in groups if g[1]], num_source_labels=len(fine))
    except hierarchy_lib.HierarchyError as e:
      raise sources.DatasetError(f"{name}: {feature} does not make a hierarchy ({e})") from None

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = self.prepared_metadata
    if not metadata:
      shape = tuple(self.source.info.features["image"].shape)
      metadata = {"hierarchy": self.hierarchy.to_dict(), "image_shape": list(shape),
                  "encoding": "jpeg" if images.is_large(*shape[:2]) else "png",
                  "source": self.builder_config.source, "notes": []}
    return features.dataset_info(self, self.hierarchy, features.image_from_metadata(metadata),
                                 metadata)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    c, (_, to_global) = self.builder_config, self._mapped  # maps the labels: fails early
    self.source.download_and_prepare()
    have = [s for s in _SPLITS if s in self.source.info.splits]
    if "train" not in have:
      raise sources.DatasetError(f"{c.source} has no train split; it has "
                                 f"{sorted(self.source.info.splits)}")
    plans = {s: self._items(s, to_global) for s in have}
    notes = self.info.metadata.setdefault("notes", [])
    if "validation" not in plans and "test" not in plans:
      plans["train"], plans["validation"] = folders.hold_out(plans["train"],
                                                             c.validation_share, c.seed)
      notes.append(f"no validation or test split: {len(plans['validation'])} of the train "
                   f"images ({c.validation_share:.0%} of each class, seed {c.seed}) are the "
                   "validation split")
    skipped = sum(self._skipped.values())
    if skipped:
      notes.append(f"skipped {skipped} examples of labels outside the hierarchy "
                   "(--unmapped_labels=skip)")
    return {s: features.recording_superclass_counts(self.info, s, self._generate_examples(s, items))
            for s, items in plans.items()}

  def _items(self, split, to_global):
    """[(source index, global label)] of a split's examples inside the hierarchy."""
    ds = self.source.as_dataset(split=split, shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
    labels = np.concatenate([b for b in ds.map(lambda ex: ex["label"]).batch(8192)
                             .as_numpy_iterator()] or [np.zeros(0, np.int64)])
    mapped = to_global[labels]
    self._skipped = getattr(self, "_skipped", {})
    self._skipped[split] = int(np.sum(mapped < 0))
    return [(i, int(g)) for i, g in enumerate(mapped) if g >= 0]

  def _generate_examples(self, split, items):
    """Yields the split's kept examples, re-encoded; keys are <source split>/<index>."""
    source_split = "train" if split == "validation" and "validation" not in \
        self.source.info.splits else split
    shape, h = self.info.features["image"].shape, self.hierarchy
    image_encoding = self.info.metadata["encoding"]
    wanted = dict(items)
    ds = self.source.as_dataset(split=source_split, shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
    has_name = "file_name" in self.source.info.features
    for i, ex in enumerate(tfds.as_numpy(ds)):
      if i not in wanted:
        continue
      name = ex["file_name"].decode() if has_name else f"{source_split}/{i}"
      image, _ = encoding.reencode(ex["image"], f"{self.builder_config.source} {name}",
                                   image_encoding, channels=shape[-1])
      yield f"{source_split}/{i}", {"image": image, "file_name": name,
                                    **features.labels(h, wanted[i])}
    logging.info("superclassed_tfds: %d examples of %s %s.", len(items),
                 self.builder_config.source, source_split)
