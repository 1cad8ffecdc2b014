"""super-sub-export on a tiny trained run: files, byte counts, checksums and refusals."""

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from super_sub._internal import files
from super_sub.bundles import export as export_lib
from super_sub import parity
from super_sub.bundles import storage
from super_sub.bundles import tflite
from super_sub.formats import bundle_loader as bundle_lib
from super_sub.training import run as run_lib

from conftest import _evaluation_batches
from conftest import assert_bundle_matches_keras
from conftest import export_run
from known_routing import train_with_known_routing


@pytest.fixture(scope="module")
def run(tmp_path_factory, smoke_config):
  """A smoke run whose router sends an equal share of the 84 evaluation images to each of the
  5 specialists (known_routing), evaluated."""
  return train_with_known_routing(smoke_config(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  return export_run(run, tmp_path_factory)


@pytest.mark.slow
def test_manifest_counts_match_the_files(exported):
  export_dir, manifest = exported
  with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
    assert json.load(f) == manifest
  on_disk = set()
  for root, _, names in os.walk(export_dir):
    for name in names:  # the export's own manifest is the only file it does not list
      rel = os.path.relpath(os.path.join(root, name), export_dir)
      if rel != "manifest.json":
        on_disk.add(rel)
  assert set(manifest["files"]) == on_disk
  for rel, entry in manifest["files"].items():
    data = open(os.path.join(export_dir, rel), "rb").read()
    assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  sizes = manifest["bytes"]
  assert sizes["tflite_bundle"] == sum(v["bytes"] for k, v in manifest["files"].items()
                                       if k.startswith("tflite/"))
  assert sizes["saved_model"] == sum(v["bytes"] for k, v in manifest["files"].items()
                                     if k.startswith("saved_model/"))
  assert "saved_model/saved_model.pb" in manifest["files"]
  assert manifest["storage_ratio"] == sizes["tflite_bundle"] / sizes["single_fp32_network"]
  assert manifest["num_specialists"] == 5 and manifest["num_superclasses"] == 5
  # Five specialists differ from the generalist only in their heads' width: N + 1 backbones
  # (small_resnet pools 128 features) plus 5 + 21 head columns of 128 weights and a bias.
  backbone = sizes["single_fp32_network"] // 4 - 129 * 5
  assert sizes["naive_fp32_bundle"] == 4 * (6 * backbone + 129 * (5 + 21))
  assert manifest["format"] == "super-sub-export" and manifest["version"] == 1


@pytest.mark.slow
def test_saved_model_stays_within_the_separate_float_networks(exported):
  """Dense fine-tuning changes every specialist weight: stored as dense differences (4 bytes a
  weight), the SavedModel's variables come to about N + 1 float networks, not the ~3x that
  int64 positions + values for every weight cost."""
  _, manifest = exported
  sizes = manifest["bytes"]
  variables = sum(entry["bytes"] for path, entry in manifest["files"].items()
                  if path.startswith("saved_model/variables/"))
  assert variables <= 1.02 * sizes["naive_fp32_bundle"]
  assert sizes["saved_model"] >= variables


@pytest.mark.slow
def test_bundle_is_smaller_than_separate_int8_files(exported):
  _, manifest = exported
  sizes = manifest["bytes"]
  assert sizes["tflite_bundle"] < sizes["tflite_naive_int8"]


@pytest.mark.slow
def test_bundle_verifies_and_rebuilds_every_specialist(exported):
  export_dir, manifest = exported
  bundle = bundle_lib.load_bundle(os.path.join(export_dir, "tflite"))
  assert sorted(bundle.skeletons) == [0, 1, 2, 3, 4]
  for k in bundle.skeletons:
    assert bundle.specialist(k)[4:8] == b"TFL3"


@pytest.mark.slow
def test_parity_with_keras_two_stage(run, exported):
  result = parity.tflite_parity(run, exported[0], log=lambda _: None)
  assert result["num_examples"] == 84
  # keras_top1 against an independent computation: the Keras models loaded afresh, routed by
  # hand (the generalist's argmax, then that superclass's specialist), scored on the labels.
  generalist = run.load_model(run.generalist)
  specialists = {k: run.load_model(s) for k, s in run.specialists().items()}
  h, correct = run.hierarchy, 0
  for images, labels, _ in _evaluation_batches(run):
    superclass = generalist.predict(images, verbose=0).argmax(1)
    for k in np.unique(superclass):
      mine = superclass == k
      within = specialists[k].predict(images[mine], verbose=0).argmax(1)
      correct += int(np.sum(h.superclass_offsets[k] + within == labels[mine]))
  assert result["keras_top1"] == pytest.approx(correct / 84)
  with open(os.path.join(run.model_dir, "eval.json"), encoding="utf-8") as f:
    assert result["keras_top1"] == pytest.approx(json.load(f)["two_stage"]["hard"]["top1"])
  # int8 post-training quantization of the float models: Keras' probabilities to within
  # quantization noise, and its answer wherever noise cannot flip it, on every specialist.
  checked = assert_bundle_matches_keras(run, os.path.join(exported[0], "tflite"), atol=0.05)
  assert sorted(checked["per_specialist"]) == [0, 1, 2, 3, 4]


def test_qat_conversion_says_nothing_of_input_statistics():
  """The converter's "Statistics for quantized inputs were expected" UserWarning is printed
  for every QAT model with float inputs, super-sub's way: to_tflite keeps it from users."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=import-outside-toplevel
  from super_sub._internal.compat import keras  # pylint: disable=import-outside-toplevel
  model = tfmot.quantization.keras.quantize_model(keras.Sequential(
      [keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
       keras.layers.Dense(3)]))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert tflite.to_tflite(model, None)[4:8] == b"TFL3"
  assert not [w for w in caught if "Statistics for quantized inputs" in str(w.message)], [
      str(w.message) for w in caught]


@pytest.mark.slow
def test_float_model_needs_representative_images(run):
  model = run.load_model(run_lib.GENERALIST)
  with pytest.raises(ValueError, match="needs representative images"):
    tflite.to_tflite(model, None)
  with pytest.raises(ValueError, match=r"representative images have shape \(8, 8, 3\)"):
    tflite.to_tflite(model, np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.slow
def test_missing_stage_leaves_export_dir_untouched(run, tmp_path):
  export_dir = tmp_path / "bundle"
  export_dir.mkdir()
  (export_dir / "manifest.json").write_text('{"format": "super-sub-export"}')  # an old export
  (export_dir / "keep.txt").write_text("old export")
  partial = run_lib.Run(dataclasses.replace(run.config, model_dir=str(tmp_path / "empty")))
  with pytest.raises(FileNotFoundError, match="stage 'generalist' has not finished"):
    export_lib.export(partial, str(export_dir), log=lambda _: None)
  assert sorted(p.name for p in export_dir.iterdir()) == ["keep.txt", "manifest.json"]


def test_representative_file_errors(tmp_path):
  path = tmp_path / "images.npz"
  np.savez(path, pictures=np.zeros((2, 4, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="an .npz with an 'images' array"):
    tflite.load_representative(str(path))
  np.savez(path, images=np.full((2, 4, 4, 3), 255, np.uint8))
  np.testing.assert_array_equal(tflite.load_representative(str(path)), 1.0)


@pytest.mark.slow
def test_storage_fit_splits_the_bundle_into_shared_and_per_specialist(exported):
  _, manifest = exported
  fitted = storage.storage_fit(manifest)
  unit = manifest["bytes"]["single_fp32_network"]
  files = manifest["files"]
  shared = sum(files[f"tflite/{n}"]["bytes"]
               for n in ("generalist.tflite", "hierarchy.json", "labels.txt", "manifest.json"))
  assert fitted["a"] == shared / unit
  assert len(fitted["specialists"]) == 5
  assert fitted["a"] + 5 * fitted["b"] == pytest.approx(manifest["storage_ratio"])
  assert fitted["b_min"] <= fitted["b"] <= fitted["b_max"]


@pytest.mark.slow
def test_export_never_replaces_a_folder_it_did_not_write(run, exported, tmp_path):
  """`--output=.` or `~/models` must not lose the user's files: refused, untouched."""
  mine = tmp_path / "models"
  mine.mkdir()
  (mine / "thesis.tex").write_text("years of work")
  (mine / "manifest.json").write_text('{"not": "ours"}')  # another tool's manifest
  with pytest.raises(files.OutputDirError, match=r"models exists and is not an export folder.*"
                     r"manifest.json, thesis.tex.*--overwrite"):
    export_lib.export(run, str(mine), log=lambda _: None)
  assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "thesis.tex"]
  assert not [p for p in tmp_path.iterdir() if "super-sub-tmp" in p.name]
  # The command line says the same and exits non-zero.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([sys.executable, "-m", "super_sub.export.export",
                        f"--model_dir={run.model_dir}", f"--output={mine}"],
                       env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode != 0 and "is not an export folder" in out.stderr
  assert (mine / "thesis.tex").read_text() == "years of work"


