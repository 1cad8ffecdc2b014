"""Training and evaluation end to end on the synthetic `smoke` config (16 px, 8 images a class)."""

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub import evaluation
from super_sub.routing import core
from super_sub import hierarchy as hierarchy_lib
from super_sub.data import pipeline
from super_sub.data import synthetic
from super_sub.runtime import predictor
from super_sub._internal.compat import keras
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

from conftest import SMOKE


@pytest.fixture(scope="module")
def data_dir(smoke_data_dir):
  return smoke_data_dir


@pytest.fixture(scope="module")
def _config(smoke_config):
  def make(model_dir, data_dir, **overrides):
    return smoke_config(model_dir, data_dir=data_dir, learning_rate=1e-3, **overrides)
  return make


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _config, data_dir):
  """One run of every stage (5 specialists: every synthetic superclass has >= 4 subclasses)."""
  model_dir = tmp_path_factory.mktemp("run")
  config = fit.train(_config(model_dir, data_dir))
  return config


def _validation_top1(run, stage) -> float:
  """Top-1 of `stage`'s saved weights on the run's validation split, computed here: the
  targets from each image's own label and superclass (not the training pipeline's), a
  specialist on its superclass's images only."""
  model = run.load_model(stage)
  h = run.hierarchy
  ds = pipeline.make_dataset(run.builder, run.evaluation_split, run.evaluation_input(256),
                             training=False, with_metadata=True)
  correct = total = 0
  for images, _, meta in tfds.as_numpy(ds):
    labels, supers = meta["label"], meta["superclass"]
    if stage.role == "specialist":
      keep = supers == stage.superclass
      images, targets = images[keep], labels[keep] - h.subclass_range(stage.superclass).start
    else:
      targets = supers if stage.role == "generalist" else labels
    if len(images):
      correct += int(np.sum(model.predict_on_batch(images).argmax(axis=1) == targets))
      total += len(targets)
  return correct / total


@pytest.mark.slow
def test_every_stage_leaves_weights_and_metrics(trained):
  h = synthetic.load_hierarchy()
  run = trained.model_dir
  expected = ["flat", "generalist"] + [
      f"specialists/{k}_{sup.name}" for k, sup in enumerate(h.superclasses)]
  finals = {}
  for stage in expected:
    with open(os.path.join(run, stage, "metrics.json"), encoding="utf-8") as f:
      metrics = json.load(f)
    assert metrics["epochs"] == 1
    finals[stage] = metrics["final"]["val_top1"]
    # final is the last epoch of the history, and that is CSVLogger's last row on disk.
    assert finals[stage] == metrics["history"]["val_top1"][-1]
    with open(os.path.join(run, stage, "history.csv"), encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[-1]["val_top1"]) == finals[stage]
    assert os.path.exists(os.path.join(run, stage, "weights", "model.index"))
    assert not os.path.exists(os.path.join(run, stage, "backup"))  # removed when finished
  # val_top1 is what the saved weights score on the validation split, recomputed here (Keras
  # keeps it as a float32: 1e-6 covers that rounding, not one image of 84 or of 20 = 0.01).
  opened = run_lib.Run(trained)
  assert finals["flat"] == pytest.approx(_validation_top1(opened, run_lib.FLAT), abs=1e-6)
  assert finals["generalist"] == pytest.approx(
      _validation_top1(opened, run_lib.GENERALIST), abs=1e-6)
  assert finals["specialists/4_dots"] == pytest.approx(
      _validation_top1(opened, run_lib.specialist(4)), abs=1e-6)
  with open(os.path.join(run, "specialists/4_dots/metrics.json"), encoding="utf-8") as f:
    dots = json.load(f)
  # The dots specialist saw only its superclass: 5 subclasses x 8 images = 40, batch 16.
  assert (dots["superclass_name"], dots["steps_per_epoch"]) == ("dots", 3)
  with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert (saved["image_size"], saved["augment"], saved["hierarchy"]) == (
      16, "crop", "superclassed_synthetic")


