"""Fixtures every test module shares: the one smoke configuration of a training run."""

import os

import numpy as np
import pytest

from super_sub.training import config as config_lib

# The synthetic dataset's `smoke` config: 16 px, 8 training images a class; builds in seconds.
SMOKE = "superclassed_synthetic/smoke"
SMOKE_RUN = dict(dataset=SMOKE, epochs=1, specialist_epochs=1, batch_size=16)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory) -> str:
  """One TFDS folder for the whole session: the smoke data is built once."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def smoke_config(smoke_data_dir):
  """A factory: smoke_config(model_dir, **overrides) -> the smoke TrainConfig of a run."""
  def make(model_dir, **overrides) -> config_lib.TrainConfig:
    return config_lib.TrainConfig(**{"model_dir": str(model_dir), "data_dir": smoke_data_dir,
                                     **SMOKE_RUN, **overrides})
  return make


def assert_bundle_probs_match_keras(run, tflite_dir: str, atol: float) -> None:
  """The TFLite bundle's hard-routing probabilities equal the Keras two-stage ones
  (model_dir/predictions/two_stage_hard.npz from super-sub-eval) image by image, to within
  int8 noise: matching answers alone prove little when a smoke run is near chance."""
  from super_sub.bundles import parity  # pylint: disable=import-outside-toplevel
  from super_sub.runtime import predictor  # pylint: disable=import-outside-toplevel
  lite = predictor.TwoStageLite(tflite_dir)
  probs = []

  def predict(images):
    out = lite.predict(images, mode="hard")
    probs.append(out["label_probs"])
    return out["label"]

  parity.compare_with_keras(run, predict)
  with np.load(os.path.join(run.model_dir, "predictions", "two_stage_hard.npz")) as keras_run:
    np.testing.assert_allclose(np.concatenate(probs), keras_run["probs"], atol=atol)
