"""Specialists distilled from the flat network or another run's specialists: the loss by hand,
training, and bad input."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.training import config as config_lib
from super_sub.training import distill
from super_sub.training import fit
from super_sub.training import run as run_lib


@pytest.mark.parametrize("temperature, weight, expected", [
    # Student uniform (0.5, 0.5), label 0: CE = ln 2 = 0.693147. Teacher logits (ln 3, 0):
    # T = 1: teacher (0.75, 0.25), KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812;
    #   w = 0.5: 0.5 x 0.693147 + 0.5 x 0.130812 = 0.411980.
    (1.0, 0.5, 0.411980),
    # T = 2: teacher softmax(ln 3 / 2, 0) = (0.633975, 0.366025),
    #   KL = 0.633975 ln 1.267949 + 0.366025 ln 0.732051 = 0.036343, times T^2 = 0.145372;
    #   w = 0.25: 0.75 x 0.693147 + 0.25 x 0.145372 = 0.556203.
    (2.0, 0.25, 0.556203),
    (2.0, 0.0, 0.693147),  # w = 0: plain cross-entropy
])
def test_loss_hand_computed(temperature, weight, expected):
  loss = distill.distillation_loss(tf.constant([0]), tf.constant([[0.0, 0.0]]),
                                   tf.constant([[np.log(3.0), 0.0]]), temperature, weight)
  assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_loss_is_zero_soft_term_when_student_matches_teacher():
  logits = tf.constant([[2.0, -1.0, 0.5]])
  loss = distill.distillation_loss(tf.constant([1]), logits, logits, 3.0, 1.0)
  assert float(loss) == pytest.approx(0.0, abs=1e-6)


def _dense(name, weights):
  image = keras.Input((2,), name="image")
  layer = keras.layers.Dense(len(weights[1]), name="head")
  model = keras.Model(image, layer(image), name=name)
  layer.set_weights([np.asarray(w, np.float32) for w in weights])
  return model


def test_distilled_model_learns_the_teachers_columns_and_trains_the_original_layers():
  teacher = _dense("flat", [[[0, 0, 0, 0], [0, 0, 0, 0]], [0.0, 5.0, 0.0, 0.0]])  # likes col 1
  student = _dense("specialist_0", [[[0, 0], [0, 0]], [0.0, 0.0]])
  model = distill.distilled(student, teacher, (1, 3), temperature=1.0, weight=1.0)
  model.compile(optimizer=keras.optimizers.SGD(0.5))
  x, y = np.ones((32, 2), np.float32), np.ones(32, np.int64)  # hard labels say column 1
  model.fit(x, y, epochs=20, verbose=0)
  # w = 1: only the teacher's columns (1, 2) count, and it prefers its column 1 = class 0.
  probs = tf.nn.softmax(student(x[:1])).numpy()[0]
  assert probs[0] > 0.95
  assert len(model.weights) == len(student.weights)  # the teacher is not part of the model


def test_bad_distillation_options_name_the_problem():
  teacher = _dense("flat", [np.zeros((2, 4)), np.zeros(4)])
  student = _dense("specialist_0", [np.zeros((2, 2)), np.zeros(2)])
  with pytest.raises(ValueError, match="columns \\[0, 3\\) of its 4 outputs do not match"):
    distill.distilled(student, teacher, (0, 3), 2.0, 0.5)
  with pytest.raises(ValueError, match="temperature must be positive"):
    distill.distilled(student, teacher, (0, 2), 0.0, 0.5)
  with pytest.raises(ValueError, match="distill_weight must lie in \\[0, 1\\]"):
    config_lib.TrainConfig(model_dir="x", distill_from="flat", distill_weight=1.5)
  with pytest.raises(ValueError, match="distill_from must be 'flat' or the model_dir of a run"):
    config_lib.TrainConfig(model_dir="x", distill_from=" ")


def test_distill_from_something_that_is_not_a_run_is_refused_before_training(tmp_path,
                                                                             smoke_config):
  config = smoke_config(tmp_path / "run", stage="specialists", distill_from="generalist")
  with pytest.raises(FileNotFoundError, match="--distill_from=generalist: expected 'flat' or "
                     "the model_dir of a super-sub-train run"):
    fit.train(config, log=lambda _: None)
  assert not (tmp_path / "run" / "specialists").exists()


def test_distill_from_an_untrained_flat_is_refused_before_training(tmp_path, smoke_config):
  config = smoke_config(tmp_path / "run", stage="specialists", distill_from="flat")
  with pytest.raises(FileNotFoundError, match="--distill_from=flat needs the trained flat"):
    fit.train(config, log=lambda _: None)
  assert not (tmp_path / "run" / "specialists").exists()


class _LossProbe(keras.callbacks.Callback):
  """Records, as each specialist's `fit` begins, the loss that fit minimises (the model's own
  `compute_loss`, which Keras's train_step calls) on a fixed seeded batch, with the student's
  logits it was computed from. The metrics it touches are reset when the first epoch begins."""

  def __init__(self, batch=8, seed=0):
    super().__init__()
    self.batch = batch
    self.rng = np.random.default_rng(seed)
    self.images = None  # drawn at the first specialist, in its input shape
    self.seen = {}  # model name -> (labels, student logits, loss, regularisation loss)

  def on_train_begin(self, logs=None):
    if not self.model.name.startswith("specialist_"):
      return
    if self.images is None:
      self.images = self.rng.random((self.batch, *self.model.input_shape[1:]), np.float32)
    width = self.model.output_shape[-1]
    labels = self.rng.integers(0, width, len(self.images))
    logits = self.model(self.images, training=False)
    loss = self.model.compute_loss(self.images, tf.constant(labels), logits)
    regularisation = float(tf.add_n(self.model.losses)) if self.model.losses else 0.0
    self.seen[self.model.name] = (labels, logits.numpy().astype(np.float64), float(loss),
                                  regularisation)


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _assert_trained_on_soft_targets(probe, k, teacher_logits, temperature, weight):
  """Specialist k's training loss on the probe's batch is, to float32 rounding, the hand-
  computed mix of cross-entropy with the labels and T^2 x KL to the teacher's softened logits
  at `weight`, and measurably not the plain cross-entropy (what fit minimises without
  distillation)."""
  labels, student, loss, regularisation = probe.seen[f"specialist_{k}"]
  rows = np.arange(len(labels))
  hard = -_log_softmax(student)[rows, labels]
  log_teacher = _log_softmax(np.asarray(teacher_logits, np.float64) / temperature)
  soft = np.sum(np.exp(log_teacher) * (log_teacher - _log_softmax(student / temperature)),
                axis=1)
  expected = np.mean((1 - weight) * hard + weight * temperature ** 2 * soft) + regularisation
  plain = np.mean(hard) + regularisation
  # float32 logits of magnitude ~1-10: the loss is exact to ~1e-6; 1e-4 leaves room, and the
  # check below shows that 1e-4 tells the two losses apart.
  assert loss == pytest.approx(expected, abs=1e-4), (k, loss, expected, plain)
  assert abs(expected - plain) > 1e-2, (k, expected, plain)


@pytest.mark.slow
def test_distilled_specialists_train_and_load_as_plain_specialists(tmp_path, smoke_config):
  probe = _LossProbe()
  config = fit.train(smoke_config(tmp_path / "run", distill_from="flat", distill_weight=0.7),
                     log=lambda _: None, callbacks=[probe])
  run = run_lib.Run.open(config.model_dir)
  assert config_lib.load_config(config.model_dir).distill_from == "flat"
  # Every specialist trained on the trained flat network's logits of its own subclasses,
  # softened at T = distill_temperature and mixed with the labels at w = 0.7.
  flat_logits = run.load_model(run_lib.FLAT)(probe.images, training=False).numpy()
  h = run.hierarchy
  assert set(probe.seen) == {f"specialist_{k}" for k in run.specialists()}
  for k in run.specialists():
    columns = h.subclass_range(k)
    _assert_trained_on_soft_targets(probe, k, flat_logits[:, columns.start:columns.stop],
                                    config.distill_temperature, 0.7)
  two_stage = run.load_two_stage()  # plain specialist graphs load the distilled weights
  images = np.random.default_rng(0).random((4, *run.image_shape), np.float32)
  assert two_stage.predict(images)["label_probs"].shape == (4, run.hierarchy.num_subclasses)
  for stage in run.specialists().values():
    assert np.isfinite(run.metrics(stage)["final"]["loss"])


@pytest.fixture(scope="module")
def _teacher_run(tmp_path_factory, smoke_config):
  """A finished smoke run whose specialists teach others."""
  return fit.train(smoke_config(tmp_path_factory.mktemp("teacher") / "run"),
                   log=lambda _: None).model_dir


@pytest.mark.slow
def test_specialists_distill_from_another_runs_specialists(tmp_path, smoke_config, _teacher_run):
  probe = _LossProbe()
  config = fit.train(smoke_config(tmp_path / "run", distill_from=_teacher_run, delta_keep=0.05,
                                  freeze_bn=True), log=lambda _: None, callbacks=[probe])
  run = run_lib.Run.open(config.model_dir)
  other_run = run_lib.Run.open(_teacher_run)
  assert set(probe.seen) == {f"specialist_{k}" for k in run.specialists()}
  for k, stage in run.specialists().items():
    teacher, columns = fit._teacher(run, _teacher_run, k)  # pylint: disable=protected-access
    assert columns == (0, len(run.hierarchy.subclass_range(k)))
    # The teacher is the other run's specialist of the same superclass, weight for weight.
    other = other_run.load_model(stage)
    for a, b in zip(teacher.weights, other.weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
    # ... and it is what this run's specialist trained on (default T and w).
    _assert_trained_on_soft_targets(probe, k, other(probe.images, training=False).numpy(),
                                    config.distill_temperature, config.distill_weight)
    assert np.isfinite(run.metrics(stage)["final"]["loss"])
    assert run.metrics(stage)["delta"]["changed_fraction"] <= 0.05


@pytest.mark.slow
def test_distill_from_a_run_on_other_data_or_without_the_specialist_is_refused(
    tmp_path, smoke_config, _teacher_run):
  run_dir = tmp_path / "run"
  fit.train(smoke_config(run_dir, stage="flat"), log=lambda _: None)
  run = run_lib.Run.open(str(run_dir))
  other = tmp_path / "other"
  other.mkdir()
  with open(os.path.join(_teacher_run, "config.json"), encoding="utf-8") as f:
    saved = json.load(f)
  with open(other / "config.json", "w", encoding="utf-8") as f:
    json.dump({**saved, "image_size": saved["image_size"] * 2}, f)
  with pytest.raises(ValueError, match=r"trained on other data: image_size \d+ \(this run: "):
    fit._teacher(run, str(other), 4)  # pylint: disable=protected-access
  with open(other / "config.json", "w", encoding="utf-8") as f:
    json.dump(saved, f)  # the same data, but no specialist trained there
  with pytest.raises(FileNotFoundError, match="has no trained specialist for superclass 4"):
    fit._teacher(run, str(other), 4)  # pylint: disable=protected-access