@pytest.mark.slow
def test_specialist_starts_from_generalist(trained):
  run = run_lib.Run(trained)
  generalist = run.load_model(run_lib.GENERALIST)
  specialist = run.load_model(run_lib.specialist(0))
  assert specialist.output_shape == (None, 4)
  # Same architecture below the head; fine-tuning moved the weights away from the generalist.
  backbone_g = [v.numpy() for v in generalist.weights[:-2]]
  backbone_s = [v.numpy() for v in specialist.weights[:-2]]
  assert [w.shape for w in backbone_g] == [w.shape for w in backbone_s]
  kernels = [i for i, v in enumerate(specialist.weights[:-2]) if "kernel" in v.name]
  moved = [i for i in kernels if not np.array_equal(backbone_g[i], backbone_s[i])]
  assert len(moved) == len(kernels)  # every backbone kernel was fine-tuned (no freezing)


@pytest.mark.slow
def test_rerun_skips_finished_stages(trained):
  lines = []
  fit.train(dataclasses.replace(trained), log=lines.append)
  assert all("already trained" in line for line in lines), lines
  assert len(lines) == 7


@pytest.mark.slow
def test_evaluation_writes_eval_json_and_predictions(trained):
  result = evaluation.evaluate(run_lib.Run(trained), log=lambda _: None)
  h = synthetic.load_hierarchy()
  with open(os.path.join(trained.model_dir, "eval.json"), encoding="utf-8") as f:
    assert json.load(f) == result
  n = 4 * h.num_subclasses
  assert (result["split"], result["num_examples"]) == ("validation", n)
  for errors in (result["flat"]["errors"], result["two_stage"]["hard"]["errors"]):
    assert errors["within_superclass"] + errors["across_superclass"] == errors["total"]
  assert errors["total"] == round((1 - result["two_stage"]["hard"]["top1"]) * n)
  assert set(result["oracle_specialists"]["per_superclass"]) == set(h.superclass_names)
  assert set(result["flat_per_superclass"]) == set(h.superclass_names)
  assert result["two_stage"]["soft"]["k"] == 2
  for name in ("flat", "generalist", "two_stage_hard", "two_stage_soft", "oracle_specialists"):
    with np.load(os.path.join(trained.model_dir, "predictions", f"{name}.npz"),
                 allow_pickle=False) as npz:
      assert npz["labels"].shape == (n,)
      assert npz["top5"].shape == (n, 5)
      np.testing.assert_array_equal(npz["top5"][:, 0], npz["predictions"])
      total = npz["probs"].sum(axis=1)
      if name == "two_stage_soft":  # P(super) x P(sub | super) over the top-2 superclasses only
        assert np.all((total > 0) & (total <= 1 + 1e-4))
      else:
        np.testing.assert_allclose(total, 1.0, atol=1e-4)
      assert npz["file_names"][0].startswith("validation/")
  with np.load(os.path.join(trained.model_dir, "predictions", "flat.npz")) as npz:
    assert np.mean(npz["labels"] == npz["predictions"]) == pytest.approx(result["flat"]["top1"])
    flat_supers = core.superclass_probs(npz["probs"], h).argmax(axis=1)
    true_supers = h.superclass_of[npz["labels"]]
  routers = result["routers"]
  assert set(routers) == {"generalist", "flat", "product"}
  assert routers["generalist"]["hard_top1"] == result["two_stage"]["hard"]["top1"]
  assert routers["generalist"]["soft_top1"] == result["two_stage"]["soft"]["top1"]
  assert routers["generalist"]["superclass_top1"] == result["generalist"]["superclass_top1"]
  assert routers["flat"]["superclass_top1"] == pytest.approx(np.mean(flat_supers == true_supers))
  for r in routers.values():
    assert r["routing_loss"] == pytest.approx(result["oracle_specialists"]["top1"]
                                              - r["hard_top1"])
  product = evaluation.evaluate(run_lib.Run(trained), router="product", log=lambda _: None)
  assert product["two_stage"]["router"] == "product"
  assert product["two_stage"]["hard"]["top1"] == product["routers"]["product"]["hard_top1"]


