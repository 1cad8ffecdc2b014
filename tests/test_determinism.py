"""--deterministic: bit-reproducible smoke runs, and a resumed stage that sees the inputs an
uninterrupted one saw (`pipeline.make_training_epochs`)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from super_sub._internal.compat import keras
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.training import fit

from conftest import SMOKE


def _metrics(model_dir, stage="flat"):
  with open(os.path.join(model_dir, stage, "metrics.json"), encoding="utf-8") as f:
    return json.load(f)


class _Interrupt(keras.callbacks.Callback):
  """Stops the training as epoch `at` (0-based) begins, after the previous one was backed up."""

  def __init__(self, at):
    super().__init__()
    self.at = at

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.at:
      raise KeyboardInterrupt(f"interrupted at epoch {epoch + 1}")


class _Probe(keras.callbacks.Callback):
  """Records whether TensorFlow's op determinism is on while the stage trains. (On this 2-core
  CPU the smoke runs happen to repeat bit for bit without it; GPU kernels do not.)"""
  on = None

  def on_train_begin(self, logs=None):
    self.on = tf_config.is_op_determinism_enabled()


@pytest.mark.slow
def test_two_deterministic_runs_and_a_resumed_one_give_identical_weights(tmp_path,
                                                                          smoke_config):
  runs, probe = {}, _Probe()
  for name in ("a", "b"):
    fit.train(smoke_config(tmp_path / name, stage="flat", epochs=2, deterministic=True),
              log=lambda _: None, callbacks=[probe])
    runs[name] = _metrics(tmp_path / name)
  assert probe.on
  assert runs["a"]["weights_sha256"] == runs["b"]["weights_sha256"]
  assert runs["a"]["history"] == runs["b"]["history"]
  # Interrupted after epoch 1, then re-run: epoch 2 sees epoch 2's inputs, not epoch 1's again.
  config = smoke_config(tmp_path / "resumed", stage="flat", epochs=2, deterministic=True)
  with pytest.raises(KeyboardInterrupt):
    fit.train(config, log=lambda _: None, callbacks=[_Interrupt(1)])
  assert not (tmp_path / "resumed" / "flat" / "metrics.json").exists()
  fit.train(config, log=lambda _: None)
  resumed = _metrics(tmp_path / "resumed")
  assert resumed["weights_sha256"] == runs["a"]["weights_sha256"]
  assert resumed["history"]["loss"] == runs["a"]["history"]["loss"]
  assert not tf_config.is_op_determinism_enabled()  # off again for what runs next


@pytest.mark.parametrize("dustbin", [0.0, 0.5])
def test_training_epochs_depend_on_the_seed_and_the_epoch_only(smoke_data_dir, dustbin):
  builder = prepare.prepare_dataset(SMOKE, smoke_data_dir)
  if dustbin:  # superclass 4's specialist, with other superclasses' images drawn each epoch
    spec = pipeline.InputSpec(role="specialist", superclass=4, batch_size=8, image_size=16,
                              augment="crop", seed=3, dustbin=dustbin)
    steps = -(-pipeline.epoch_examples(builder, "train", spec) // 8)
  else:
    spec = pipeline.InputSpec(role="flat", batch_size=16, image_size=16, augment="flip_crop",
                              seed=3)
    steps = int(pipeline.make_dataset(builder, "train", spec, training=True).cardinality())

  def epochs(first, count):
    start = tf.Variable(first, dtype=tf.int64)
    ds = pipeline.make_training_epochs(builder, "train", spec, start, steps)
    batches = list(ds.take(count * steps).as_numpy_iterator())
    return [batches[e * steps:(e + 1) * steps] for e in range(count)]

  def same(a, b):
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))

  first = epochs(0, 3)
  assert not same(first[0], first[1]) and not same(first[1], first[2])
  again = epochs(1, 2)  # a run resumed at epoch 2
  assert same(again[0], first[1]) and same(again[1], first[2])
  labels = [np.concatenate([b[1] for b in epoch]) for epoch in first]
  if dustbin:  # "not mine" (5 subclasses, so label 5) drawn anew each epoch
    assert all((epoch_labels == 5).any() for epoch_labels in labels)
    return
  # Every example once an epoch (the last batch partial), in another order each epoch.
  np.testing.assert_array_equal(np.sort(labels[0]), np.sort(labels[1]))
  assert len(labels[0]) == builder.info.splits["train"].num_examples


def test_deterministic_training_takes_random_resized_crops(tmp_path, smoke_config):
  """ImageNet's default augmentation under --deterministic: its stateless crops come from
  `make_training_epochs` alone. The stateful pipeline's crop (sample_distorted_bounding_box,
  seed 0) refuses to trace under op determinism, and building it stopped every such run."""
  fit.train(smoke_config(tmp_path, stage="flat", deterministic=True,
                         augment="random_resized_crop"), log=lambda _: None)
  assert _metrics(tmp_path)["steps_per_epoch"] >= 1
