"""Stops a stage whose training diverged, before a NaN reaches its backup or its final weights.

`FiniteGuard` checks the training loss after every batch and every floating-point weight at
the end of every epoch, and raises `NonFiniteError` naming the stage, the epoch and the step.
Keras's own `TerminateOnNaN` only sets `stop_training`: `fit` then returns normally, the stage
would be saved and marked done with NaN weights, and BackupAndRestore would delete the last
good epoch's state. An exception instead leaves `fit` before `on_train_end`, so the stage is
not marked done and the backup of the last epoch that passed the check stays; re-running the
same command resumes from it.

The guard must come before BackupAndRestore in the callback list: its epoch-end check then
runs before the epoch's backup is written, so a diverged epoch is never backed up.
"""

from __future__ import annotations

import math

import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.errors import SuperSubError


class NonFiniteError(SuperSubError, RuntimeError):
  """Training produced a NaN or infinite loss or weight.

  Attributes:
    stage: the stage's key (`flat`, `generalist`, `specialist_3`, ...).
    epoch: the epoch, 1-based as Keras prints it.
    step: the training step within the epoch, 1-based; None for the epoch-end weight check.
  """
  exit_status = 1

  def __init__(self, stage: str, epoch: int, step: int | None, message: str):
    self.stage, self.epoch, self.step = stage, epoch, step
    super().__init__(message)


class FiniteGuard(keras.callbacks.Callback):
  """Raises `NonFiniteError` on a non-finite training loss (checked for every batch) or weight
  (at each epoch's end).

  The batch check reads the loss Keras logs, the running mean of the epoch's batch losses: it
  turns non-finite with the first non-finite batch. It reads each batch's loss one batch late
  (at the next batch's end, and at the epoch's end for the last one), so that the host waits
  for the step before last, not the one just launched, and the accelerator's queue never runs
  dry; the error still names the step whose loss went bad, and fires before the epoch's
  backup. The weight check is one reduction over the model's floating-point variables
  (BatchNorm statistics included), once an epoch. With `compile(steps_per_execution=N)` Keras
  calls the batch hooks once per N steps: the loss is still the running mean, so a bad step is
  still caught, and the error names the last step of the call it happened in.

  Keras times the batch hooks of a callback it does not know during the first batches; the
  wait for a step's loss can make it warn that `on_train_batch_end` "is slow compared to the
  batch time". That time is the step's own compute, not the guard's.
  """

  def __init__(self, stage: str, backup_dir: str | None = None):
    """`stage`: the key the error names; `backup_dir`: where the last good epoch is kept."""
    super().__init__()
    self.stage = stage
    self.backup_dir = backup_dir
    self._supports_tf_logs = True  # batch logs stay tensors: Keras does not wait for them
    self._epoch = 0
    self._last_good: int | None = None  # 0-based index of the last epoch that passed
    self._pending = None  # (1-based step, its loss tensor), checked one batch later

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._pending = None
    if self._last_good is None:  # a resumed fit starts past the restored epochs
      self._last_good = epoch - 1

  def on_train_batch_end(self, batch, logs=None):
    self._check_pending()
    loss = (logs or {}).get("loss")
    self._pending = None if loss is None else (batch + 1, loss)

  def on_epoch_end(self, epoch, logs=None):
    self._check_pending()
    variables = [v for v in self.model.weights if v.dtype.is_floating]
    if variables and not bool(_all_finite(variables)):
      bad = [v.name for v in variables if not bool(_all_finite([v]))]
      shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
      self._fail(None, f"{len(bad)} weight variable(s) hold NaN or Inf ({shown})")
    self._last_good = epoch

  def _check_pending(self) -> None:
    if self._pending is not None:
      step, loss = self._pending
      self._pending = None
      value = float(loss)
      if not math.isfinite(value):
        self._fail(step, f"the training loss is {value}")

  def _fail(self, step: int | None, what: str) -> None:
    epochs, steps = self.params.get("epochs"), self.params.get("steps")
    where = f"epoch {self._epoch + 1}/{epochs}"
    where += f", step {step}/{steps}" if step is not None else ", at the epoch's end"
    if self._last_good is not None and self._last_good >= 0 and self.backup_dir:
      kept = (f"Its last good epoch ({self._last_good + 1}) is kept in {self.backup_dir}: "
              "re-running the same command resumes from there")
    else:
      kept = "No epoch finished cleanly: re-running the same command starts the stage over"
    raise NonFiniteError(
        self.stage, self._epoch + 1, step,
        f"stage {self.stage!r} diverged: {what} at {where}. Training stopped; the stage is "
        f"not marked done (no metrics.json, no final weights). {kept}; lower the stage's "
        "learning rate first (learning rates are not part of the run's identity, so the same "
        "model_dir accepts them).")


def _all_finite(variables) -> tf.Tensor:
  """True where every element of every variable is finite."""
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
