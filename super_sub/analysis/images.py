"""Where the report finds the images of its mistake grids: a folder, or a TFDS dataset split.

A source is a callable `load({file_name: where}) -> {file_name: uint8 array}`; `where`
names the example in the predictions file, for the error when an image is missing.
Only the few images the grids show are read; TensorFlow is imported only for TFDS.
"""

from __future__ import annotations

import io
import os
from typing import Callable, Mapping

import numpy as np
from PIL import Image

from super_sub.analysis import predictions as predictions_lib

ImageSource = Callable[[Mapping[str, str]], dict[str, np.ndarray]]
THUMBNAIL = 160  # longest side, in pixels, of the images kept for the grids


def _decode(data: bytes | str, what: str) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
      image = image.convert("L" if image.mode in ("1", "L", "I;16", "I") else "RGB")
      image.thumbnail((THUMBNAIL, THUMBNAIL))
      return np.asarray(image)
  except (OSError, ValueError) as e:
    raise predictions_lib.AnalysisError(f"{what}: not a readable image ({e})") from None


def images_from_folder(folder: str | os.PathLike) -> ImageSource:
  """File names resolved against `folder` (absolute file names are taken as they are)."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise predictions_lib.AnalysisError(f"image folder {folder!r} does not exist")

  def load(wanted: Mapping[str, str]) -> dict[str, np.ndarray]:
    out = {}
    for name, where in wanted.items():
      path = os.path.join(folder, name)
      if not os.path.isfile(path):
        raise predictions_lib.AnalysisError(
            f"{where}: image {name!r} not found (looked for {path})")
      out[name] = _decode(path, path)
    return out
  return load


def images_from_tfds(name: str, split: str, data_dir: str | None = None,
                     hierarchy: str | None = None) -> ImageSource:
  """Images of a prepared dataset split, matched by its `file_name` feature.

  `name` is any dataset name a run takes (super_sub.data.sources): a registered TFDS name,
  `tfds:<name>` (opened with `hierarchy`, the one the run was trained with), or
  `folder:<PATH>`, whose file names are paths relative to PATH, so its images are read from
  the folder itself (`images_from_folder`). super-sub's own datasets are registered by importing
  `super_sub.datasets`. Images are read undecoded and only the wanted ones are decoded.
  """
  from super_sub.data import sources  # pylint: disable=import-outside-toplevel
  if sources.kind(name) == "folder":
    return images_from_folder(sources.canonical(name)[len(sources.FOLDER):])

  def load(wanted: Mapping[str, str]) -> dict[str, np.ndarray]:
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from super_sub.data import pipeline
    from super_sub.data import prepare
    try:
      builder = prepare.open_builder(name, data_dir, hierarchy)
      features = builder.info.features
      if "file_name" not in features or "image" not in features:
        raise predictions_lib.AnalysisError(
            f"TFDS dataset {name!r} has no 'file_name' and 'image' features to match "
            f"predictions by; give the image folder instead (--images_dir)")
      ds = pipeline.read_split(builder, split, shuffle_files=False)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
      if isinstance(e, predictions_lib.AnalysisError):
        raise
      raise predictions_lib.AnalysisError(
          f"TFDS dataset {name!r} split {split!r} (data_dir {data_dir!r}) cannot be "
          f"read: {e}") from None
    names = tf.constant(sorted(wanted))
    ds = ds.map(lambda ex: {"file_name": ex["file_name"], "image": ex["image"]})
    ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex["file_name"], names)))
    out = {}
    for ex in ds.as_numpy_iterator():
      file_name = ex["file_name"].decode("utf-8")
      out[file_name] = _decode(ex["image"], f"{name}/{split} {file_name}")
    missing = [n for n in wanted if n not in out]
    if missing:
      raise predictions_lib.AnalysisError(
          f"{wanted[missing[0]]}: image {missing[0]!r} not found in TFDS dataset "
          f"{name!r} split {split!r} ({len(missing)} of the {len(wanted)} images the "
          f"report shows are missing)")
    return out
  return load
