"""Cheap specialists: train each one as a small, sparse delta over the generalist.

Three things make a specialist's delta small (measured in shared/notes/qat-delta-facts.md):
  * a proximal L1 step after every optimizer step soft-thresholds W - W_base, so most
    backbone weights end exactly equal to the base (an L1 loss term never reaches zero
    with Adam);
  * BatchNorm stays the generalist's (re-estimating statistics on a subset changes every
    folded weight and cost accuracy);
  * with quantization-aware training, the weight and activation quantizer ranges stay the
    base's, so a weight equal to the base's has the same int8 value, and the int8 delta is
    a sparse tensor of small integers.
Only the head is free: it is stored whole.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from super_sub import models
from super_sub.compat import keras


def quantize(model: keras.Model) -> keras.Model:
  """The tfmot quantization-aware version of a `build_classifier` model (same spec, same name).

  A fresh QAT model scores at chance until trained: its quantizer ranges start at +-6 and
  only move in training steps (notes, trap 2).
  """
  spec = models.spec_of(model)
  qat = tfmot.quantization.keras.quantize_model(model)
  qat.super_sub_spec = spec
  return qat


def backbone_variables(model: keras.Model) -> list[tf.Variable]:
  """Every variable of the layers before the head (the last layer), in a stable order."""
  return [v for layer in model.layers[:-1] for v in layer.weights]


def is_kernel(variable: tf.Variable) -> bool:
  """Convolution and dense kernels: the weights a specialist may change (sparsely)."""
  return variable.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")


def freeze_batchnorm(model: keras.Model) -> None:
  """Runs every BatchNormalization (also inside tfmot wrappers) in inference mode."""
  for layer in model.layers:
    inner = getattr(layer, "layer", layer)
    if isinstance(inner, keras.layers.BatchNormalization):
      inner.trainable = False


_BATCHNORM = ("gamma", "beta", "moving_mean", "moving_variance")


class DeltaToBase(keras.callbacks.Callback):
  """Keeps a specialist's backbone a sparse delta over the base after every training step.

  Kernels: W <- base + soft_threshold(W - base, l1 x learning rate), the proximal step of an
  L1 penalty l1 * |W - base| (l1 = 0 leaves them free). Adam moves a weight by about the
  learning rate per step, so l1 < 1 lets consistent gradients through and snaps noise back.
  BatchNorm parameters and statistics: pinned to the base when `pin_batchnorm`. Quantizer
  ranges (tfmot's min/max variables): always pinned. tfmot's QuantizeWrapperV2 lists its
  layer's weights as trainable even when the layer is frozen (notes, trap 5), so pinning,
  not `.trainable`, is what holds them.
  """

  def __init__(self, base: list[np.ndarray], l1: float, pin_batchnorm: bool = True):
    """`base`: values of `backbone_variables(model)` when the specialist was made."""
    super().__init__()
    self.base = base
    self.l1 = float(l1)
    self.pin_batchnorm = pin_batchnorm

  def on_train_batch_end(self, batch, logs=None):
    del batch, logs
    self.project(self.model, self.l1 * float(self.model.optimizer.learning_rate))

  def project(self, model: keras.Model, threshold: float) -> None:
    """Soft-thresholds kernel deltas by `threshold` and pins the rest of the backbone."""
    variables = backbone_variables(model)
    if len(variables) != len(self.base):
      raise ValueError(f"model has {len(variables)} backbone variables, the base "
                       f"{len(self.base)}: not the model this delta was made for")
    for var, base in zip(variables, self.base):
      short = var.name.split("/")[-1].split(":")[0]
      if is_kernel(var):
        if threshold > 0:
          delta = var.numpy() - base
          shrunk = np.sign(delta) * np.maximum(np.abs(delta) - threshold, 0.0)
          var.assign(base + shrunk.astype(base.dtype))
      elif short in _BATCHNORM:
        if self.pin_batchnorm:
          var.assign(base)
      elif not var.trainable:  # quantizer ranges and step counters
        var.assign(base)


def delta_stats(model: keras.Model, base: list[np.ndarray]) -> dict[str, float | int]:
  """How sparse a specialist's backbone delta is: changed kernel weights out of all."""
  changed = total = 0
  for var, b in zip(backbone_variables(model), base):
    if is_kernel(var):
      changed += int(np.count_nonzero(var.numpy() != b))
      total += int(b.size)
  return {"kernel_weights": total, "changed": changed,
          "changed_fraction": changed / total if total else 0.0}
