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
               hierarchy: hierarchy_lib.Hierarchy, flat: keras.Model | None = None,
               head: keras.Model | None = None):
    """Checks that the models fit the hierarchy and each other.

    Args:
      generalist, specialists, hierarchy: the two-stage system.
      flat: optional flat network (all subclasses), for the "flat" and "product" routers
        (super_sub.routing.core.router_logits).
      head: optional router head (images -> superclass logits, super_sub.models.router_head),
        for the "head" router.

    Raises:
      ValueError: the generalist's width is not the superclass count; specialists are missing
        for superclasses that have one or given for others; a specialist's width is not
        its superclass's subclass count; the flat network's width is not the subclass count
        or the router head's the superclass count; or the models' input shapes differ.
    """
    self.generalist = generalist
    self.flat = flat
    self.head = head
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
      _check_width(model, len(h.subclass_range(k)), where, dustbin_allowed=True)
      if tuple(model.input_shape[1:]) != self.input_shape:
        raise ValueError(f"{where} takes inputs of shape {tuple(model.input_shape[1:])}, the "
                         f"generalist {self.input_shape}")
    for model, what, width in ((flat, "flat network", h.num_subclasses),
                               (head, "router head", h.num_superclasses)):
      if model is None:
        continue
      _check_width(model, width, f"{what} (hierarchy {h.name!r} has {width} "
                   f"{'subclasses' if model is flat else 'superclasses'})")
      if tuple(model.input_shape[1:]) != self.input_shape:
        raise ValueError(f"the {what} takes inputs of shape "
                         f"{tuple(model.input_shape[1:])}, the generalist {self.input_shape}")

  def predict(self, images: np.ndarray, mode: str = "hard", k: int = 2,
              batch_size: int = 256, router: str = "generalist") -> dict[str, np.ndarray]:
    """Classifies images through the generalist and the specialists.

    Args:
      images: [N, *input_shape], uint8 or float in [0, 1] (super_sub.data.images).
      mode: "hard" sends each image to its argmax superclass's specialist only; "soft" to the
        specialists of its k most probable superclasses, scoring subclasses by
        P(superclass) * P(subclass | superclass).
      k: how many superclasses soft routing follows (values above the superclass count mean
        all of them); ignored in hard mode.
      batch_size: images per generalist call; each specialist runs at most once per batch.
      router: what picks the superclasses (core.ROUTERS): "generalist"; with a flat network
        given, "flat" or "product"; with a router head given, "head". `superclass_probs` in
        the output is the router's.

    Raises:
      ValueError: on a bad mode, k, batch_size, router or image shape, or a router that
        needs a network that was not given.
      TypeError: on images that are neither uint8 nor floating point.
    """
    core.check_options(mode, k, batch_size)
    # before any image is read
    core.check_router(router, has_flat=self.flat is not None, has_head=self.head is not None)
    images = images_lib.to_model_input(images, self.input_shape)

    def route(x):
      if router == "head":
        return core.router_logits(router, None, None, self.hierarchy,
                                  head_logits=self.head(x, training=False).numpy())
      return core.router_logits(
          router, self._run_generalist(x) if router != "flat" else None,
          self.flat(x, training=False).numpy() if router != "generalist" else None,
          self.hierarchy)
    return core.predict(images, self.hierarchy, route, self._run_specialist,
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


def _check_width(model: keras.Model, width: int, where: str,
                 dustbin_allowed: bool = False) -> None:
  """`dustbin_allowed`: a specialist may have one more output, its "not mine" class."""
  got = model.output_shape[-1]
  if got != width and not (dustbin_allowed and got == width + 1):
    raise ValueError(f"{where}: model {model.name!r} outputs {got} logits; expected {width}"
                     + (f" (or {width + 1} with a dustbin)" if dustbin_allowed else ""))


def _describe(h: hierarchy_lib.Hierarchy, supers: list[int]) -> str:
  if not supers:
    return "none"
  return ", ".join(f"{k} ({h.superclasses[k].name!r})" if 0 <= k < h.num_superclasses
                   else f"{k} (no such superclass)" for k in supers)
