"""Fixtures every test module shares: the one smoke configuration of a training run."""

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
