"""super_sub.training.logs: the epoch logs Keras' own callbacks write (the printed line,
TensorBoard's scalars and graph), without their per-batch work when a batch hook (the NaN
guard's) makes Keras call every callback at every batch."""

import contextlib
import glob
import io
import os
import re
from unittest import mock

import numpy as np
import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.training import logs

STEPS, EPOCHS = 12, 2


class _CountingModel(keras.Sequential):
  """Counts reads of `metrics`: Keras' progress bar reads it (walking every layer) per batch."""
  reads = 0

  @property
  def metrics(self):
    _CountingModel.reads += 1
    return super().metrics


class _BatchHook(keras.callbacks.Callback):
  """A callback with a batch hook, as super-sub's NaN guard: Keras then calls every callback's
  batch hooks."""

  def on_train_batch_end(self, batch, logs=None):
    del batch, logs


def _fit(*callbacks) -> str:
  """What `fit(verbose=2)` of a small model printed, with `callbacks` and a batch hook."""
  keras.utils.set_random_seed(0)
  model = _CountingModel([keras.layers.Dense(8, activation="relu", input_shape=(4,)),
                          keras.layers.Dense(3)])
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  rng = np.random.default_rng(0)
  data = tf.data.Dataset.from_tensor_slices(
      (rng.normal(size=(8 * STEPS, 4)).astype("float32"), rng.integers(0, 3, 8 * STEPS)))
  _CountingModel.reads = 0
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    model.fit(data.batch(8), epochs=EPOCHS, verbose=2, callbacks=[_BatchHook(), *callbacks])
  return out.getvalue()


def _without_times(text: str) -> str:
  return re.sub(r"\d+(\.\d+)?(us|ms|s)(/epoch|/step)?", "T", text)


def test_progbar_prints_keras_own_lines_without_reading_metrics_every_batch():
  theirs = _fit()
  their_reads = _CountingModel.reads
  ours = _fit(logs.EpochProgbar())
  our_reads = _CountingModel.reads
  assert re.search(rf"{STEPS}/{STEPS} - .*loss: [0-9.]+ - accuracy: [0-9.]+", ours)
  assert f"Epoch {EPOCHS}/{EPOCHS}" in ours
  assert _without_times(ours) == _without_times(theirs)
  # Keras' bar reads the metrics at every batch; ours once an epoch (plus Keras' own reads).
  assert their_reads >= EPOCHS * STEPS
  assert our_reads <= their_reads - EPOCHS * (STEPS - 1)


def test_tensorboard_writes_the_epoch_scalars_and_graph_with_no_summary_per_batch(tmp_path):
  def scalars_written(callback) -> int:
    summary = tf.compat.v2.summary  # the module Keras' callbacks call
    with mock.patch.object(summary, "scalar", wraps=summary.scalar) as scalar:
      _fit(callback)
    return scalar.call_count

  theirs = scalars_written(keras.callbacks.TensorBoard(str(tmp_path / "keras")))
  ours = scalars_written(logs.EpochTensorBoard(str(tmp_path / "ours")))
  assert theirs >= EPOCHS * STEPS * 2  # loss and accuracy, every batch
  assert ours < EPOCHS * STEPS

  def events(folder):
    tags, graphs = set(), 0
    for path in glob.glob(os.path.join(folder, "train", "events.out.tfevents.*")):
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        graphs += bool(event.graph_def)
        tags |= {value.tag for value in event.summary.value}
    return tags, graphs

  our_tags, our_graphs = events(str(tmp_path / "ours"))
  their_tags, their_graphs = events(str(tmp_path / "keras"))
  assert {"epoch_loss", "epoch_accuracy"} <= our_tags
  assert our_tags == their_tags
  assert our_graphs == their_graphs >= 1
