"""Promises the README makes about training, evaluation, bundles, prediction and data files.

  * the learning-rate schedule: a tenth of the peak, linear warm-up, cosine decay to 0 by the
    end; specialists at --specialist_learning_rate (default: --learning_rate);
  * what a run leaves behind: history.csv, TensorBoard logs, super-sub-eval's reports;
  * a TFLite bundle whose labels.txt or hierarchy.json disagree is refused;
  * super-sub-predict's plain and JSON-lines output;
  * super-sub-analyze's CSV predictions with `logits` or `prob_<id>` columns;
  * the dataset configs the README lists.

One smoke run (every stage, 2 epochs; specialists 1) serves the training promises.
"""

import csv
import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from super_sub._internal.compat import keras  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow_datasets as tfds  # pylint: disable=wrong-import-order

from super_sub import analysis
from super_sub import evaluation
from super_sub import hierarchy as hierarchy_lib
from super_sub import runtime
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

from conftest import SMOKE

LR, SPECIALIST_LR = 1e-3, 4e-4
# Smoke data: 21 subclasses x 8 train images = 168 = 11 batches of 16; 4 x 21 = 84 validation.
STEPS, NUM_VALIDATION = 11, 84
REPORTED_MODELS = ("flat", "two_stage_hard", "two_stage_soft", "oracle_specialists")


class _RateRecorder(keras.callbacks.Callback):
  """Per stage (the Keras model's name): the compiled schedule's config and the learning rate
  the optimizer applied at each step."""

  def __init__(self):
    super().__init__()
    self.schedules, self.rates = {}, {}

  def on_train_begin(self, logs=None):
    self.schedules[self.model.name] = self.model.optimizer.get_config()["learning_rate"]

  def on_train_batch_end(self, batch, logs=None):
    optimizer = self.model.optimizer  # learning_rate: the rate of the update just applied
    self.rates.setdefault(self.model.name, {})[int(optimizer.iterations) - 1] = float(
        optimizer.learning_rate)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_config):
  """(resolved config, rate recorder) of one smoke run of every stage."""
  recorder = _RateRecorder()
  config = fit.train(
      smoke_config(tmp_path_factory.mktemp("run"), epochs=2, specialist_epochs=1,
                   learning_rate=LR, specialist_learning_rate=SPECIALIST_LR),
      log=lambda _: None, callbacks=[recorder])
  return config, recorder


@pytest.fixture(scope="module")
def evaluated(trained):
  """eval.json's content after super-sub-eval's evaluation of the run."""
  return evaluation.evaluate(run_lib.Run(trained[0]), log=lambda _: None)


# --- the learning-rate schedule -----------------------------------------------------------------
@pytest.mark.slow
def test_flat_learning_rate_warms_up_then_decays_to_zero(trained):
  """Flat, 2 epochs of 11 steps, 1 warm-up epoch: from LR/10 linearly up to LR over steps
  0..11, then cosine decay over the remaining 11 steps, reaching 0 when training ends."""
  _, recorder = trained
  schedule = recorder.schedules["flat"]
  assert schedule["class_name"] == "CosineDecay"
  config = schedule["config"]
  assert config["initial_learning_rate"] == pytest.approx(LR / 10)
  assert config["warmup_target"] == pytest.approx(LR)
  assert config["warmup_steps"] == STEPS  # warmup_epochs (1.0) x steps
  assert config["decay_steps"] == STEPS  # epochs x steps - warm-up: the decay ends with training
  assert config["alpha"] == 0.0
  rates = recorder.rates["flat"]
  assert sorted(rates) == list(range(2 * STEPS))  # one update per step, 22 in all
  assert rates[0] == pytest.approx(1e-4)  # a tenth of the peak
  assert rates[5] == pytest.approx(1e-4 + 9e-4 * 5 / 11)  # 5/11 of the way up: 5.0909e-4
  assert rates[11] == pytest.approx(1e-3)  # the peak, as warm-up ends
  assert rates[16] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 11)))  # 5.7116e-4
  assert rates[21] == pytest.approx(2.0253e-5, rel=1e-4)  # 1e-3 x (1 + cos(10 pi / 11)) / 2
  schedule_fn = keras.optimizers.schedules.deserialize(schedule)
  assert float(schedule_fn(2 * STEPS)) == pytest.approx(0.0, abs=1e-12)  # 0 after the last step
  for step in range(STEPS):  # linear warm-up, every step
    assert rates[step] == pytest.approx(1e-4 + 9e-4 * step / STEPS), step


