"""Image files and folders in, one answer or one error per image out: super-sub-predict's batch.

A batch tool answers every good input and reports each bad one (`find`, `xargs`): a missing
path, an empty folder or an image that does not decode gets its own error row, and every
other image is still classified. Needs only numpy, Pillow and ai_edge_litert.

Each answer says what its probabilities mean, in both routing modes:
  superclass_prob              P(superclass): the router's probability of the top superclass
  label_prob_given_superclass  P(label | its superclass): the specialist's probability
  label_prob_joint             P(its superclass) x P(label | its superclass)
  label_prob                   kept for older readers: label_prob_given_superclass under hard
                               routing, label_prob_joint under soft routing (what each mode
                               ranks labels by)
"its superclass" is the label's own superclass: under soft routing it can be another of the
top-k superclasses than the top one.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from super_sub.data import images as images_lib
from super_sub.routing import core

# Extensions (compared in lower case) that a folder argument is searched for; a file named on
# the command line is tried whatever its name.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm")
# Which probability each mode ranks labels by, and so reports as `label_prob`.
LABEL_PROB_IS = {"hard": "label_prob_given_superclass", "soft": "label_prob_joint"}


def expand(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
  """The images that command-line arguments name, in order, each with an error or None.

  A file stands for itself; a folder for the image files under it (recursively, sorted by
  path; `IMAGE_EXTENSIONS`, any case; hidden files and folders skipped). A missing path or a
  folder without images is one error row for that argument.
  """
  out = []
  for path in map(os.fspath, paths):
    if os.path.isdir(path):
      found = sorted(_images_under(path))
      if not found:
        out.append((path, f"a folder with no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                          f"under it"))
      out += [(p, None) for p in found]
    elif os.path.exists(path):
      out.append((path, None))
    else:
      out.append((path, "no such file or folder"))
  return out


def _images_under(folder: str) -> Iterable[str]:
  for root, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in names:
      if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        yield os.path.join(root, name)


def classify(model, paths: Sequence[str | os.PathLike], mode: str = "hard", k: int = 2,
             batch_size: int = 256) -> Iterator[dict[str, Any]]:
  """Classifies the images that `paths` name (`expand`) with a `TwoStageLite`, `batch_size`
  images at a time, so that a large folder is never decoded into memory whole and answers come
  as they are ready.

  Yields:
    One row per image, in order: {"image", "superclass", "superclass_index",
    "superclass_prob", "label", "label_index", "label_prob", "label_prob_given_superclass",
    "label_prob_joint"} (see the module docstring), or {"image", "error"} for an image that
    could not be classified (the error without the path).

  Raises:
    ValueError: a bad mode, k or batch_size; BundleError where a specialist does not rebuild.
  """
  core.check_options(mode, k, batch_size)  # before any image is read
  rows: list[dict[str, Any]] = []
  pixels: list[np.ndarray] = []
  for path, error in expand(paths):
    if error is None:
      try:
        pixels.append(images_lib.load_image(path, model.input_shape, model.framing))
      except images_lib.ImageError as e:
        error = e.reason
    rows.append({"image": path} if error is None else {"image": path, "error": error})
    if len(pixels) == batch_size:
      yield from _answered(model, rows, pixels, mode, k)
      rows, pixels = [], []
  yield from _answered(model, rows, pixels, mode, k)


def _answered(model, rows: list[dict[str, Any]], pixels: list[np.ndarray], mode: str,
              k: int) -> list[dict[str, Any]]:
  """`rows` with the prediction for `pixels` filled into those without an error, in order."""
  if not pixels:
    return rows
  out = model.predict(np.stack(pixels), mode=mode, k=k, batch_size=len(pixels))
  good = [row for row in rows if "error" not in row]
  for i, row in enumerate(good):
    row.update(answer(out, i, model.hierarchy, mode))
  return rows


def answer(out: dict[str, np.ndarray], i: int, hierarchy, mode: str) -> dict[str, Any]:
  """Row i of a two-stage prediction (`TwoStageLite.predict`'s output) as named numbers."""
  sup, label = int(out["superclass"][i]), int(out["label"][i])
  own = int(hierarchy.superclass_of[label])
  p_own, p_label = float(out["superclass_probs"][i, own]), float(out["label_probs"][i, label])
  if mode == "hard":  # the specialist's probability; its superclass was routed with weight 1
    given, joint = p_label, p_own * p_label
  else:  # soft: P(superclass) x P(label | superclass)
    given, joint = (p_label / p_own if p_own > 0 else 0.0), p_label
  return {"superclass": hierarchy.superclasses[sup].name, "superclass_index": sup,
          "superclass_prob": round(float(out["superclass_probs"][i, sup]), 6),
          "label": hierarchy.subclasses[label].name, "label_index": label,
          "label_prob": round(p_label, 6),
          "label_prob_given_superclass": round(min(given, 1.0), 6),
          "label_prob_joint": round(joint, 6)}


def text_line(row: dict[str, Any]) -> str:
  """A row as one tab-separated line: `path  superclass (P)  label (P joint, P given sup)`,
  or `path  error: ...`."""
  if row.get("error") is not None:
    return f"{row['image']}\terror: {row['error']}"
  return (f"{row['image']}\t{row['superclass']} ({row['superclass_prob']:.3f})\t"
          f"{row['label']} ({row['label_prob_joint']:.3f} joint, "
          f"{row['label_prob_given_superclass']:.3f} given its superclass)")
