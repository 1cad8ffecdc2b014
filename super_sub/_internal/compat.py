"""The one place super-sub chooses its Keras: `tf_keras` (Keras 2), the Keras that tfmot needs.

Keras 3 (`keras`, and `tf.keras` on TF >= 2.16) is installed too, but tfmot's `quantize_model`
refuses its models ("`to_quantize` can only either be a keras Sequential or Functional model").
Every module imports `keras` from here; none imports `keras` or uses `tf.keras` directly.
"""

import os

# As tfmot's own compat.py does: makes `tf.keras` resolve to Keras 2 inside TensorFlow (e.g. in
# the TFLite converter) when TensorFlow has not been imported yet. setdefault leaves a user's
# explicit choice alone.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ["keras"]
