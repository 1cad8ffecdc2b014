"""Fixtures every test module shares: the global test seed and the one smoke configuration of
a training run."""

import os
import random
import sys
import zlib

import numpy as np
import pytest

from super_sub import configs
from super_sub.training import config as config_lib

# The smoke variant of the demo's recipe: the synthetic dataset's `smoke` config (16 px, 8
# training images a class; builds in seconds), one epoch a stage.
SMOKE_RUN = configs.get("synthetic_demo.smoke")
SMOKE = SMOKE_RUN["dataset"]


# --- the global test seed ----------------------------------------------------------------------
# Every test and every module starts from a seed drawn from the global seed and its own name, so
# no expectation rests on whatever an earlier test left in the random state, and the whole
# suite can be re-run under other draws: `pytest --seed=N` or SUPER_SUB_TEST_SEED=N. Smoke
# trainings take the global seed as their TrainConfig.seed.


def pytest_addoption(parser):
  parser.addoption("--seed", type=int, default=None,
                   help="global seed of the suite (default: $SUPER_SUB_TEST_SEED, else 0)")


def pytest_configure(config):
  global GLOBAL_SEED  # pylint: disable=global-statement
  seed = config.getoption("--seed")
  GLOBAL_SEED = int(os.environ.get("SUPER_SUB_TEST_SEED", "0")) if seed is None else seed


def pytest_report_header(config):  # pylint: disable=unused-argument
  return f"super-sub global test seed: {GLOBAL_SEED} (--seed=N or SUPER_SUB_TEST_SEED=N)"


GLOBAL_SEED = 0


def seed_everything(name: str) -> int:
  """Seeds Python, NumPy and (once imported) TensorFlow from the global seed and `name`;
  returns the seed. Call it at the top of a module- or session-scoped fixture that draws."""
  seed = zlib.crc32(f"{GLOBAL_SEED}:{name}".encode()) % 2**31
  random.seed(seed)
  np.random.seed(seed)
  if "tensorflow" in sys.modules:
    from super_sub._internal.compat import keras  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(seed)
  return seed


@pytest.fixture(autouse=True, scope="module")
def _seed_module(request):
  """Seeds before the module's own module-scoped fixtures run."""
  seed_everything(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seed_test(request):
  """Seeds each test by its id: the same draws whatever ran before it."""
  seed_everything(request.node.nodeid)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory) -> str:
  """One TFDS folder for the whole session: the smoke data is built once."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def smoke_config(smoke_data_dir):
  """A factory: smoke_config(model_dir, **overrides) -> the smoke TrainConfig of a run."""
  def make(model_dir, **overrides) -> config_lib.TrainConfig:
    return config_lib.TrainConfig(**{"model_dir": str(model_dir), "data_dir": smoke_data_dir,
                                     "seed": GLOBAL_SEED, **SMOKE_RUN, **overrides})
  return make


def softmax(logits) -> np.ndarray:
  """Row-wise softmax in float64, written out here so that tests compare the library's
  probabilities against a computation that does not share its code."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


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


def assert_bundle_matches_keras(run, tflite_dir: str, atol: float, router=None,
                                min_per_specialist: int = 8,
                                min_decisive: float = 1 / 3) -> dict[str, object]:
  """The TFLite bundle (hard routing) answers as the Keras two-stage model did in
  super-sub-eval (model_dir/predictions/), image by image, up to int8 noise. Its superclass
  probabilities are the generalist's there, or those of `router` (a Keras router head) when
  given. Run it on a run whose routing is known (`known_routing.make_routing_known`): the
  Keras routing must send at least `min_per_specialist` images to every specialist, so the
  comparison reaches each of them.

  int8 noise in the logits moves a probability most next to a tie, where a steep head (as
  known routing's) can move it by a third, so answers and probabilities are compared where
  noise cannot flip them: on the decisive images, whose Keras margin (top-1 minus top-2
  probability) exceeds 6 * atol. There:
  - routing: the Keras superclass on every decisive image;
  - superclass probabilities: within 4 * atol on every decisive image, within atol on 90%;
  - on images routed alike, the label probabilities to the same tolerances, and the Keras
    label on every image whose label is decisive.
  At least `min_decisive` of the images must be decisive for routing, and of the images routed
  alike for labels, or the check has checked too little and fails. (Measured on smoke runs
  with known routing, atol 0.05, seeds 0-2: 42-67% decisive, at most 5% of them beyond atol.)

  Returns what it checked: {"images", "per_specialist": {k: images routed there},
  "decisive_routing", "decisive_labels"}.
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

  supers, keras_supers = got["superclass_probs"], keras["superclass_probs"]
  routed = np.bincount(keras_supers.argmax(1), minlength=run.hierarchy.num_superclasses)
  per_specialist = {int(k): int(routed[k]) for k in run.hierarchy.specialist_superclasses()}
  assert min(per_specialist.values()) >= min_per_specialist, (
      f"images routed to each specialist by Keras: {per_specialist}; the check needs "
      f">= {min_per_specialist} for every one")

  def decisive(probs, what):
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 6 * atol
    assert clear.mean() >= min_decisive, (
        f"{what}: only {clear.sum()} of {len(clear)} images decisive (margin > {6 * atol:.2f}); "
        f"the check needs {min_decisive:.0%}")
    return clear

  def assert_close(actual, desired, clear, what):
    error = np.abs(actual - desired).max(axis=1)[clear]
    assert np.max(error, initial=0) <= 4 * atol, (
        f"{what}: max error {np.max(error):.3f} on a decisive image")
    beyond = np.mean(error > atol)
    assert beyond <= 0.1, (f"{what}: {beyond:.1%} of the decisive images beyond {atol} (90th "
                           f"percentile {np.quantile(error, 0.9):.3f})")

  clear_routing = decisive(keras_supers, "routing")
  assert_close(supers, keras_supers, clear_routing, "superclass probabilities")
  routed_alike = supers.argmax(1) == keras_supers.argmax(1)
  assert routed_alike[clear_routing].all(), "routing differs on a decisive image"
  labels, keras_labels = got["label_probs"][routed_alike], keras["label_probs"][routed_alike]
  clear_labels = decisive(keras_labels, "labels")
  assert_close(labels, keras_labels, clear_labels, "label probabilities")
  same_label = labels.argmax(1) == keras_labels.argmax(1)
  assert same_label[clear_labels].all(), "label differs on a decisive image"
  print(f"bundle parity: {len(names)} images, per specialist {per_specialist}, decisive "
        f"routing {clear_routing.sum()}, decisive labels {clear_labels.sum()}")
  return {"images": len(names), "per_specialist": per_specialist,
          "decisive_routing": int(clear_routing.sum()), "decisive_labels": int(clear_labels.sum())}


def _evaluation_batches(run):
  """(images, labels, metadata) numpy batches of the run's evaluation split."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  spec = run.evaluation_input(256)
  return tfds.as_numpy(pipeline.make_dataset(run.builder, run.evaluation_split, spec,
                                             training=False, with_metadata=True))
