"""Dataset names: what `--dataset` may say, parsed in one place (no TensorFlow needed).

  superclassed_synthetic[/32px]   a registered TFDS name[/config], which carries its hierarchy
  folder:<PATH>                   your own image folders (datasets/superclassed_folder)
  tfds:<name>[/<config>]          any TFDS image-classification dataset, its `label` mapped by a
                                  hierarchy (datasets/superclassed_tfds)

Only the last two take a `--hierarchy` (and `--unmapped_labels`); `prepare.open_builder`
turns a name and those options into a TFDS builder. Their two builders name their configs
with `config_name` and share `ConfiguredBuilder`.
"""

from __future__ import annotations

import hashlib
import json
import os

from super_sub import hierarchy as hierarchy_lib
from super_sub.errors import SuperSubError

FOLDER = "folder:"
TFDS = "tfds:"
FROM_FEATURE = "from_feature:"


class DatasetError(SuperSubError, ValueError):
  """A dataset that cannot be read as asked; the message names the problem and the fix."""


def kind(dataset: str) -> str:
  """"folder", "tfds" or "builder" (a registered TFDS name)."""
  if dataset.startswith(FOLDER):
    return "folder"
  if dataset.startswith(TFDS):
    return "tfds"
  return "builder"


def takes_hierarchy(dataset: str) -> bool:
  """Whether the dataset's hierarchy is an option (folder: and tfds:) rather than its own."""
  return kind(dataset) != "builder"


def canonical(dataset: str) -> str:
  """The dataset name with a folder's path made absolute (what a run saves and compares)."""
  if kind(dataset) == "folder":
    path = dataset[len(FOLDER):]
    if not path:
      raise DatasetError("--dataset=folder: needs a path: --dataset=folder:<PATH>")
    return FOLDER + os.path.abspath(os.path.expanduser(path))
  if kind(dataset) == "tfds" and not dataset[len(TFDS):]:
    raise DatasetError("--dataset=tfds: needs a name: --dataset=tfds:<name>[/<config>]")
  return dataset


def canonical_hierarchy(hierarchy: str | None) -> str | None:
  """A hierarchy option with a JSON path made absolute; shipped names and from_feature:
  stay as they are."""
  if hierarchy is None or hierarchy.startswith(FROM_FEATURE):
    return hierarchy
  if hierarchy.endswith(".json") or os.sep in hierarchy:
    return os.path.abspath(os.path.expanduser(hierarchy))
  return hierarchy


def config_name(label: str, fields: dict) -> str:
  """A builder config's name for a folder: or tfds: dataset: `label` made file-safe and a
  digest of every field, so two sources (or one under two hierarchies) never share prepared
  data."""
  digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
  base = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
  return f"{base or 'dataset'}_{digest}"


class ConfiguredBuilder:
  """What the folder: and tfds: builders share, mixed in before tfds's GeneratorBasedBuilder.

  Their config names their source, so they refuse to be made without one (NEEDS_CONFIG says
  how to make one, or to read prepared data with `tfds.builder_from_directory`). Once
  prepared, they take their hierarchy and image metadata from their own metadata.json, never
  from the source, which may since have moved or gone.

  A builder sets CONFIG_TYPE and NEEDS_CONFIG and defines `_source_hierarchy()`.
  """

  CONFIG_TYPE: type = type(None)
  NEEDS_CONFIG = ""

  def __init__(self, *, config=None, **kwargs):
    if not isinstance(config, self.CONFIG_TYPE):
      raise ValueError(self.NEEDS_CONFIG)
    super().__init__(config=config, **kwargs)

  @property
  def prepared_metadata(self) -> dict | None:
    """The metadata.json of data already prepared under this config, else None."""
    stored = self.data_path / "metadata.json"
    return json.loads(stored.read_text()) if stored.exists() else None

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The prepared data's hierarchy, else the one `_source_hierarchy` reads from the source."""
    if not hasattr(self, "_hierarchy"):
      prepared = self.prepared_metadata
      self._hierarchy = (hierarchy_lib.Hierarchy.from_dict(prepared["hierarchy"]) if prepared
                         else self._source_hierarchy())
    return self._hierarchy

  def _source_hierarchy(self) -> hierarchy_lib.Hierarchy:
    raise NotImplementedError
