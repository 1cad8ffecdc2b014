"""superclassed_fashion_mnist: real Fashion-MNIST with the `fashion_mnist` hierarchy.

Superclasses: tops (T-shirt/top, pullover, coat, shirt), footwear (sandal, sneaker,
ankle boot), trouser, dress, bag. Reads the four original IDX files from
`manual_dir` when they are there (Debian's `dataset-fashion-mnist` package installs
them in /usr/share/datasets/fashion-mnist), otherwise downloads them like TFDS's
own `fashion_mnist`.
"""

from __future__ import annotations

import gzip
import urllib.parse

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from super_sub.data import features
from super_sub import hierarchy as hierarchy_lib

_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions -> IDX magic number (uint8 data)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for superclassed_fashion_mnist."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Put the four original Fashion-MNIST files "
      f"({', '.join(sorted(_FILES.values()))}) in `manual_dir`, e.g. "
      "`--manual_dir=/usr/share/datasets/fashion-mnist` after "
      "`apt-get install dataset-fashion-mnist`. Without them the files are downloaded "
      f"from {_URL}.")

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The hierarchy that `label` and `superclass` follow."""
    return hierarchy_lib.load_hierarchy("fashion_mnist")

  def _info(self) -> tfds.core.DatasetInfo:
    # metadata: superclass_counts, recorded while preparing.
    return features.dataset_info(self, self.hierarchy, tfds.features.Image(shape=(28, 28, 1)),
                                 homepage="https://github.com/zalandoresearch/fashion-mnist")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    paths = _manual_files(dl_manager)
    if paths is None:
      paths = dl_manager.download(
          {key: urllib.parse.urljoin(_URL, name) for key, name in _FILES.items()})
    return {
        split: features.recording_superclass_counts(
            self.info, split, self._generate_examples(split, paths[f"{split}_images"],
                                                      paths[f"{split}_labels"]))
        for split in ("train", "test")
    }

  def _generate_examples(self, split: str, images_path, labels_path):
    h = self.hierarchy
    images = read_idx(images_path, ndim=3)
    source_labels = read_idx(labels_path, ndim=1)
    if len(images) != len(source_labels):
      raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                       f"{len(source_labels)} labels")
    labels = h.source_to_global[source_labels]
    for index, (image, label) in enumerate(zip(images, labels)):
      name = f"{split}/{index:05d}"
      yield name, {"image": image[..., None], "file_name": name, **features.labels(h, label)}


def _manual_files(dl_manager) -> dict[str, object] | None:
  """The four files in manual_dir, None when it holds none of them; refuses a partial set."""
  try:
    manual_dir = dl_manager.manual_dir
  except AssertionError:  # TFDS raises this when manual_dir is absent or empty.
    return None
  found = {key: manual_dir / name for key, name in _FILES.items()
           if (manual_dir / name).exists()}
  if not found:
    return None
  missing = sorted(set(_FILES.values()) - {p.name for p in found.values()})
  if missing:
    raise FileNotFoundError(f"{manual_dir} holds only part of Fashion-MNIST: missing "
                            f"{missing}. Expected all of {sorted(_FILES.values())} there, "
                            "or none of them to download instead.")
  return found


def read_idx(path, ndim: int) -> np.ndarray:
  """Reads a gzipped IDX file of uint8 data (the MNIST format) with `ndim` dimensions."""
  with epath.Path(path).open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
    data = f.read()
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{path}: too short for an IDX file with {ndim} dimensions")
  magic, *shape = np.frombuffer(data[:header], dtype=">u4").tolist()
  if magic != _IDX_MAGIC[ndim]:
    raise ValueError(f"{path}: IDX magic number {magic}, expected {_IDX_MAGIC[ndim]} "
                     f"(uint8 data with {ndim} dimensions)")
  count = int(np.prod(shape))
  if len(data) - header != count:
    raise ValueError(f"{path}: header announces shape {shape} ({count} bytes) but "
                     f"{len(data) - header} bytes follow")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