@pytest.mark.slow
def test_export_replaces_an_earlier_export(run, exported, tmp_path):
  target = tmp_path / "bundle"
  shutil.copytree(exported[0], target)
  (target / "stale.txt").write_text("left by an older export")
  export_lib.export(run, str(target), log=lambda _: None)  # an earlier export: replaced
  assert not (target / "stale.txt").exists()
  bundle_lib.load_bundle(str(target / "tflite"))


@pytest.mark.slow
def test_killed_export_leaves_the_previous_export_intact(run, exported, tmp_path):
  """kill -9 during a re-export: the old export still verifies, file for file."""
  export_dir = tmp_path / "bundle"
  shutil.copytree(exported[0], export_dir)
  before = {p: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen([sys.executable, "-m", "super_sub.export.export",
                           f"--model_dir={run.model_dir}", f"--output={export_dir}"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 300
    # The temporary sibling appears once conversion is done and writing has begun.
    while not list(tmp_path.glob(".bundle.super-sub-tmp-*/saved_model")):
      assert proc.poll() is None, "export finished before it could be killed"
      assert time.monotonic() < deadline, "export never started writing"
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  after = {p: p.read_bytes() for p in export_dir.rglob("*") if p.is_file()}
  assert after == before
  bundle_lib.load_bundle(str(export_dir / "tflite"))
