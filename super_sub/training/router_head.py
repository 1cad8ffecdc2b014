"""Training a router head (super_sub.models.router_head) on the generalist's frozen trunk.

The head's trunk must stay the generalist's bit for bit: the bundles store the trunk once and
feed its features to the router head, the generalist and every specialist alike. Frozen layers
(`trainable=False`, BatchNorm in inference mode) keep it in float training. tfmot's wrappers
list their layer's weights as trainable even when the layer is frozen
(tensorflow/model-optimization#1067), and their activation quantizers move their ranges in
every training step, so `PinnedTrunk` also restores the trunk after every step.
"""

from __future__ import annotations

from super_sub._internal.compat import keras
from super_sub.models import trunk as trunk_lib


class PinnedTrunk(keras.callbacks.Callback):
  """Holds every variable of a model's first `frozen_stages` stages at its value when the
  callback was made, restoring it after each training step."""

  def __init__(self, model: keras.Model, frozen_stages: int):
    super().__init__()
    cut = trunk_lib.cut_index(model, frozen_stages)
    self._pinned = [(v, v.numpy()) for layer in model.layers[:cut + 1] for v in layer.weights]

  def on_train_batch_end(self, batch, logs=None):
    for variable, value in self._pinned:
      variable.assign(value)
