"""The logs a stage's `fit` writes once an epoch (the printed line, TensorBoard), without the
per-batch work Keras' own callbacks do for them.

Keras calls every callback's batch hooks as soon as one callback has them, and super-sub's NaN
guard must have them (`guards.FiniteGuard` checks every step's loss). Keras' `ProgbarLogger`
then walks every layer of the model for its metrics' names at each batch, to update a bar that
`verbose=2` never prints, and `TensorBoard` runs a `tf.summary.scalar` per metric per batch that
its `update_freq="epoch"` writer discards. Measured by bench/train_overhead.py's profile on a
2-core CPU: 1.1 ms (float) to 5.9 ms (QAT, whose wrappers multiply the layers) a step for the
progress bar and about 1 ms for TensorBoard, on MobileNetV2 at 224 px; host time that a GPU
step of ~0.1 s would have to hide. These subclasses print and write the same epoch logs and
skip that batch work when nothing uses it.
"""

from __future__ import annotations

from super_sub._internal.compat import keras


class EpochProgbar(keras.callbacks.ProgbarLogger):
  """Keras' progress printing (`fit(verbose=...)` chooses as for Keras' own), whose batch hooks
  only count steps unless the bar is shown (`verbose=1`)."""

  def __init__(self):
    super().__init__(count_mode="steps")

  def on_train_batch_end(self, batch, logs=None):
    if self.verbose == 1:
      super().on_train_batch_end(batch, logs)
    else:
      self.seen = batch + 1

  def on_test_batch_end(self, batch, logs=None):
    if self.verbose == 1:
      super().on_test_batch_end(batch, logs)

  def on_predict_batch_end(self, batch, logs=None):
    if self.verbose == 1:
      super().on_predict_batch_end(batch, logs)


class EpochTensorBoard(keras.callbacks.TensorBoard):
  """Keras' TensorBoard callback whose batch hooks run only when they record something: batch
  summaries (`update_freq` in batches), profiling, steps per second, or the model's graph
  (written once, at the end of the first batch)."""

  def _batch_work(self) -> bool:
    return (self.update_freq != "epoch" or self._implements_train_batch_hooks()
            or self._should_write_train_graph)

  def on_train_batch_begin(self, batch, logs=None):
    if self._batch_work():
      super().on_train_batch_begin(batch, logs)
    else:
      self._global_train_batch += 1

  def on_train_batch_end(self, batch, logs=None):
    if self._batch_work():
      super().on_train_batch_end(batch, logs)
