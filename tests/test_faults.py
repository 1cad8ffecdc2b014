"""Fault drills for super-sub-train: divergence, two processes on one model_dir, a model_dir of
another run, kill -9 mid-training, an unusable model_dir and a full disk.

Each drill checks the two promises of the model_dir layout (super_sub.training.run): a stage
is marked done (metrics.json) only when its weights are sound and complete, and re-running
the same command picks up from the last good state. All run on the synthetic `smoke` data.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from super_sub._internal import files
from super_sub._internal import lock
from super_sub._internal.compat import keras
from super_sub.data import prepare
from super_sub.training import fit
from super_sub.training import guards

from conftest import SMOKE

STEPS = 168 // 16 + 1  # smoke: 21 subclasses x 8 training images, batch 16, last one partial


def _command(model_dir, data_dir, *extra):
  """The super-sub-train command line of the drills (flat, 3 epochs of the smoke data)."""
  return [sys.executable, "-m", "super_sub.train.train", f"--model_dir={model_dir}",
          f"--dataset={SMOKE}", f"--data_dir={data_dir}", "--stage=flat", "--epochs=3",
          "--batch_size=16", *extra]


def _re(path):
  """`path` as a regular expression that matches it literally."""
  return re.escape(str(path))


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _history(model_dir):
  with open(os.path.join(model_dir, "flat", "metrics.json"), encoding="utf-8") as f:
    return json.load(f)["history"]


def _saved_config(model_dir, **overrides):
  """Writes model_dir/config.json as a resolved smoke run would (no training); its bytes."""
  config = {"model_dir": str(model_dir), "dataset": SMOKE, "backbone": "small_resnet",
            "image_size": 16, "hierarchy": "superclassed_synthetic", "qat": False, "epochs": 1,
            "batch_size": 16, **overrides}
  path = os.path.join(model_dir, "config.json")
  files.write_json(path, config)
  with open(path, "rb") as f:
    return f.read()


# --- 1. divergence -------------------------------------------------------------------------

@pytest.mark.slow
def test_absurd_learning_rate_stops_the_stage_naming_stage_epoch_and_step(
    tmp_path, smoke_config):
  with pytest.raises(guards.NonFiniteError,
                     match=r"stage 'flat' diverged: the training loss is (nan|inf) at "
                           rf"epoch 1/1, step \d+/{STEPS}\. .*not marked done") as e:
    fit.train(smoke_config(tmp_path, stage="flat", learning_rate=1e30), log=lambda _: None)
  assert (e.value.stage, e.value.epoch) == ("flat", 1) and 1 <= e.value.step <= STEPS
  assert "No epoch finished cleanly" in str(e.value)
  assert not (tmp_path / "flat" / "metrics.json").exists()
  assert not (tmp_path / "flat" / "weights").exists()


class _PoisonLastBatch(keras.callbacks.Callback):
  """Sets one kernel to NaN after the last batch of epoch `epoch` (0-based): the loss Keras
  logged stays finite, so only the guard's epoch-end weight check can catch it."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch, self.current, self.name = epoch, -1, None

  def on_epoch_begin(self, epoch, logs=None):
    self.current = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self.current == self.epoch and batch == self.params["steps"] - 1:
      kernel = next(v for v in self.model.trainable_weights if "kernel" in v.name)
      kernel.assign(tf.fill(kernel.shape, float("nan")))
      self.name = kernel.name


class _RecordStart(keras.callbacks.Callback):
  """(epoch, optimizer step, every weight finite) at each epoch's start."""

  def __init__(self):
    super().__init__()
    self.starts = []

  def on_epoch_begin(self, epoch, logs=None):
    finite = all(np.isfinite(w).all() for w in self.model.get_weights())
    self.starts.append((epoch, int(self.model.optimizer.iterations.numpy()), finite))


@pytest.mark.slow
def test_diverged_epoch_is_not_backed_up_and_rerun_resumes_the_last_good_one(
    tmp_path, smoke_config):
  config = smoke_config(tmp_path, stage="flat", epochs=2, learning_rate=1e-3)
  poison = _PoisonLastBatch(epoch=1)
  with pytest.raises(guards.NonFiniteError, match=r"weight variable\(s\) hold NaN or Inf .* "
                     r"at epoch 2/2, at the epoch's end\. .*last good epoch \(1\) is kept") as e:
    fit.train(config, log=lambda _: None, callbacks=[poison])
  assert poison.name in str(e.value) and e.value.step is None
  assert not (tmp_path / "flat" / "metrics.json").exists()
  assert not (tmp_path / "flat" / "weights").exists()
  assert os.listdir(tmp_path / "flat" / "backup")  # Keras kept the last good epoch's state
  recorder = _RecordStart()
  fit.train(config, log=lambda _: None, callbacks=[recorder])
  # Resumed at epoch 2 with epoch 1's finite weights and optimizer step, not the NaN ones.
  assert recorder.starts == [(1, STEPS, True)]
  assert len(_history(tmp_path)["loss"]) == 2


# --- 2. one training per model_dir ---------------------------------------------------------

