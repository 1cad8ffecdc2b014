"""Dustbin specialists: their training data, their training, and what refuses them."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub.bundles import export as export_lib
from super_sub.data import pipeline
from super_sub.models import classifiers
from super_sub.data import prepare
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

from conftest import SMOKE
from conftest import softmax

DOTS = 4  # smoke data: 5 subclasses x 8 training images; the other 4 superclasses hold 128


@pytest.fixture(scope="module")
def builder(smoke_data_dir):
  return prepare.prepare_dataset(SMOKE, data_dir=smoke_data_dir)


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


def _validation_images(run):
  """The run's validation images, as its evaluation reads them (model-ready floats)."""
  spec = run.evaluation_input(256)
  ds = pipeline.make_dataset(run.builder, run.evaluation_split, spec, training=False)
  return np.concatenate([x for x, _ in tfds.as_numpy(ds)])


@pytest.mark.slow
def test_dustbin_specialists_train_route_and_refuse_export(tmp_path, smoke_config):
  config = fit.train(smoke_config(tmp_path / "run", dustbin=0.5), log=lambda _: None)
  run = run_lib.Run.open(config.model_dir)
  h = run.hierarchy
  stage = run_lib.specialist(DOTS)
  assert run.load_model(stage).output_shape == (None, 6)  # 5 subclasses + "not mine"
  assert run.metrics(stage)["steps_per_epoch"] == 4  # 40 own + 20 others, batches of 16

  # Hard routing on the trained run, with one specialist made to say "not mine" decisively:
  # the superclass the generalist routes most validation images to. Its images must then be
  # answered by the generalist's second choice's specialist, as computed here by hand from
  # the models' own outputs.
  two_stage = run.load_two_stage()
  images = _validation_images(run)
  supers = softmax(two_stage.generalist(images, training=False).numpy())
  order = np.argsort(-supers, axis=1, kind="stable")
  refusing = int(np.bincount(order[:, 0], minlength=h.num_superclasses).argmax())
  head = two_stage.specialists[refusing].get_layer(classifiers.HEAD_NAME)
  kernel, bias = head.get_weights()
  head.set_weights([kernel, np.concatenate([bias[:-1], [100.0]]).astype(np.float32)])
  own = {k: softmax(m(images, training=False).numpy()) for k, m in two_stage.specialists.items()}
  assert (own[refusing].argmax(axis=1) == len(h.subclass_range(refusing))).all()  # "not mine"

  expected = np.zeros((len(images), h.num_subclasses))
  fell_back = np.zeros(len(images), bool)
  for i, (first, second) in enumerate(order[:, :2]):
    width = len(h.subclass_range(first))
    answer = first
    if own[first].shape[1] == width + 1 and own[first][i].argmax() == width:
      answer, fell_back[i] = second, True
    columns = h.subclass_range(answer)
    # The dustbin's column is dropped, the rest kept as they are (not renormalised).
    expected[i, columns.start:columns.stop] = own[answer][i, :len(columns)]
  routed_to_refusing = order[:, 0] == refusing
  assert routed_to_refusing.sum() >= 1 and fell_back[routed_to_refusing].all()

  out = two_stage.predict(images, mode="hard")
  np.testing.assert_array_equal(out["superclass"], order[:, 0])
  # float32 softmax against float64: 1e-6 on probabilities in [0, 1].
  np.testing.assert_allclose(out["label_probs"], expected, atol=1e-6)
  np.testing.assert_array_equal(out["label"], expected.argmax(axis=1))
  second_columns = [h.subclass_range(s) for s in order[routed_to_refusing, 1]]
  assert all(c.start <= label < c.stop
             for label, c in zip(out["label"][routed_to_refusing], second_columns))
  assert (out["label_probs"].sum(axis=1) <= 1 + 1e-6).all()

  with pytest.raises(ValueError, match="has dustbin specialists .* cannot hold yet"):
    export_lib.export(run, str(tmp_path / "export"), log=lambda _: None)
  assert not (tmp_path / "export").exists()
