"""Writes dummy_data/ for the builder test: two tiny image trees, one per layout.

  python datasets/superclassed_folder/make_dummy_data.py

dummy_data/superclass/ is <split>/<superclass>/<class>/<image> (train and val, PNG and JPEG);
dummy_data/flat/ is <split>/<class>/<image> with train only (validation is held out) and
dummy_data/flat_hierarchy.json mapping its classes, one by WordNet id.
"""

import json
import pathlib

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).parent / "dummy_data"


def _image(rng, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(path)


def main():
  rng = np.random.default_rng(0)
  for split, n in (("train", 3), ("val", 1)):
    for sup, classes in (("animals", ("cat", "dog")), ("plants", ("tree",))):
      for name in classes:
        for i in range(n):
          _image(rng, HERE / "superclass" / split / sup / name / f"{i}.{'png' if i % 2 else 'jpg'}")
  for name in ("tabby", "n02124075", "oak"):
    for i in range(4):
      _image(rng, HERE / "flat" / "train" / name / f"{i}.png")
  (HERE / "flat_hierarchy.json").write_text(json.dumps({"name": "dummy", "superclasses": [
      {"name": "cats", "subclasses": [{"name": "tabby", "source_label": 0},
                                      {"name": "Egyptian cat", "wnid": "n02124075",
                                       "source_label": 1}]},
      {"name": "trees", "subclasses": [{"name": "oak", "source_label": 2}]}]}, indent=1) + "\n")


if __name__ == "__main__":
  main()
