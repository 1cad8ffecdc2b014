"""Writes dummy_data/ for the builder test: tiny IDX files in both places the builder reads.

  python datasets/superclassed_fashion_mnist/make_dummy_data.py

dummy_data/manual/ holds the four files under their official names (the manual_dir
path); dummy_data/download/ holds them under other names, as a download would return.
"""

import gzip
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent / "dummy_data"
SIZES = {"train": 20, "t10k": 10}


def _idx(array: np.ndarray) -> bytes:
  magic = {3: 2051, 1: 2049}[array.ndim]
  header = np.array([magic, *array.shape], dtype=">u4").tobytes()
  return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def main():
  rng = np.random.default_rng(0)
  for prefix, n in SIZES.items():
    labels = np.arange(n) % 10  # every class appears
    images = rng.integers(0, 256, size=(n, 28, 28))
    for folder, name in (("manual", "{p}-{k}-idx{d}-ubyte.gz"), ("download", "{p}_{k}.gz")):
      out = HERE / folder
      out.mkdir(parents=True, exist_ok=True)
      (out / name.format(p=prefix, k="images", d=3)).write_bytes(_idx(images))
      (out / name.format(p=prefix, k="labels", d=1)).write_bytes(_idx(labels))


if __name__ == "__main__":
  main()
