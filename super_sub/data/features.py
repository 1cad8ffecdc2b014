"""The features every super-sub TFDS dataset shares, so all builders label alike.

`label` is the hierarchy's global subclass index, `superclass` its superclass and
`subclass` its index within that superclass; `file_name` names the source image. Each
builder also records how many examples of each superclass a split holds, in its metadata
(`info.metadata["superclass_counts"][split]`), so a specialist's pipeline knows its size
without reading the split (super_sub.data.pipeline).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib


def features(hierarchy: hierarchy_lib.Hierarchy, image: tfds.features.Image,
             **extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
  """`image`, `label`, `superclass`, `subclass`, `file_name`, plus dataset-specific `extra`."""
  return tfds.features.FeaturesDict({
      "image": image,
      "label": tfds.features.ClassLabel(names=hierarchy.subclass_names),
      "superclass": tfds.features.ClassLabel(names=hierarchy.superclass_names),
      "subclass": tfds.features.Scalar(np.int64, doc="Index of label within its superclass."),
      "file_name": tfds.features.Text(),
      **extra,
  })


PAPER = "https://arxiv.org/abs/2201.08098"  # the homepage of super-sub's own datasets


def dataset_info(builder: tfds.core.DatasetBuilder, hierarchy: hierarchy_lib.Hierarchy,
                 image: tfds.features.Image, metadata: dict[str, Any] | None = None,
                 homepage: str = PAPER,
                 **extra: tfds.features.FeatureConnector) -> tfds.core.DatasetInfo:
  """What every super-sub builder's `_info` returns: `features(hierarchy, image, **extra)`,
  supervised as (image, label), and `metadata` saved with the prepared data (a
  `tfds.core.MetadataDict`, which `recording_superclass_counts` adds the counts to)."""
  return builder.dataset_info_from_configs(
      features=features(hierarchy, image, **extra),
      supervised_keys=("image", "label"),
      homepage=homepage,
      metadata=tfds.core.MetadataDict(metadata or {}),
  )


def image_from_metadata(metadata: dict[str, Any]) -> tfds.features.Image:
  """The image feature of a dataset whose shape and encoding are in its metadata
  (`image_shape`, `encoding`: the folder and TFDS-copy builders, whose prepared data is read
  without their source)."""
  return tfds.features.Image(shape=tuple(metadata["image_shape"]),
                             encoding_format=metadata["encoding"])


def labels(hierarchy: hierarchy_lib.Hierarchy, label: int) -> dict[str, int]:
  """The three label fields of an example whose global subclass index is `label`."""
  return {"label": int(label), "superclass": int(hierarchy.superclass_of[label]),
          "subclass": int(hierarchy.index_in_superclass[label])}


def recording_superclass_counts(info: tfds.core.DatasetInfo, split: str,
                                examples: Iterable[tuple[Any, dict[str, Any]]]
                                ) -> Iterator[tuple[Any, dict[str, Any]]]:
  """Yields a builder's (key, example) pairs unchanged and, once they are all out, records
  each superclass's count in `info.metadata["superclass_counts"][split]` (the builder's
  `_info` must give a `tfds.core.MetadataDict`; TFDS saves it with the prepared data)."""
  counts = [0] * info.features["superclass"].num_classes
  for key, example in examples:
    counts[example["superclass"]] += 1
    yield key, example
  info.metadata.setdefault("superclass_counts", {})[split] = counts
