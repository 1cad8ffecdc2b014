"""Dustbin specialists: their training data, their training, and what refuses them."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub.bundles import export as export_lib
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

from conftest import SMOKE

DOTS = 4  # smoke data: 5 subclasses x 8 training images; the other 4 superclasses hold 128


@pytest.fixture(scope="module")
def builder(smoke_data_dir):
  return prepare.prepare(SMOKE, data_dir=smoke_data_dir)


def test_training_data_mixes_other_superclasses_as_not_mine(builder):
  spec = pipeline.InputSpec(role="specialist", superclass=DOTS, batch_size=60, image_size=16,
                            augment="none", dustbin=0.5)
  assert pipeline.epoch_examples(builder, "train", spec) == 40 + 20
  ds = pipeline.make_dataset(builder, "train", spec, training=True, with_metadata=True)
  targets, supers, names = [], [], []
  for _, target, meta in tfds.as_numpy(ds.take(40)):  # 40 epochs of 60 images
    targets.append(target)
    supers.append(meta["superclass"])
    names.append(meta["file_name"])
  targets, supers, names = map(np.concatenate, (targets, supers, names))
  np.testing.assert_array_equal(targets == 5, supers != DOTS)  # "not mine" = the 6th class
  assert set(targets[supers == DOTS]) == {0, 1, 2, 3, 4}
  assert 0.28 < np.mean(targets == 5) < 0.39  # 20 of every 60 on average
  first, later = set(names[:60][supers[:60] != DOTS]), set(names[-60:][supers[-60:] != DOTS])
  assert first != later  # drawn afresh, not the same others every epoch
  # Evaluation keeps to the specialist's own images.
  val = pipeline.make_dataset(builder, "validation", spec, training=False)
  assert set(np.concatenate([y for _, y in tfds.as_numpy(val)])) <= {0, 1, 2, 3, 4}


def test_bad_dustbin_values_name_the_problem():
  with pytest.raises(ValueError, match="only a specialist has a dustbin"):
    pipeline.InputSpec(role="flat", batch_size=8, image_size=16, dustbin=0.5)
  with pytest.raises(ValueError, match="dustbin is the number of other superclasses' images"):
    config_lib.TrainConfig(model_dir="x", dustbin=-1.0)


@pytest.mark.slow
def test_dustbin_specialists_train_route_and_refuse_export(tmp_path, smoke_config):
  config = fit.train(smoke_config(tmp_path / "run", dustbin=0.5), log=lambda _: None)
  run = run_lib.Run.open(config.model_dir)
  stage = run_lib.specialist(DOTS)
  assert run.load_model(stage).output_shape == (None, 6)  # 5 subclasses + "not mine"
  assert run.metrics(stage)["steps_per_epoch"] == 4  # 40 own + 20 others, batches of 16
  images = np.random.default_rng(0).random((8, *run.image_shape), np.float32)
  out = run.load_two_stage().predict(images, mode="hard")
  assert (out["label_probs"].sum(axis=1) <= 1 + 1e-6).all()
  with pytest.raises(ValueError, match="has dustbin specialists .* cannot hold yet"):
    export_lib.export(run, str(tmp_path / "export"), log=lambda _: None)
  assert not (tmp_path / "export").exists()
