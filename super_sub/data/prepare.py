"""Prepares super-sub's TFDS datasets and summarises them level by level.

The summary counts examples per superclass and subclass from the `label` and
`superclass` features only (images are not decoded), and checks on the way that
every example's superclass is the hierarchy's superclass of its label.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub.data import pipeline
from super_sub.data import sources
import super_sub.datasets  # pylint: disable=unused-import  (registers the builders)
from super_sub.datasets.superclassed_folder import superclassed_folder_dataset_builder as folder_builder
from super_sub.datasets.superclassed_tfds import superclassed_tfds_dataset_builder as tfds_builder


@dataclasses.dataclass(frozen=True)
class SplitSummary:
  """Counts of one split: per global subclass label and per superclass."""
  name: str
  num_examples: int
  label_counts: np.ndarray
  superclass_counts: np.ndarray


def open_builder(name: str, data_dir: str | None = None, hierarchy: str | None = None,
                 unmapped_labels: str = "error") -> tfds.core.DatasetBuilder:
  """The builder of a dataset name (super_sub.data.sources), prepared or not.

  Args:
    name: a registered TFDS name[/config], folder:<PATH> or tfds:<name>[/<config>].
    data_dir: where TFDS keeps prepared data (default: TFDS's).
    hierarchy: folder: and tfds: only: a hierarchy JSON path or shipped name (tfds: also
      from_feature:<feature>).
    unmapped_labels: folder: and tfds: only: "error" or "skip" classes outside `hierarchy`.

  Raises:
    sources.DatasetError: a hierarchy for a dataset that carries its own, or a bad folder.
  """
  name = sources.canonical(name)
  if sources.kind(name) == "folder":
    config = folder_builder.folder_config(name[len(sources.FOLDER):], hierarchy,
                                          unmapped_labels)
    return folder_builder.Builder(config=config, data_dir=data_dir)
  if sources.kind(name) == "tfds":
    config = tfds_builder.tfds_config(name[len(sources.TFDS):], hierarchy, unmapped_labels)
    return tfds_builder.Builder(config=config, data_dir=data_dir)
  if hierarchy is not None:
    raise sources.DatasetError(
        f"--hierarchy={hierarchy}: {name} carries its own hierarchy; --hierarchy applies to "
        "--dataset=folder:<PATH> and --dataset=tfds:<name>")
  return tfds.builder(name, data_dir=data_dir)


def prepare_dataset(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                    hierarchy: str | None = None, unmapped_labels: str = "error"
                    ) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` (e.g. "superclassed_synthetic/32px", "folder:/data/pets") if needed
  and returns its builder (`open_builder` says what the arguments are).

  Raises:
    tfds.core.registered.DatasetNotFoundError: no dataset of that name.
    FileNotFoundError: the dataset needs files downloaded by hand and manual_dir lacks them.
    sources.DatasetError, hierarchy.HierarchyError: a folder: or tfds: dataset that cannot be
      read as asked (see open_builder).
  """
  builder = open_builder(name, data_dir, hierarchy, unmapped_labels)
  if sources.kind(sources.canonical(name)) == "folder":
    builder.check_unchanged()
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except AssertionError as e:
    # TFDS 4.9 raises AssertionError for a manual download that is not there
    # (DownloadManager.manual_dir): the user's missing folder, told as one.
    if not str(e).startswith("Manual directory"):
      raise
    where = ("no manual_dir was given" if manual_dir is None
             else f"manual_dir {manual_dir} does not exist or is empty")
    how = " ".join((builder.MANUAL_DOWNLOAD_INSTRUCTIONS or "").split())
    raise FileNotFoundError(f"{name} is built from files you download yourself, and {where} "
                            f"(--manual_dir=DIR). {how}") from None
  return builder


def summarize_dataset(builder: tfds.core.DatasetBuilder) -> list[SplitSummary]:
  """Counts every split by label and superclass.

  Raises:
    ValueError: if an example's `superclass` is not the hierarchy's superclass of its `label`.
  """
  h = builder.hierarchy
  summaries = []
  for split in sorted(builder.info.splits):
    ds = pipeline.read_split(builder, split)
    ds = ds.map(lambda ex: (ex["label"], ex["superclass"]), num_parallel_calls=tf.data.AUTOTUNE)
    labels = np.zeros(0, np.int64)
    supers = np.zeros(0, np.int64)
    for label, sup in ds.batch(4096).as_numpy_iterator():
      labels = np.concatenate([labels, label])
      supers = np.concatenate([supers, sup])
    wrong = np.nonzero(supers != h.superclass_of[labels])[0]
    if wrong.size:
      i = wrong[0]
      raise ValueError(f"{builder.name} split {split!r}: {wrong.size} examples carry a superclass "
                       f"other than their label's, e.g. label {h.subclass_names[labels[i]]!r} "
                       f"with superclass {h.superclass_names[supers[i]]!r}")
    summaries.append(SplitSummary(
        split, len(labels), np.bincount(labels, minlength=h.num_subclasses),
        np.bincount(supers, minlength=h.num_superclasses)))
  return summaries


def format_summary(builder: tfds.core.DatasetBuilder, summaries: list[SplitSummary]) -> str:
  """A plain-text table: one row per superclass with its subclasses and split counts."""
  h = builder.hierarchy
  shape = builder.info.features["image"].shape
  lines = [f"{builder.info.full_name}  ({builder.data_dir})",
           f"image {shape}, {h.num_superclasses} superclasses, {h.num_subclasses} subclasses "
           f"(hierarchy {h.name!r})",
           "splits: " + ", ".join(f"{s.name}={s.num_examples}" for s in summaries)]
  # What a builder decided for the user (a held-out validation split, skipped folders).
  lines += [f"note: {note}" for note in (builder.info.metadata or {}).get("notes", [])] + [""]
  header = f"{'superclass':<16}{'#sub':>5}" + "".join(f"{s.name:>12}" for s in summaries)
  lines += [header + "  subclasses", "-" * (len(header) + 12)]
  for k, sup in enumerate(h.superclasses):
    names = [s.name for s in sup.subclasses]
    shown = ", ".join(names[:5]) + (f", ... (+{len(names) - 5})" if len(names) > 5 else "")
    counts = "".join(f"{int(s.superclass_counts[k]):>12}" for s in summaries)
    lines.append(f"{sup.name:<16}{len(names):>5}{counts}  {shown}")
  return "\n".join(lines)
