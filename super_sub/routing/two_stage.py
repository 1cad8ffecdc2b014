"""`TwoStage`: the two-stage core (super_sub.routing.core) over Keras models."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub._internal.compat import keras
from super_sub.data import images as images_lib
from super_sub.routing import core


class TwoStage:
  """A generalist, one specialist per superclass that has one, and their hierarchy.

  `predict` and `oracle` return the arrays described in super_sub.routing.core.
  """

  def __init__(self, generalist: keras.Model, specialists: Mapping[int, keras.Model],
               hierarchy: hierarchy_lib.Hierarchy):
    """Checks that the models fit the hierarchy and each other.

    Raises:
      ValueError: the generalist's width is not the superclass count; specialists are missing
        for superclasses that have one or given for others; a specialist's width is not
        its superclass's subclass count; or the models' input shapes differ.
    """
    self.generalist = generalist
    self.hierarchy = hierarchy
    self.specialists = {int(k): m for k, m in specialists.items()}
    h = hierarchy
    _check_width(generalist, h.num_superclasses, f"generalist (hierarchy {h.name!r} has "
                 f"{h.num_superclasses} superclasses)")
    expected = set(h.specialist_superclasses())
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
      images: [N, *input_shape], uint8 or float in [0, 1] (super_sub.data.images).
      mode: "hard" sends each image to its argmax superclass's specialist only; "soft" to the
        specialists of its k most probable superclasses, scoring subclasses by
        P(superclass) * P(subclass | superclass).
      k: how many superclasses soft routing follows (values above the superclass count mean
        all of them); ignored in hard mode.
      batch_size: images per generalist call; each specialist runs at most once per batch.

    Raises:
      ValueError: on a bad mode, k, batch_size or image shape.
      TypeError: on images that are neither uint8 nor floating point.
    """
    core.check_options(mode, k, batch_size)
    images = images_lib.to_model_input(images, self.input_shape)
    return core.predict(images, self.hierarchy, self._run_generalist, self._run_specialist,
                        mode=mode, k=k, batch_size=batch_size)

  def oracle(self, images: np.ndarray, superclasses: np.ndarray,
             batch_size: int = 256) -> dict[str, np.ndarray]:
    """Routes each image to the specialist of its given (e.g. true) superclass; no generalist.

    Raises:
      ValueError: on bad images or superclasses (shape, range), or batch_size.
      TypeError: on images that are neither uint8 nor floating point.
    """
    core.check_options("hard", 1, batch_size)
    images = images_lib.to_model_input(images, self.input_shape)
    return core.oracle(images, superclasses, self.hierarchy, self._run_specialist,
                       batch_size=batch_size)

  def _run_generalist(self, x: np.ndarray) -> np.ndarray:
    return self.generalist(x, training=False).numpy()

  def _run_specialist(self, k: int, x: np.ndarray) -> np.ndarray:
    return self.specialists[k](x, training=False).numpy()


def _check_width(model: keras.Model, width: int, where: str) -> None:
  got = model.output_shape[-1]
  if got != width:
    raise ValueError(f"{where}: model {model.name!r} outputs {got} logits; expected {width}")


def _describe(h: hierarchy_lib.Hierarchy, supers: list[int]) -> str:
  if not supers:
    return "none"
  return ", ".join(f"{k} ({h.superclasses[k].name!r})" if 0 <= k < h.num_superclasses
                   else f"{k} (no such superclass)" for k in supers)
