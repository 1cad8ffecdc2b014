"""Training a router head (super_sub.models.router_head) on the generalist's frozen trunk.

The head's trunk must stay the generalist's bit for bit: the bundles store the trunk once and
feed its features to the router head, the generalist and every specialist alike. Frozen layers
(`trainable=False`, BatchNorm in inference mode) keep it in float training. tfmot's wrappers
list their layer's weights as trainable even when the layer is frozen
(tensorflow/model-optimization#1067), and their activation quantizers move their ranges in
every training step, so `PinnedTrunk` also restores the trunk after every step.
"""

from __future__ import annotations

import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.models import trunk as trunk_lib
from super_sub.training import deltas


class PinnedTrunk(keras.callbacks.Callback):
  """Holds every variable of a model's first `frozen_stages` stages at its value when the
  callback was made, restoring it after each training step: inside the step once `attach`ed
  (also with steps_per_execution > 1), else after each batch Keras reports."""

  def __init__(self, model: keras.Model, frozen_stages: int):
    super().__init__()
    cut = trunk_lib.cut_index(model, frozen_stages)
    self._pinned = [(v, tf.Variable(v.read_value(), trainable=False))
                    for layer in model.layers[:cut + 1] for v in layer.weights]
    self._attached = False

  def attach(self, model: keras.Model) -> None:
    """Restores the trunk inside `model`'s train step, after every step (call before `fit`)."""
    deltas.after_every_step(model, self._restore)
    self._attached = True

  def _restore(self) -> None:
    for variable, value in self._pinned:
      variable.assign(value)

  def on_train_begin(self, logs=None):
    del logs
    every = getattr(self.model, "_steps_per_execution", None)
    if not self._attached and every is not None and int(every.numpy()) > 1:
      raise ValueError("steps_per_execution > 1: callbacks see every N-th step only; call "
                       "PinnedTrunk.attach(model) before fit to pin the trunk after each")

  def on_train_batch_end(self, batch, logs=None):
    if not self._attached:
      self._restore()