@pytest.mark.slow
def test_specialists_fine_tune_at_the_specialist_learning_rate(trained):
  """--specialist_learning_rate is the specialists' peak (the generalist keeps --learning_rate):
  warm-up from a tenth of it; a specialist trains on its superclass's batches only."""
  config, recorder = trained
  assert config.specialist_learning_rate == SPECIALIST_LR
  generalist = recorder.schedules["generalist"]["config"]
  assert generalist["warmup_target"] == pytest.approx(LR)
  for k, size in enumerate((4, 4, 4, 4, 5)):  # subclasses per synthetic superclass
    steps = -(-size * 8 // 16)  # 2 steps (32 images), dots: 3 steps (40 images)
    schedule = recorder.schedules[f"specialist_{k}"]["config"]
    assert schedule["warmup_target"] == pytest.approx(SPECIALIST_LR), k
    assert schedule["initial_learning_rate"] == pytest.approx(SPECIALIST_LR / 10), k
    assert schedule["warmup_steps"] == steps, k
    rates = recorder.rates[f"specialist_{k}"]
    assert sorted(rates) == list(range(steps)), k
    assert rates[0] == pytest.approx(4e-5), k
    assert rates[1] == pytest.approx(4e-5 + 3.6e-4 / steps), k


def test_specialist_learning_rate_defaults_to_learning_rate(smoke_data_dir, tmp_path):
  builder = prepare.prepare_dataset(SMOKE, data_dir=smoke_data_dir)
  plain = config_lib.TrainConfig(model_dir=str(tmp_path), dataset=SMOKE, learning_rate=3e-3)
  assert plain.specialist_learning_rate is None
  assert config_lib.resolve(plain, builder).specialist_learning_rate == 3e-3
  own = config_lib.TrainConfig(model_dir=str(tmp_path), dataset=SMOKE, learning_rate=3e-3,
                               specialist_learning_rate=5e-4)
  assert config_lib.resolve(own, builder).specialist_learning_rate == 5e-4


# --- what a run leaves behind --------------------------------------------------------------------
def _history(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_history_csv_has_one_row_per_epoch(trained):
  """history.csv: one row per epoch with the training and validation metrics; the last
  row's val_top1 and val_loss are the final weights' on the validation split."""
  config, _ = trained
  run = run_lib.Run(config)
  flat = _history(os.path.join(run.stage_dir(run_lib.FLAT), "history.csv"))
  assert list(flat[0]) == ["epoch", "loss", "top1", "top5", "val_loss", "val_top1", "val_top5"]
  assert [row["epoch"] for row in flat] == ["0", "1"]
  dots = _history(os.path.join(config.model_dir, "specialists", "4_dots", "history.csv"))
  assert list(dots[0]) == ["epoch", "loss", "top1", "val_loss", "val_top1"]  # 5 classes: no top-5
  assert [row["epoch"] for row in dots] == ["0"]
  # Recompute the last epoch's validation numbers from the saved flat model.
  model = run.load_model(run_lib.FLAT)
  spec = pipeline.InputSpec(role="flat", batch_size=84, image_size=16, augment="none")
  (images, labels), = tfds.as_numpy(
      pipeline.make_dataset(run.builder, "validation", spec, training=False))
  logits = model.predict_on_batch(images)
  correct = int(np.sum(np.argmax(logits, axis=1) == labels))
  assert float(flat[-1]["val_top1"]) == pytest.approx(correct / NUM_VALIDATION, abs=1e-6)
  loss = np.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
  assert float(flat[-1]["val_loss"]) == pytest.approx(float(loss), rel=1e-4)
  for row in flat:
    assert 0 <= float(row["top1"]) <= float(row["top5"]) <= 1


def _scalars(folder):
  """tag -> {step: value} of the scalars in a TensorBoard events folder."""
  files = glob.glob(os.path.join(folder, "events.out.tfevents.*"))
  assert files, f"no TensorBoard events file in {folder}"
  out = {}
  for path in files:
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField("tensor"):
          number = tf.make_ndarray(value.tensor)
          if number.shape == () and number.dtype.kind == "f":  # not the model's JSON
            out.setdefault(value.tag, {})[event.step] = float(number)
  return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["flat", "specialists/0_polygon"])
def test_tensorboard_logs_hold_the_epoch_metrics(trained, stage):
  """<stage>/logs/train and logs/validation: TensorBoard event files whose per-epoch loss and
  top1 are history.csv's."""
  config, _ = trained
  folder = os.path.join(config.model_dir, stage)
  rows = _history(os.path.join(folder, "history.csv"))
  train = _scalars(os.path.join(folder, "logs", "train"))
  validation = _scalars(os.path.join(folder, "logs", "validation"))
  for key, logged in (("loss", train["epoch_loss"]), ("top1", train["epoch_top1"]),
                      ("val_loss", validation["epoch_loss"]),
                      ("val_top1", validation["epoch_top1"])):
    assert sorted(logged) == list(range(len(rows))), key
    for epoch, row in enumerate(rows):
      assert logged[epoch] == pytest.approx(float(row[key]), rel=1e-6), (key, epoch)


@pytest.mark.slow
def test_eval_writes_a_report_per_subclass_model(trained, evaluated):
  """super-sub-eval: reports/<model>/index.html and report.json for flat, hard and soft
  routing and the oracle, whose numbers are eval.json's."""
  config, _ = trained
  top1 = {"flat": evaluated["flat"]["top1"],
          "two_stage_hard": evaluated["two_stage"]["hard"]["top1"],
          "two_stage_soft": evaluated["two_stage"]["soft"]["top1"],
          "oracle_specialists": evaluated["oracle_specialists"]["top1"]}
  assert sorted(os.listdir(os.path.join(config.model_dir, "reports"))) == sorted(REPORTED_MODELS)
  for model in REPORTED_MODELS:
    folder = os.path.join(config.model_dir, "reports", model)
    with open(os.path.join(folder, "index.html"), encoding="utf-8") as f:
      html = f.read()
    assert html.lstrip().lower().startswith("<!doctype html") and model in html, model
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as f:
      report = json.load(f)
    assert report["num_examples"] == NUM_VALIDATION, model
    assert report["top1"] == pytest.approx(top1[model]), model
    assert report["num_subclasses"] == 21 and report["num_superclasses"] == 5, model
  errors = evaluated["flat"]["errors"]
  with open(os.path.join(config.model_dir, "reports", "flat", "report.json"),
            encoding="utf-8") as f:
    flat_report = json.load(f)
  assert flat_report["errors"]["total"] == errors["total"] == round(
      (1 - top1["flat"]) * NUM_VALIDATION)
  # The epoch-end validation of training and super-sub-eval score the same model alike.
  rows = _history(os.path.join(config.model_dir, "flat", "history.csv"))
  assert float(rows[-1]["val_top1"]) == pytest.approx(top1["flat"], abs=1e-6)


# --- a tiny TFLite bundle ------------------------------------------------------------------------
SHAPE = (8, 8, 3)
TINY = hierarchy_lib.from_groups("tiny", [
    ("A", [("a0", 0), ("a1", 1)]),
    ("B", [("b0", 2), ("b1", 3), ("b2", 4)]),
    ("C", [("c0", 5)]),  # one subclass: no specialist
])


def _dense(width: int, seed: int) -> keras.Model:
  """Flatten + Dense: logits = image.flatten() @ kernel + bias, easy to compute by hand."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(SHAPE)
  dense = keras.layers.Dense(width, kernel_initializer=keras.initializers.RandomNormal(
      stddev=0.3), bias_initializer=keras.initializers.RandomNormal(stddev=0.5))
  return keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))


@pytest.fixture(scope="module")
def tiny_models():
  """Superclass (or "generalist") -> (kernel, bias, float .tflite bytes)."""
  out = {}
  for key, width, seed in (("generalist", 3, 0), (0, 2, 1), (1, 3, 2)):
    model = _dense(width, seed)
    kernel, bias = model.layers[-1].get_weights()
    out[key] = (kernel, bias, tf.lite.TFLiteConverter.from_keras_model(model).convert())
  return out


@pytest.fixture(scope="module")
def tiny_bundle(tiny_models, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("export") / "tflite")
  runtime.write_tflite_bundle(out, TINY, tiny_models["generalist"][2],
                              {k: tiny_models[k][2] for k in (0, 1)},
                              {"shape": list(SHAPE), "dtype": "float32", "range": [0, 1]})
  return out


def _copy_with(bundle, folder, contents):
  """A copy of `bundle` in `folder` with files (relative path -> text) replaced and their size
  and sha256 listed anew, so only their content can be wrong."""
  copy = str(folder / "tflite")
  shutil.copytree(bundle, copy)
  manifest_path = os.path.join(copy, "manifest.json")
  with open(manifest_path, encoding="utf-8") as f:
    manifest = json.load(f)
  for rel, text in contents.items():
    data = text.encode("utf-8")
    with open(os.path.join(copy, rel), "wb") as f:
      f.write(data)
    manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  with open(manifest_path, "w", encoding="utf-8") as f:
    json.dump(manifest, f)
  return copy


def _labels(names):
  return "".join(n + "\n" for n in names)


def test_tiny_bundle_loads_untouched(tiny_bundle, tmp_path):
  """The reference point of the tests below: the bundle, and a copy re-listed unchanged, load."""
  assert runtime.load_bundle(tiny_bundle).hierarchy == TINY
  copy = _copy_with(tiny_bundle, tmp_path, {"labels.txt": _labels(TINY.subclass_names)})
  assert runtime.load_bundle(copy).hierarchy.subclass_names == TINY.subclass_names


@pytest.mark.parametrize("names", [
    ["a1", "a0", "b0", "b1", "b2", "c0"],  # two names swapped
    ["a0", "a1", "b0", "b1", "b2"],  # one missing
    ["a0", "a1", "b0", "b1", "b2", "c0", "d0"],  # one too many
], ids=["swapped", "missing", "extra"])
def test_labels_txt_that_disagrees_with_the_hierarchy_is_refused(tiny_bundle, tmp_path, names):
  copy = _copy_with(tiny_bundle, tmp_path, {"labels.txt": _labels(names)})
  with pytest.raises(runtime.BundleError, match=r"labels\.txt: does not list the hierarchy's "
                     r"6 subclass names in order"):
    runtime.load_bundle(copy)


def test_hierarchy_json_with_another_subclass_order_is_refused(tiny_bundle, tmp_path):
  """hierarchy.json with A's subclasses swapped: labels.txt (the models' order) disagrees."""
  swapped = hierarchy_lib.from_groups("tiny", [
      ("A", [("a1", 1), ("a0", 0)]), ("B", [("b0", 2), ("b1", 3), ("b2", 4)]),
      ("C", [("c0", 5)])])
  copy = _copy_with(tiny_bundle, tmp_path, {"hierarchy.json": json.dumps(swapped.to_dict())})
  with pytest.raises(runtime.BundleError, match=r"labels\.txt: does not list"):
    runtime.load_bundle(copy)


def test_hierarchy_json_with_other_counts_is_refused(tiny_bundle, tmp_path):
  """A hierarchy (and labels.txt) with another subclass or superclass count than the models:
  refused, naming the model that does not fit, before it classifies anything."""
  fewer = hierarchy_lib.from_groups("tiny", [  # B lost b2: its specialist has 1 logit too many
      ("A", [("a0", 0), ("a1", 1)]), ("B", [("b0", 2), ("b1", 3)]), ("C", [("c0", 5)])])
  copy = _copy_with(tiny_bundle, tmp_path / "fewer", {
      "hierarchy.json": json.dumps(fewer.to_dict()), "labels.txt": _labels(fewer.subclass_names)})
  lite = runtime.TwoStageLite(copy)
  with pytest.raises(runtime.BundleError, match=r"specialist 1 \('B'\) outputs 3 logits; the "
                     r"hierarchy needs 2"):
    lite.predict(np.zeros((1, *SHAPE), np.float32), mode="soft", k=3)
  more = hierarchy_lib.from_groups("tiny", [  # a 4th superclass: the generalist has 3 logits
      ("A", [("a0", 0), ("a1", 1)]), ("B", [("b0", 2), ("b1", 3), ("b2", 4)]),
      ("C", [("c0", 5)]), ("D", [("d0", 6)])])
  copy = _copy_with(tiny_bundle, tmp_path / "more", {
      "hierarchy.json": json.dumps(more.to_dict()), "labels.txt": _labels(more.subclass_names)})
  with pytest.raises(runtime.BundleError, match=r"generalist outputs 3 logits; the hierarchy "
                     r"needs 4"):
    runtime.TwoStageLite(copy)


# --- super-sub-predict ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(7)
  paths = []
  for i in range(4):
    paths.append(str(folder / f"image{i}.png"))
    Image.fromarray(rng.integers(0, 256, SHAPE, dtype=np.uint8)).save(paths[-1])
  return paths


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _by_hand(tiny_models, images, k):
  """(superclass probs, label probs) of soft routing over the top-k superclasses, from the
  Dense weights: P(label) = P(superclass) x P(label | superclass)."""
  x = images.reshape(len(images), -1).astype(np.float64) / 255
  kernel, bias, _ = tiny_models["generalist"]
  supers = _softmax(x @ kernel + bias)
  labels = np.zeros((len(x), TINY.num_subclasses))
  for i in range(len(x)):
    for sup in np.argsort(-supers[i], kind="stable")[:k]:
      span = TINY.subclass_range(sup)
      if len(span) == 1:
        labels[i, span.start] = supers[i, sup]
      else:
        kernel, bias, _ = tiny_models[sup]
        labels[i, span.start:span.stop] = supers[i, sup] * _softmax(x[i] @ kernel + bias)
  return supers, labels


def _predict_cli(*args):
  result = subprocess.run([sys.executable, "-m", "super_sub.export.predict", *args],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.splitlines()


def test_predict_cli_plain_output(tiny_bundle, pngs):
  """One tab-separated line per image: path, superclass (prob), label (joint prob, prob given
  its superclass), hard routing."""
  lines = _predict_cli(f"--bundle={tiny_bundle}", *pngs)
  lite = runtime.TwoStageLite(tiny_bundle)
  out = lite.predict(runtime.load_images(pngs, lite.input_shape), mode="hard")
  assert len(lines) == len(pngs)
  for i, (line, path) in enumerate(zip(lines, pngs)):
    sup, label = int(out["superclass"][i]), int(out["label"][i])
    assert TINY.superclass_of[label] == sup  # hard routing: the label is in the superclass
    p_sup = float(out["superclass_probs"][i, sup])
    p_label = float(out["label_probs"][i, label])  # hard routing: P(label | superclass)
    assert line == (f"{path}\t{TINY.superclass_names[sup]} ({p_sup:.3f})\t"
                    f"{TINY.subclass_names[label]} ({round(p_sup * p_label, 6):.3f} joint, "
                    f"{round(p_label, 6):.3f} given its superclass)")


def test_predict_cli_soft_json_lines(tiny_bundle, tiny_models, pngs):
  """--mode=soft --soft_k=2 --json: one JSON object per image, the runtime's soft routing, whose
  numbers are P(superclass) x P(label | superclass) of the top-2 superclasses."""
  lines = _predict_cli(f"--bundle={tiny_bundle}", "--mode=soft", "--soft_k=2", "--json", *pngs)
  lite = runtime.TwoStageLite(tiny_bundle)
  images = runtime.load_images(pngs, lite.input_shape)
  out = lite.predict(images, mode="soft", k=2)
  supers, labels = _by_hand(tiny_models, images, k=2)
  np.testing.assert_allclose(out["superclass_probs"], supers, atol=1e-5)
  np.testing.assert_allclose(out["label_probs"], labels, atol=1e-5)
  rows = [json.loads(line) for line in lines]
  assert len(rows) == len(pngs)
  for i, (row, path) in enumerate(zip(rows, pngs)):
    assert list(row) == ["image", "superclass", "superclass_index", "superclass_prob", "label",
                         "label_index", "label_prob", "label_prob_given_superclass",
                         "label_prob_joint"]
    sup, label = int(out["superclass"][i]), int(out["label"][i])
    assert (sup, label) == (np.argmax(supers[i]), np.argmax(labels[i]))
    assert row == {"image": path, "superclass": TINY.superclass_names[sup],
                   "superclass_index": sup,
                   "superclass_prob": round(float(out["superclass_probs"][i, sup]), 6),
                   "label": TINY.subclass_names[label], "label_index": label,
                   "label_prob": round(float(out["label_probs"][i, label]), 6),
                   # soft routing: label_prob is the joint probability
                   "label_prob_given_superclass": row["label_prob_given_superclass"],
                   "label_prob_joint": round(float(out["label_probs"][i, label]), 6)}
    own = TINY.superclass_of[label]
    assert row["label_prob_given_superclass"] == pytest.approx(
        out["label_probs"][i, label] / supers[i, own], abs=1e-5)



def test_predict_cli_cache_dir_keeps_rebuilt_specialists_and_refuses_a_file(tiny_bundle, pngs,
                                                                            tmp_path):
  """--cache_dir: the same output, with the routed specialists written there as verified
  .tflite files (named by sha256) for the next run, and with --packed_weights LiteRT's packed
  weights too; a cache_dir that is a file is an error."""
  plain = _predict_cli(f"--bundle={tiny_bundle}", "--mode=soft", "--soft_k=2", *pngs)
  cache = tmp_path / "cache"
  assert _predict_cli(f"--bundle={tiny_bundle}", f"--cache_dir={cache}", "--mode=soft", "--soft_k=2",
                      *pngs) == plain
  bundle = runtime.load_bundle(tiny_bundle)
  written = sorted(os.listdir(cache))
  assert written and all(name.endswith(".tflite") for name in written)
  for name in written:
    assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == name[:-len(".tflite")]
  assert set(written) <= {bundle.specialist_sha256(k).hex() + ".tflite" for k in bundle.deltas}
  assert _predict_cli(f"--bundle={tiny_bundle}", f"--cache_dir={cache}", "--mode=soft", "--soft_k=2",
                      *pngs) == plain
  packed = tmp_path / "packed"
  assert _predict_cli(f"--bundle={tiny_bundle}", f"--cache_dir={packed}", "--packed_weights",
                      "--mode=soft", "--soft_k=2", *pngs) == plain
  assert sorted(os.listdir(packed)) == sorted(  # with LiteRT's packed weights and their records
      name[:-len(".tflite")] + suffix for name in written
      for suffix in (".tflite", ".xnnpack", ".xnnpack.json"))
  result = subprocess.run([sys.executable, "-m", "super_sub.export.predict",
                           f"--bundle={tiny_bundle}", f"--cache_dir={pngs[0]}", *pngs],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0 and "is a file; expected a folder" in result.stderr

# --- CSV predictions for super-sub-analyze -------------------------------------------------------
def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return path


def test_read_predictions_csv_with_logits(tmp_path):
  """A `logits` column (space separated) becomes softmax probabilities; predictions and top-5
  are their argmax and ranking. Logits are logs of small integers, so probs are fractions."""
  ln = math.log
  path = _write(tmp_path / "logits.csv", "label,logits,file_name\n"
                f"1,{0.0} {ln(3)} {ln(2)},a.png\n"  # 1 : 3 : 2
                f"2,{ln(4)} {0.0} {ln(3)},b.png\n"  # 4 : 1 : 3
                f"2,{0.0} {ln(2)} {ln(5)},c.png\n")  # 1 : 2 : 5
  p = analysis.read_predictions(path)
  np.testing.assert_allclose(p.probs, [[1 / 6, 3 / 6, 2 / 6], [4 / 8, 1 / 8, 3 / 8],
                                       [1 / 8, 2 / 8, 5 / 8]], atol=1e-12)
  np.testing.assert_array_equal(p.labels, [1, 2, 2])
  np.testing.assert_array_equal(p.predictions, [1, 0, 2])
  np.testing.assert_array_equal(p.top5, [[1, 2, 0], [0, 2, 1], [2, 1, 0]])
  assert list(p.file_names) == ["a.png", "b.png", "c.png"]
  assert p.label_space == "subclass"


def test_read_predictions_csv_with_prob_columns(tmp_path):
  """`prob_<id>` columns in any order fill column <id> of the probabilities (missing ids: 0);
  a `prediction` column that disagrees with their argmax is refused, with the rows counted."""
  path = _write(tmp_path / "probs.csv", "label,prob_0,prob_3,prob_1\n"
                "3,0.2,0.7,0.1\n"
                "0,0.5,0.2,0.3\n"
                "1,0.1,0.3,0.6\n")
  p = analysis.read_predictions(path)
  np.testing.assert_allclose(p.probs, [[0.2, 0.1, 0, 0.7], [0.5, 0.3, 0, 0.2],
                                       [0.1, 0.6, 0, 0.3]])
  np.testing.assert_array_equal(p.predictions, [3, 0, 1])
  np.testing.assert_array_equal(p.top5, [[3, 0, 1, 2], [0, 1, 3, 2], [1, 3, 0, 2]])
  given = _write(tmp_path / "given.csv", "label,prediction,prob_0,prob_1\n"
                 "0,1,0.9,0.1\n"
                 "1,1,0.4,0.6\n")
  with pytest.raises(analysis.AnalysisError, match=r"given.csv: field 'predictions' disagrees "
                     r"with the arg-max of 'probs' in 1 of 2 rows"):
    analysis.read_predictions(given)  # top-1 would be [1, 1], top-5's first [0, 1]


# --- dataset configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [
    ("superclassed_synthetic", (32, 32, 3)),  # the default config, 32px
    ("superclassed_synthetic/32px", (32, 32, 3)),
    ("superclassed_synthetic/64px", (64, 64, 3)),
    ("superclassed_synthetic/smoke", (16, 16, 3)),
    ("superclassed_imagenet/32x32", (32, 32, 3)),
    ("superclassed_imagenet/64x64", (64, 64, 3)),
    ("superclassed_imagenet/128x128", (128, 128, 3)),
    ("superclassed_imagenet/full", (None, None, 3)),
])
def test_dataset_configs_have_their_image_shapes(name, shape, tmp_path):
  """The configs the README lists exist, with their image shape (no data is built)."""
  builder = tfds.builder(name, data_dir=str(tmp_path))
  features = builder.info.features
  assert features["image"].shape == shape
  assert {"image", "label", "superclass", "subclass", "file_name"} <= set(features.keys())
  assert list(features["label"].names) == builder.hierarchy.subclass_names
