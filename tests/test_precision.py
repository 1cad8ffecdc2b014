"""--mixed_precision and --jit_compile: the policy holds while a stage's model is built and
compiled, the logits head and the loss stay float32, QAT is refused, and a smoke stage trains
with both."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.models import classifiers
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib


def test_mixed_precision_holds_while_a_stage_is_built(tmp_path):
  config = config_lib.TrainConfig(model_dir=str(tmp_path), mixed_precision=True)
  with fit._precision(config, tf.distribute.get_strategy()):  # pylint: disable=protected-access
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


@pytest.mark.slow
def test_a_stage_trains_mixed_and_xla_compiled(tmp_path, smoke_config):
  config = smoke_config(tmp_path / "run", stage="flat", mixed_precision=True, jit_compile=True)
  run = run_lib.Run(fit.train(config, log=lambda _: None))
  with open(os.path.join(run.stage_dir(run_lib.FLAT), "metrics.json"), encoding="utf-8") as f:
    assert np.isfinite(json.load(f)["final"]["loss"])
  # Loaded for evaluation and export, the model computes in float32.
  model = run.load_model(run_lib.FLAT)
  assert {layer.compute_dtype for layer in model.layers if layer.weights} == {"float32"}
