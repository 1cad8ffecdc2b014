"""Fixtures every test module shares: the one smoke configuration of a training run."""

import os

import numpy as np
import pytest

from super_sub import configs
from super_sub.training import config as config_lib

# The smoke variant of the demo's recipe: the synthetic dataset's `smoke` config (16 px, 8
# training images a class; builds in seconds), one epoch a stage.
SMOKE_RUN = configs.get("synthetic_demo.smoke")
SMOKE = SMOKE_RUN["dataset"]


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


def train_run(config, evaluate: bool = False):
  """The trained `super_sub.training.run.Run` of `config` (silent), evaluated if asked."""
  from super_sub import evaluation  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  run = run_lib.Run(fit.train(config, log=lambda _: None))
  if evaluate:
    evaluation.evaluate(run, log=lambda _: None)
  return run


def export_run(run, tmp_path_factory) -> tuple[str, dict]:
  """(export_dir, manifest) of `run` exported silently into a fresh folder."""
  from super_sub.bundles import export as export_lib  # pylint: disable=import-outside-toplevel
  export_dir = str(tmp_path_factory.mktemp("export") / "bundle")
  return export_dir, export_lib.export(run, export_dir, log=lambda _: None)


def assert_bundle_matches_keras(run, tflite_dir: str, atol: float, router=None) -> None:
  """The TFLite bundle (hard routing) answers as the Keras two-stage model did in
  super-sub-eval (model_dir/predictions/), image by image, up to int8 noise. Its superclass
  probabilities are the generalist's there, or those of `router` (a Keras router head) when
  given.

  int8 moves a probability by up to about `atol` on most images and never by more than 4 *
  atol. Matching answers alone prove little on a smoke run near chance, and demanding them on
  every image fails on near-ties, so:
  - superclass probabilities: within 4 * atol everywhere, within atol on 95% of the images;
  - routing: the Keras superclass on every image whose Keras margin (top-1 minus top-2
    superclass probability) exceeds 6 * atol, i.e. which noise cannot flip;
  - on images routed alike, the label probabilities to the same tolerances, and the Keras
    label wherever its margin exceeds 6 * atol.
  """
  from super_sub.routing import core  # pylint: disable=import-outside-toplevel
  from super_sub.runtime import predictor  # pylint: disable=import-outside-toplevel
  folder = os.path.join(run.model_dir, "predictions")
  with np.load(os.path.join(folder, "two_stage_hard.npz")) as two_stage, \
       np.load(os.path.join(folder, "generalist.npz")) as generalist:
    assert two_stage["file_names"].tolist() == generalist["file_names"].tolist()
    keras = {"label_probs": two_stage["probs"], "superclass_probs": generalist["probs"]}
    names = two_stage["file_names"].tolist()
  lite = predictor.TwoStageLite(tflite_dir)
  got = {key: np.zeros_like(value) for key, value in keras.items()}
  seen = np.zeros(len(names), bool)
  row = {name: i for i, name in enumerate(names)}
  for images, _, meta in _evaluation_batches(run):
    out = lite.predict(images, mode="hard")
    rows = [row[n.decode("utf-8")] for n in meta["file_name"]]
    seen[rows] = True
    for key in got:
      got[key][rows] = out[key]
    if router is not None:
      keras["superclass_probs"][rows] = core.softmax(router.predict_on_batch(images))
  assert seen.all(), f"{np.sum(~seen)} evaluated images not in the evaluation split"

  def assert_close(actual, desired, what):
    error = np.abs(actual - desired).max(axis=1)
    assert np.max(error, initial=0) <= 4 * atol, f"{what}: max error {np.max(error):.3f}"
    assert np.mean(error <= atol) >= 0.95, f"{what}: {np.mean(error > atol):.1%} beyond {atol}"

  def decisive(probs):
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] > 6 * atol

  supers, keras_supers = got["superclass_probs"], keras["superclass_probs"]
  assert_close(supers, keras_supers, "superclass probabilities")
  routed_alike = supers.argmax(1) == keras_supers.argmax(1)
  assert routed_alike[decisive(keras_supers)].all(), "routing differs on a decisive image"
  labels, keras_labels = got["label_probs"][routed_alike], keras["label_probs"][routed_alike]
  assert_close(labels, keras_labels, "label probabilities")
  same_label = labels.argmax(1) == keras_labels.argmax(1)
  assert same_label[decisive(keras_labels)].all(), "label differs on a decisive image"


def _evaluation_batches(run):
  """(images, labels, metadata) numpy batches of the run's evaluation split."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  spec = run.evaluation_input(256)
  return tfds.as_numpy(pipeline.make_dataset(run.builder, run.evaluation_split, spec,
                                             training=False, with_metadata=True))
