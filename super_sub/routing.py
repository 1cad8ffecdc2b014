"""Two-stage inference: the generalist picks superclasses, their specialists pick subclasses.

Within a batch the rows are grouped by routed superclass, so each specialist runs once per batch
on just its rows (gather, run, scatter back), and never on an empty group: oneDNN's Conv2D fails
on zero rows (QAT notes, trap 6). Models output logits; probabilities are softmaxes taken here.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub import models
from super_sub.compat import keras
from super_sub.runtime import outputs
from super_sub.runtime.outputs import softmax  # also public here

MODES = ("hard", "soft")


class TwoStage:
  """A generalist, one specialist per superclass with >= 2 subclasses, and their hierarchy.

  Output of `predict` and `oracle`: a dict of numpy arrays over the N images,
    superclass [N] int64: the generalist's argmax (for `oracle`, the given superclasses);
    superclass_probs [N, S] float32: the generalist's softmax (for `oracle`, one-hot);
    label [N] int64: the predicted global subclass index, argmax of label_probs;
    label_probs [N, num_subclasses] float32, which depends on the routing:
      hard / oracle: P(subclass | routed superclass) in the routed superclass's columns and 0
        elsewhere (each row sums to 1; a one-subclass superclass gives its subclass 1);
      soft: P(superclass) * P(subclass | superclass) for each of the top-k superclasses, 0 for
        the others. Not renormalised, so a row sums to the top-k superclasses' total probability
        (<= 1): the product is the model's joint estimate and the lost mass says how much the
        truncation left out. The argmax is the same either way.
  """

  def __init__(self, generalist: keras.Model, specialists: Mapping[int, keras.Model],
               hierarchy: hierarchy_lib.Hierarchy):
    """Checks that the models fit the hierarchy and each other.

    Raises:
      ValueError: the generalist's width is not the superclass count; specialists are missing
        for superclasses with >= 2 subclasses or given for others; a specialist's width is not
        its superclass's subclass count; or the models' input shapes differ.
    """
    self.generalist = generalist
    self.hierarchy = hierarchy
    self.specialists = {int(k): m for k, m in specialists.items()}
    h = hierarchy
    _check_width(generalist, h.num_superclasses, f"generalist (hierarchy {h.name!r} has "
                 f"{h.num_superclasses} superclasses)")
    expected = set(models.specialist_superclasses(h))
    missing = sorted(expected - set(self.specialists))
    extra = sorted(set(self.specialists) - expected)
    if missing or extra:
      raise ValueError(
          "specialists must be given for exactly the superclasses with >= 2 subclasses "
          f"({_describe(h, sorted(expected))}); missing: {_describe(h, missing)}; "
          f"extra: {_describe(h, extra)}")
    self.input_shape = tuple(generalist.input_shape[1:])
    for k, model in sorted(self.specialists.items()):
      where = f"specialist for superclass {k} ({h.superclasses[k].name!r})"
      _check_width(model, len(h.subclass_range(k)), where)
      if tuple(model.input_shape[1:]) != self.input_shape:
        raise ValueError(f"{where} takes inputs of shape {tuple(model.input_shape[1:])}, the "
                         f"generalist {self.input_shape}")

  def predict(self, images: np.ndarray, mode: str = "hard", k: int = 2,
              batch_size: int = 256) -> dict[str, np.ndarray]:
    """Classifies images through the generalist and the specialists.

    Args:
      images: float array [N, *input_shape] with values in [0, 1].
      mode: "hard" sends each image to its argmax superclass's specialist only; "soft" to the
        specialists of its k most probable superclasses, scoring subclasses by
        P(superclass) * P(subclass | superclass).
      k: how many superclasses soft routing follows (values above the superclass count mean
        all of them); ignored in hard mode.
      batch_size: images per generalist call; each specialist runs at most once per batch.

    Returns:
      The dict described in the class docstring.

    Raises:
      ValueError: on a bad mode, k, batch_size or image shape.
      TypeError: on images that are not floating point.
    """
    if mode not in MODES:
      raise ValueError(f"unknown routing mode {mode!r}; choose one of {', '.join(MODES)}")
    if not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"k must be a positive integer; got {k!r}")
    images = self._check_images(images)
    _check_batch_size(batch_size)
    k = 1 if mode == "hard" else min(int(k), self.hierarchy.num_superclasses)
    parts = []
    for start in range(0, len(images), batch_size):
      x = images[start:start + batch_size]
      super_probs = softmax(self._run(self.generalist, x))
      order = np.argsort(-super_probs, axis=1, kind="stable")[:, :k]
      weights = (np.ones(order.shape, np.float32) if mode == "hard"
                 else np.take_along_axis(super_probs, order, axis=1))
      parts.append((order[:, 0], super_probs, self._route(x, order, weights)))
    return outputs.assemble(parts, self.hierarchy)

  def oracle(self, images: np.ndarray, superclasses: np.ndarray,
             batch_size: int = 256) -> dict[str, np.ndarray]:
    """Routes each image to the specialist of its given (e.g. true) superclass; no generalist.

    Measures the specialists alone: label accuracy here bounds hard routing's from above.

    Args:
      images: float array [N, *input_shape] with values in [0, 1].
      superclasses: int array [N] of superclass indices.
      batch_size: images per batch; each specialist runs at most once per batch.

    Returns:
      The dict described in the class docstring (superclass_probs one-hot).

    Raises:
      ValueError: on bad images or superclasses (shape, range), or batch_size.
      TypeError: on images that are not floating point.
    """
    images = self._check_images(images)
    _check_batch_size(batch_size)
    supers = np.asarray(superclasses)
    num = self.hierarchy.num_superclasses
    if supers.shape != (len(images),) or not np.issubdtype(supers.dtype, np.integer):
      raise ValueError(f"superclasses must be an integer array of shape ({len(images)},); got "
                       f"{supers.dtype} {supers.shape}")
    if supers.size and (supers.min() < 0 or supers.max() >= num):
      raise ValueError(f"superclasses must lie in [0, {num}); got values in "
                       f"[{supers.min()}, {supers.max()}]")
    parts = []
    for start in range(0, len(images), batch_size):
      x, s = images[start:start + batch_size], supers[start:start + batch_size].astype(np.int64)
      one_hot = np.eye(num, dtype=np.float32)[s]
      parts.append((s, one_hot, self._route(x, s[:, None], np.ones((len(s), 1), np.float32))))
    return outputs.assemble(parts, self.hierarchy)

  # --- internals -------------------------------------------------------------------------------
  def _route(self, x: np.ndarray, order: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """label_probs [n, num_subclasses]: sum over j of weights[:, j] * P(sub | order[:, j])."""
    h = self.hierarchy
    label_probs = np.zeros((len(x), h.num_subclasses), np.float32)
    for sup in np.unique(order):
      rows, slot = np.nonzero(order == sup)  # each superclass appears at most once per row
      lo, hi = h.superclass_offsets[sup], h.superclass_offsets[sup + 1]
      if sup in self.specialists:
        conditional = softmax(self._run(self.specialists[sup], x[rows]))
      else:
        conditional = np.ones((len(rows), 1), np.float32)
      label_probs[rows, lo:hi] = weights[rows, slot][:, None] * conditional
    return label_probs

  @staticmethod
  def _run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """One eager call on a non-empty batch (`_route` only visits superclasses with rows)."""
    return model(x, training=False).numpy()

  def _check_images(self, images) -> np.ndarray:
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
      raise TypeError(f"images must be floating point with values in [0, 1]; got {images.dtype} "
                      f"(divide uint8 images by 255)")
    if images.ndim != len(self.input_shape) + 1 or any(
        want is not None and got != want for got, want in zip(images.shape[1:], self.input_shape)):
      raise ValueError(f"images must have shape (N, {', '.join(map(str, self.input_shape))}) to "
                       f"fit the models; got {images.shape}")
    return images.astype(np.float32, copy=False)


def _check_width(model: keras.Model, width: int, where: str) -> None:
  got = model.output_shape[-1]
  if got != width:
    raise ValueError(f"{where}: model {model.name!r} outputs {got} logits; expected {width}")


def _check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


def _describe(h: hierarchy_lib.Hierarchy, supers: list[int]) -> str:
  if not supers:
    return "none"
  return ", ".join(f"{k} ({h.superclasses[k].name!r})" if 0 <= k < h.num_superclasses
                   else f"{k} (no such superclass)" for k in supers)