def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
  with lock.hold(tmp_path):
    with pytest.raises(lock.FolderLockedError,
                       match=rf"{_re(tmp_path)} is in use: pid {os.getpid()} on host "):
      with lock.hold(tmp_path):
        pass
  with lock.hold(tmp_path):  # released on exit: a new holder gets it
    pass
  assert (tmp_path / ".lock").read_text() == ""  # nobody holds it


@pytest.mark.slow
def test_second_train_process_is_refused_while_one_holds_the_model_dir(tmp_path):
  model_dir, data_dir = tmp_path / "run", tmp_path / "tfds"
  model_dir.mkdir()
  data_dir.mkdir()
  before = _saved_config(model_dir)
  with lock.hold(model_dir):  # this test process plays the first training
    out = subprocess.run(_command(model_dir, data_dir), env=_env(), capture_output=True,
                         text=True, timeout=300, check=False)
  assert out.returncode != 0
  assert f"super-sub-train: {model_dir} is in use: pid {os.getpid()} " in out.stderr, (
      out.stderr[-3000:])
  assert (model_dir / "config.json").read_bytes() == before
  assert sorted(os.listdir(model_dir)) == [".lock", "config.json"]
  assert not os.listdir(data_dir)  # refused before the dataset was prepared


# --- 3. a model_dir of another run is refused before the dataset is prepared ----------------

@pytest.mark.parametrize("key, saved, asked", [
    ("dataset", "superclassed_synthetic", SMOKE),
    ("backbone", "small_resnet", "mobilenet_v2"),
    ("image_size", 16, 32),
])
def test_other_run_is_refused_before_preparing(tmp_path, smoke_config, key, saved, asked):
  model_dir, data_dir = tmp_path / "run", tmp_path / "fresh_tfds"
  model_dir.mkdir()
  before = _saved_config(model_dir, **{key: saved})
  with pytest.raises(ValueError, match=rf"holds a different run \({key}: model_dir has "
                     rf"{saved!r}, asked for {asked!r}\)"):
    fit.train(smoke_config(model_dir, data_dir=str(data_dir), **{key: asked}))
  assert not data_dir.exists() or not os.listdir(data_dir)  # nothing downloaded or built
  assert (model_dir / "config.json").read_bytes() == before


