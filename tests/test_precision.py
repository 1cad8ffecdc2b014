"""--mixed_precision and --jit_compile: the policy holds while a stage's model is built and
compiled, the logits head and the loss stay float32, QAT is refused, and a smoke stage trains
with both."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub._internal.compat import keras
from super_sub.data import pipeline
from super_sub.models import classifiers
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

from conftest import softmax


def test_mixed_precision_holds_while_a_stage_is_built(tmp_path):
  config = config_lib.TrainConfig(model_dir=str(tmp_path), mixed_precision=True)
  with fit.precision(config, tf.distribute.get_strategy()):
    # No GPU here: bfloat16, as on TPUs.
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    model = classifiers.build_classifier("small_resnet", (16, 16, 3), 4, "flat", "flat")
  assert keras.mixed_precision.global_policy().name == "float32"  # restored
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  assert convs and {layer.compute_dtype for layer in convs} == {"bfloat16"}
  assert {w.dtype for w in model.weights} == {tf.float32}  # variables stay float32
  head = model.get_layer(classifiers.HEAD_NAME)
  assert head.compute_dtype == "float32"
  assert model(np.zeros((2, 16, 16, 3), np.float32)).dtype == tf.float32


def test_mixed_precision_is_refused_with_qat(tmp_path):
  with pytest.raises(ValueError, match="mixed_precision cannot be combined with qat"):
    config_lib.TrainConfig(model_dir=str(tmp_path), mixed_precision=True, qat=True)


class _AsTrained(keras.callbacks.Callback):
  """Keeps the model `fit` trains, and its layers' dtypes and compile options as fit begins."""

  def on_train_begin(self, logs=None):
    self.trained = self.model
    self.jit_compile = self.model.jit_compile
    self.layers = {layer.name: (layer.compute_dtype, layer.variable_dtype)
                   for layer in self.model.layers if layer.weights}
    self.variables = {v.dtype for v in self.model.weights}


@pytest.mark.slow
def test_a_stage_trains_mixed_and_xla_compiled(tmp_path, smoke_config):
  config = smoke_config(tmp_path / "run", stage="flat", mixed_precision=True, jit_compile=True)
  as_trained = _AsTrained()
  run = run_lib.Run(fit.train(config, log=lambda _: None, callbacks=[as_trained]))
  with open(os.path.join(run.stage_dir(run_lib.FLAT), "metrics.json"), encoding="utf-8") as f:
    assert np.isfinite(json.load(f)["final"]["loss"])
  # As fit trained it: XLA-compiled; every layer but the logits head computes in bfloat16 (no
  # GPU here) on float32 variables; the head computes in float32.
  assert as_trained.jit_compile is True
  head = as_trained.layers.pop(classifiers.HEAD_NAME)
  assert head == ("float32", "float32")
  assert as_trained.layers and set(as_trained.layers.values()) == {("bfloat16", "float32")}
  assert as_trained.variables == {tf.float32}
  # Loaded for evaluation and export, the model computes in float32.
  model = run.load_model(run_lib.FLAT)
  assert {layer.compute_dtype for layer in model.layers if layer.weights} == {"float32"}
  # The trained weights give the same probabilities either way, up to bfloat16 rounding. Its
  # 8-bit significand rounds each activation by up to 2^-9 (0.2%) relative; over the network's
  # layers that grew to a max |delta prob| of 0.0024 to 0.0033 over the 84 validation images x
  # 21 classes (mean 0.00016) in three runs: 0.02 bounds it with 6x room for the run-to-run
  # spread of CPU training. The lower bound: a model that trained in float32 differs from its
  # float32 reload by float32 rounding at most (0.0 measured, with the stage built in
  # float32), so a difference above 1e-4 shows the trained model did compute in bfloat16.
  spec = run.evaluation_input(256)
  images = np.concatenate([x for x, _ in tfds.as_numpy(
      pipeline.make_dataset(run.builder, run.evaluation_split, spec, training=False))])
  mixed = softmax(as_trained.trained(images, training=False).numpy())
  full = softmax(model(images, training=False).numpy())
  delta = np.abs(mixed - full).max()
  assert len(images) == 84
  assert 1e-4 < delta < 0.02, delta