@pytest.mark.slow
def test_other_backbone_in_same_model_dir_is_refused(trained):
  config_path = os.path.join(trained.model_dir, "config.json")
  before = open(config_path, encoding="utf-8").read()
  with pytest.raises(ValueError, match="backbone: model_dir has 'small_resnet', asked for "
                     "'mobilenet_v2'"):
    fit.train(dataclasses.replace(trained, backbone="mobilenet_v2"))
  assert open(config_path, encoding="utf-8").read() == before


@pytest.mark.slow
def test_specialists_need_a_generalist(tmp_path, data_dir, _config):
  with pytest.raises(FileNotFoundError, match="stage 'generalist' has not finished"):
    fit.train(_config(tmp_path, data_dir, stage="specialists"))


class _Interrupt(Exception):
  pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
  def on_epoch_end(self, epoch, logs=None):
    raise _Interrupt()


class _RecordStart(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.starts = []

  def on_epoch_begin(self, epoch, logs=None):
    self.starts.append((epoch, int(self.model.optimizer.iterations.numpy())))


@pytest.mark.slow
def test_interrupted_stage_resumes_epoch_and_optimizer(tmp_path, data_dir, _config):
  config = _config(tmp_path, data_dir, stage="flat", epochs=3)
  with pytest.raises(_Interrupt):
    fit.train(config, callbacks=[_StopAfterFirstEpoch()])
  assert os.path.isdir(tmp_path / "flat" / "backup")
  assert not (tmp_path / "flat" / "metrics.json").exists()
  recorder = _RecordStart()
  fit.train(config, callbacks=[recorder])
  steps = 168 // 16 + 1  # 21 subclasses x 8 images, last batch partial
  assert recorder.starts == [(1, steps), (2, 2 * steps)]
  with open(tmp_path / "flat" / "metrics.json", encoding="utf-8") as f:
    metrics = json.load(f)
  assert len(metrics["history"]["loss"]) == 3


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, data_dir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(
      [sys.executable, "-m", "super_sub.train.train", f"--model_dir={tmp_path}",
       f"--dataset={SMOKE}", f"--data_dir={data_dir}", "--stage=flat", "--epochs=1",
       "--batch_size=8", "--strategy=mirrored", "--cpu_devices=2"],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "flat" / "metrics.json", encoding="utf-8") as f:
    metrics = json.load(f)
  assert metrics["global_batch_size"] == 16  # 8 per replica x 2 replicas
  assert "2 replica(s)" in out.stdout + out.stderr


def test_error_counts_hand_computed():
  # global: 0-3 tops, 4-6 footwear, 7 trouser, ...
  h = hierarchy_lib.load_hierarchy("fashion_mnist")
  labels = np.array([0, 0, 1, 4, 5, 7, 9])
  preds = np.array([0, 3, 1, 6, 0, 8, 9])
  assert evaluation.error_counts(labels, preds, h) == {
      "total": 4, "within_superclass": 2, "across_superclass": 2}
  per = evaluation.per_superclass_accuracy(labels, preds, h)
  assert per == {"tops": 2 / 3, "footwear": 0.0, "trouser": 0.0, "dress": None, "bag": 1.0}


@pytest.mark.slow
def test_specialist_for_missing_superclass_is_refused(tmp_path, data_dir, _config):
  with pytest.raises(ValueError, match=r"superclass\(es\) \[7\].* superclasses 0..4"):
    fit.train(_config(tmp_path, data_dir, specialists=(7,)))
  assert not (tmp_path / "flat").exists()  # refused before anything was trained


def _printed(pattern: str, stdout: str) -> tuple[str, ...]:
  """The groups of the one stdout line that `pattern` matches from its start."""
  found = re.findall(rf"^{pattern}", stdout, flags=re.MULTILINE)
  assert len(found) == 1, (pattern, stdout[-3000:])
  return found[0] if isinstance(found[0], tuple) else (found[0],)


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, data_dir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(
      [sys.executable, "-m", "super_sub.train.demo", f"--model_dir={tmp_path}",
       f"--dataset={SMOKE}", f"--data_dir={data_dir}", "--epochs=1", "--specialist_epochs=1"],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  stdout = out.stdout
  with open(tmp_path / "eval.json", encoding="utf-8") as f:
    result = json.load(f)
  with open(tmp_path / "export" / "manifest.json", encoding="utf-8") as f:
    manifest = json.load(f)
  assert (tmp_path / "export" / "tflite" / "manifest.json").exists()
  n = result["num_examples"]
  assert n == 84  # 21 subclasses x 4 validation images

  # The evaluation table: each printed top-1 is eval.json's, as the demo rounds it (.2%).
  pct = r"(\d+\.\d\d)%"
  hard, soft = result["two_stage"]["hard"], result["two_stage"]["soft"]
  for pattern, value in (
      (rf"flat \(one network, all subclasses\) +{pct}", result["flat"]["top1"]),
      (rf"two-stage, hard routing +{pct}", hard["top1"]),
      (rf"two-stage, soft routing \(k={soft['k']}\) +{pct}", soft["top1"]),
      (rf"oracle specialists \(true superclass\) +{pct}", result["oracle_specialists"]["top1"]),
      (rf"generalist superclass top-1: {pct}", result["generalist"]["superclass_top1"])):
    assert _printed(pattern, stdout) == (f"{100 * value:.2f}",), pattern
  # ... and eval.json's flat and hard top-1 are those of the predictions it saved.
  for name, value in (("flat", result["flat"]["top1"]), ("two_stage_hard", hard["top1"])):
    with np.load(tmp_path / "predictions" / f"{name}.npz") as npz:
      assert len(npz["labels"]) == n
      assert value == pytest.approx(np.mean(npz["labels"] == npz["predictions"]), abs=1e-12)

  # Parity: the TFLite bundle's top-1 and its agreement with the Keras two-stage predictions,
  # recomputed here image by image with the exported bundle.
  run = run_lib.Run.open(str(tmp_path), data_dir=data_dir)
  lite = predictor.TwoStageLite(str(tmp_path / "export" / "tflite"))
  with np.load(tmp_path / "predictions" / "two_stage_hard.npz") as npz:
    keras_said = dict(zip(npz["file_names"].tolist(), npz["predictions"].tolist()))
  correct = agree = total = 0
  for images, labels, meta in tfds.as_numpy(pipeline.make_dataset(
      run.builder, run.evaluation_split, run.evaluation_input(256), training=False,
      with_metadata=True)):
    predicted = lite.predict(images, mode="hard")["label"]
    correct += int(np.sum(predicted == labels))
    agree += sum(int(p) == keras_said[name.decode("utf-8")]
                 for p, name in zip(predicted, meta["file_name"]))
    total += len(labels)
  assert total == n
  assert _printed(rf"TFLite bundle: top-1 {pct} \(Keras two-stage {pct}\); same prediction as "
                  rf"Keras for {pct} of (\d+) images", stdout) == (
      f"{100 * correct / n:.2f}", f"{100 * hard['top1']:.2f}", f"{100 * agree / n:.2f}", str(n))

  # Storage: the manifest's ratio is the TFLite files' bytes on disk over one fp32 network
  # (4 bytes a parameter of the generalist), and the demo prints it.
  tflite_dir = tmp_path / "export" / "tflite"
  on_disk = sum(p.stat().st_size for p in tflite_dir.rglob("*") if p.is_file())
  fp32 = 4 * run.load_model(run.generalist).count_params()
  assert manifest["storage_ratio"] == pytest.approx(on_disk / fp32, rel=1e-12)
  assert manifest["num_specialists"] == 5
  assert _printed(r"storage: (\d+) specialists \+ generalist in (\d+\.\d\d) x one fp32 network "
                  r"\(N\+1 separate fp32 networks: (\d+)\)", stdout) == (
      "5", f"{on_disk / fp32:.2f}", "6")


@pytest.mark.slow
def test_eval_command_reads_the_saved_config(trained, data_dir, tmp_path):
  assert config_lib.load_config(trained.model_dir) == trained
  moved = config_lib.load_config(trained.model_dir, data_dir=str(tmp_path))
  assert moved.data_dir == str(tmp_path) and moved.backbone == trained.backbone
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(
      [sys.executable, "-m", "super_sub.train.evaluate", f"--model_dir={trained.model_dir}",
       f"--data_dir={data_dir}", "--soft_k=3"],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(trained.model_dir, "eval.json"), encoding="utf-8") as f:
    assert json.load(f)["two_stage"]["soft"]["k"] == 3


@pytest.mark.slow
def test_eval_and_export_in_a_shell_without_the_data_name_the_folder_and_the_fix(trained,
                                                                                 tmp_path):
  """A later shell without the TFDS_DATA_DIR a run was trained under: one line each, not
  TFDS's traceback from deep in a pipeline (export) or "it has []" splits (eval)."""
  empty = tmp_path / "no_data"
  empty.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  for module, args in (("super_sub.train.evaluate", []),
                       ("super_sub.export.export", [f"--output={tmp_path / 'bundle'}"])):
    out = subprocess.run([sys.executable, "-m", module, f"--model_dir={trained.model_dir}",
                          f"--data_dir={empty}", *args],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 2, (module, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, (module, out.stderr[-3000:])
    error = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and f"is not prepared in {empty}: pass --data_dir=" in error[0], (
        module, out.stderr[-3000:])
  assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_a_moved_run_reads_its_stages_where_it_now_lives(trained, tmp_path):
  first, moved = tmp_path / "first", tmp_path / "moved"
  shutil.copytree(trained.model_dir, first)
  shutil.move(str(first), str(moved))  # config.json still names the folder it was copied as
  run = run_lib.Run.open(str(moved))
  assert run.model_dir == str(moved) and run.stage_dir(run_lib.FLAT) == str(moved / "flat")
  assert run.load_model(run_lib.FLAT).count_params() > 0  # read here: `first` is gone


def test_load_config_of_a_folder_that_is_no_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="is not a super-sub-train run"):
    config_lib.load_config(str(tmp_path))


@pytest.mark.slow
def test_train_flags_are_the_config_fields():
  """super-sub-train defines one flag per TrainConfig field, with the field's default, so a
  default lives in one place; parsing flags gives back the config."""
  out = subprocess.run([sys.executable, "-c", """
import dataclasses, json, sys
from absl import flags
from super_sub.train import train
from super_sub.training import config as config_lib
FLAGS = flags.FLAGS
FLAGS(["super-sub-train", "--model_dir=/tmp/x", "--specialists=1,3", "--weights=none",
       "--qat", "--augment=crop"])
fields = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
missing = [n for n, f in fields.items() if f.metadata.get("flag", True) and n not in FLAGS]
defaults = {n: (FLAGS[n].default, f.default) for n, f in fields.items()
            if n in FLAGS and n != "model_dir" and FLAGS[n].default != f.default}
config = train.config_from_flags()
print(json.dumps({"missing": missing, "defaults": defaults,
                  "config": dataclasses.asdict(config), "hierarchy_flag": "hierarchy" in FLAGS}))
"""], capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["missing"] == [] and result["defaults"] == {}
  # --hierarchy names the hierarchy of a folder: or tfds: dataset; a built-in dataset fills
  # it in (None: its own).
  assert result["hierarchy_flag"] and result["config"]["hierarchy"] is None
  expected = dataclasses.asdict(config_lib.TrainConfig(
      model_dir="/tmp/x", specialists=(1, 3), qat=True, augment="crop"))
  expected["specialists"] = [1, 3]
  assert result["config"] == expected