# --- 4a. kill -9 mid-training, then re-run --------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_matches_an_uninterrupted_run(tmp_path, smoke_data_dir):
  """SIGKILL a real super-sub-train once its first epoch is backed up, re-run the same command,
  and compare with an uninterrupted run of that command (run alongside, to save time).

  CPU training is not bit-reproducible: two uninterrupted runs already differ in the 3rd
  decimal of the first epoch's loss. And the re-run restarts the input pipeline, whose
  first pass replays epoch 1's shuffle and crops, so its epoch 2 trains on inputs it has just
  seen (training loss ~1.9 where an uninterrupted epoch 2 has ~2.95). So no weights or
  per-epoch rows are compared, only the outcome: the same 3 epochs in the history,
  metrics.json and weights present, the backup gone, the re-run resumed (it never printed
  "Epoch 1/3") from epoch 1's weights (its epoch 2 loss far below a first epoch's), and the
  final training loss of both below chance and within 0.3 of each other (observed: within
  0.03). Validation top-1 is not compared: 8 images a class do not generalise in 3 epochs
  (0.05-0.08 over 15 smoke epochs, chance 0.048), so any bound on it would check nothing.
  """
  prepare.prepare_dataset(SMOKE, smoke_data_dir)  # built once here, not by two processes at once
  killed, clean = tmp_path / "killed", tmp_path / "clean"
  reference = subprocess.Popen(_command(clean, smoke_data_dir), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  proc = subprocess.Popen(_command(killed, smoke_data_dir), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  history = killed / "flat" / "history.csv"
  deadline = time.monotonic() + 240
  try:
    # CSVLogger writes epoch 1's row after BackupAndRestore has saved it.
    while not (history.exists() and len(history.read_text().splitlines()) >= 2):
      assert proc.poll() is None, "the training finished or failed before it could be killed"
      assert time.monotonic() < deadline, "epoch 1 never finished"
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "flat" / "metrics.json").exists()

    rerun = subprocess.run(_command(killed, smoke_data_dir), env=_env(), capture_output=True,
                           text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert "Epoch 1/3" not in output and "Epoch 3/3" in output, output[-3000:]
    reference_output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_output[-3000:]
  finally:
    for p in (proc, reference):
      p.kill()
      p.wait()

  resumed, uninterrupted = _history(killed), _history(clean)
  assert resumed["epoch"] == uninterrupted["epoch"] == [0.0, 1.0, 2.0]
  assert not (killed / "flat" / "backup").exists()
  assert (killed / "flat" / "weights" / "model.index").exists()
  # The run learns its training images: the loss falls from above chance (ln 21 = 3.04; a
  # first epoch ends ~3.3) to ~2.7 in 3 epochs. The re-run kept what epoch 1 learnt: its
  # epoch 2 starts from epoch 1's weights (and replays epoch 1's inputs), so its loss is
  # below any first epoch's (observed ~1.9; an uninterrupted epoch 2 ~2.9); a re-run that
  # lost the weights would repeat a first epoch's ~3.3.
  chance = np.log(21)
  assert resumed["loss"][0] > chance and uninterrupted["loss"][0] > chance
  assert resumed["loss"][1] < min(resumed["loss"][0], uninterrupted["loss"][0]) - 0.2
  assert max(resumed["loss"][-1], uninterrupted["loss"][-1]) < chance - 0.2
  assert abs(resumed["loss"][-1] - uninterrupted["loss"][-1]) < 0.3


# --- 4b. a model_dir that cannot be written --------------------------------------------------

def test_model_dir_under_a_file_is_refused_naming_the_folder(tmp_path, smoke_config):
  (tmp_path / "a_file").write_text("not a folder")
  model_dir = tmp_path / "a_file" / "run"
  data_dir = tmp_path / "fresh_tfds"
  with pytest.raises(NotADirectoryError, match=rf"cannot use {_re(model_dir)}: "
                     rf"{_re(tmp_path / 'a_file')} is a file, not a folder"):
    fit.train(smoke_config(model_dir, data_dir=str(data_dir)))
  assert not data_dir.exists()  # refused before preparing


def test_model_dir_that_is_a_file_is_refused(tmp_path, smoke_config):
  (tmp_path / "run").write_text("not a folder")
  with pytest.raises(FileExistsError, match=rf"cannot use {_re(tmp_path / 'run')}: it is a file"):
    fit.train(smoke_config(tmp_path / "run"))


def test_unwritable_model_dir_is_refused_naming_the_folder(tmp_path, smoke_config,
                                                           monkeypatch):
  """As root, chmod cannot make a folder read-only: os.open refuses instead, as the kernel
  would for another user (EACCES) on anything inside the model_dir."""
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  real_open = os.open

  def refusing_open(path, *args, **kwargs):
    if os.fspath(path).startswith(str(model_dir)):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
    return real_open(path, *args, **kwargs)
  monkeypatch.setattr(os, "open", refusing_open)
  with pytest.raises(PermissionError, match=rf"cannot use {_re(model_dir)}: Permission denied"):
    fit.train(smoke_config(model_dir))
  monkeypatch.undo()
  assert not os.listdir(model_dir)


def test_read_only_model_dir_is_refused_naming_the_folder(tmp_path, smoke_config, monkeypatch):
  """A model_dir on a read-only file system: every write inside it fails with EROFS, as the
  kernel answers root too (a chmod 0o555 folder would not stop root, so the drill simulates
  the file system's answer at os.open, where the lock file is first written)."""
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  real_open = os.open

  def read_only_open(path, flags, *args, **kwargs):
    if os.fspath(path).startswith(str(model_dir)) and flags & (os.O_WRONLY | os.O_RDWR):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_open(path, flags, *args, **kwargs)
  monkeypatch.setattr(os, "open", read_only_open)
  with pytest.raises(OSError, match=rf"cannot use {_re(model_dir)}: Read-only file system") as e:
    fit.train(smoke_config(model_dir))
  assert e.value.errno == errno.EROFS
  monkeypatch.undo()
  assert not os.listdir(model_dir)


# --- 4c. a full disk -----------------------------------------------------------------------

def _enospc(*_, **__):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["history", "weights", "metrics"])
def test_full_disk_gives_a_clear_error_and_marks_nothing_done(tmp_path, smoke_config,
                                                               monkeypatch, where):
  """ENOSPC while CSVLogger writes history.csv (during fit), while TensorFlow writes the
  final weights (it raises its own ResourceExhaustedError), or while metrics.json is
  written: an OSError naming the stage and the file, and no metrics.json."""
  if where == "history":
    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end", _enospc)
    expected = rf"\[flat\] training stopped on a file error in {_re(tmp_path / 'flat')}: "
  elif where == "weights":
    def no_room(*_, **__):
      raise tf.errors.ResourceExhaustedError(
          None, None, "model.data-00000-of-00001.tempstate; No space left on device")
    monkeypatch.setattr(keras.Model, "save_weights", no_room)
    expected = rf"\[flat\] could not write {_re(tmp_path / 'flat' / 'weights')}: .*"
  else:
    real_write_json = files.write_json

    def write_json(path, payload):
      if os.path.basename(path) == "metrics.json":
        _enospc()
      real_write_json(path, payload)
    monkeypatch.setattr(files, "write_json", write_json)
    expected = rf"\[flat\] could not write {_re(tmp_path / 'flat' / 'metrics.json')}: "
  with pytest.raises(OSError, match=expected + r"No space left on device.* not marked done") as e:
    fit.train(smoke_config(tmp_path, stage="flat"), log=lambda _: None)
  assert e.value.errno == errno.ENOSPC
  assert not (tmp_path / "flat" / "metrics.json").exists()
  if where != "metrics":
    assert not (tmp_path / "flat" / "weights").exists()
