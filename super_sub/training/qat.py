"""Quantization-aware training with tfmot: the QAT version of a super-sub classifier."""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from super_sub._internal.compat import keras
from super_sub.models import classifiers


def quantize(model: keras.Model) -> keras.Model:
  """The tfmot quantization-aware version of a `build_classifier` model (same spec, same name).

  A fresh QAT model scores at chance until trained: its quantizer ranges start at +-6 and
  only move in training steps: never evaluate or convert it before training.
  """
  spec = classifiers.spec_of(model)
  qat = tfmot.quantization.keras.quantize_model(model)
  qat.super_sub_spec = spec
  return qat
