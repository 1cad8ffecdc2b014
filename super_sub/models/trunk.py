"""A shared trunk: the stages no specialist changes, computed once per image.

A plain two-stage pipeline runs two whole networks per image. Specialists trained with
`--freeze_stages=K` keep the generalist's stem and stages 1..K-1 bit for bit, so their
output is the same for the generalist and for every specialist. The TFLite export then
holds those stages once, as a trunk, and the generalist and the specialists as *tails*
that start from the trunk's output: per image, the trunk runs once and only the two tails
run twice.
"""

from __future__ import annotations

import numpy as np

from super_sub._internal.compat import keras
from super_sub.models import backbones
from super_sub.models import classifiers


def split(model: keras.Model, frozen_stages: int) -> tuple[keras.Model, keras.Model]:
  """(trunk, tail) of a `build_classifier` model (also its tfmot QAT version).

  The trunk maps images to the output of stage `frozen_stages - 1` (the stem is stage 0);
  the tail maps that tensor to the logits. Both reuse the model's layers (and so its
  weights): tail(trunk(x)) computes exactly model(x).

  Raises:
    ValueError: frozen_stages outside [1, number of stages + 1], or a graph where more than
      one tensor crosses the cut (a skip connection over a stage boundary).
  """
  cut = cut_index(model, frozen_stages)
  boundary = model.layers[cut].output
  trunk = keras.Model(model.input, boundary, name=f"{model.name}_trunk")
  features = keras.Input(boundary.shape[1:], name="features")
  tensors = {id(boundary): features}
  for layer in model.layers[cut + 1:]:
    inputs = classifiers.inbound_node(model, layer).input_tensors
    try:
      mapped = ([tensors[id(t)] for t in inputs] if isinstance(inputs, (list, tuple))
                else tensors[id(inputs)])
    except KeyError:
      raise ValueError(f"{model.name!r}: layer {layer.name!r} reads a tensor from before the "
                       f"cut other than stage {frozen_stages - 1}'s output; no single trunk "
                       f"output feeds the tail") from None
    tensors[id(layer.output)] = layer(mapped)
  tail = keras.Model(features, tensors[id(model.output)], name=f"{model.name}_tail")
  return trunk, tail


def check_shared(base: keras.Model, specialist: keras.Model, frozen_stages: int) -> None:
  """Checks that `specialist` left the first `frozen_stages` stages exactly as in `base`.

  Raises:
    ValueError: naming the first layer whose variables differ.
  """
  cut = cut_index(base, frozen_stages)
  for a, b in zip(base.layers[:cut + 1], specialist.layers[:cut + 1]):
    for va, vb in zip(a.weights, b.weights):
      if va.shape != vb.shape or not np.array_equal(va.numpy(), vb.numpy()):
        raise ValueError(
            f"{specialist.name!r} differs from the generalist in {vb.name!r}, "
            f"inside the first {frozen_stages} stages that a shared trunk needs unchanged "
            f"(were the specialists trained with --freeze_stages >= {frozen_stages}?)")


def cut_index(model: keras.Model, frozen_stages: int) -> int:
  """Index of the trunk's last layer (the last layer of stage frozen_stages - 1) in model.layers.

  Raises:
    ValueError: as `split`.
  """
  top = backbones.num_stages(model)
  if not 1 <= frozen_stages <= top + 1:
    raise ValueError(f"a trunk needs 1 <= frozen_stages <= {top + 1} (stem + {top} stages) "
                     f"for {model.name!r}; got {frozen_stages}")
  stages = [backbones.stage_of(layer.name) for layer in model.layers]
  cut = max(i for i, s in enumerate(stages) if s is not None and s < frozen_stages)
  if any(s is not None and s >= frozen_stages for s in stages[:cut]) or any(
      s is not None and s < frozen_stages for s in stages[cut + 1:]):
    raise ValueError(f"{model.name!r}: layers of the first {frozen_stages} stages are not all "
                     f"before the others, so it cannot be cut into a trunk and a tail")
  return cut
