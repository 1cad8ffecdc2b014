"""Bit-reproducible training (`--deterministic`): deterministic ops, seeds, and input epochs whose
random choices depend only on the seed and the epoch's number (`pipeline.make_training_epochs`)."""

from __future__ import annotations

import contextlib

import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from super_sub._internal.compat import keras


@contextlib.contextmanager
def deterministic_ops(seed: int, enabled: bool = True):
  """When `enabled`, within the block: Python, NumPy and TensorFlow seeded with `seed`, and
  TensorFlow's op determinism on (every op picks a deterministic kernel, or raises where it
  has none; slower on GPUs). Op determinism is process-wide and its public API only turns it
  on, so the block turns it off again (private API) if it was off: a later training or
  evaluation in the same process runs as it would have. Not `enabled`: nothing."""
  if not enabled:
    yield
    return
  keras.utils.set_random_seed(seed)
  was_on = tf_config.is_op_determinism_enabled()
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_on:
      tf_config.disable_op_determinism()


class FirstEpoch(keras.callbacks.Callback):
  """Sets `variable` to the epoch `fit` starts at, once BackupAndRestore (which must come
  before this callback) has restored an interrupted stage, so that
  `pipeline.make_training_epochs` starts with that epoch's inputs. The input iterator starts
  after `on_train_begin`, so it reads the value set here."""

  def __init__(self, variable: tf.Variable, steps_per_epoch: int):
    super().__init__()
    self.variable = variable
    self.steps_per_epoch = steps_per_epoch

  def on_train_begin(self, logs=None):
    del logs
    # What fit itself asks right after on_train_begin (tf_keras engine/training.py).
    epoch, _ = self.model._maybe_load_initial_counters_from_ckpt(  # pylint: disable=protected-access
        self.steps_per_epoch, 0)
    self.variable.assign(int(epoch))
