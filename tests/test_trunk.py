"""Shared trunk: frozen stages cut out once, the generalist and specialists as tails."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub import compression
from super_sub import evaluation
from super_sub import export_lib
from super_sub import models
from super_sub import training
from super_sub import trunk as trunk_lib
from super_sub.runtime import bundle as bundle_lib
from super_sub.runtime import predictor

SMOKE = "superclassed_synthetic/smoke"


@pytest.mark.parametrize("frozen", [1, 2, 3, 4])
def test_tail_of_trunk_is_the_model(frozen):
  model = models.build_classifier("small_resnet", (8, 8, 3), 4, "generalist", "generalist")
  x = np.random.default_rng(0).random((5, 8, 8, 3), np.float32)
  trunk, tail = trunk_lib.split(model, frozen)
  np.testing.assert_array_equal(tail(trunk(x)).numpy(), model(x).numpy())
  assert len(trunk.weights) + len(tail.weights) == len(model.weights)
  assert tail.input_shape[1:] == trunk.output_shape[1:]


def test_split_refuses_stage_counts_it_cannot_cut():
  model = models.build_classifier("small_resnet", (8, 8, 3), 4, "generalist", "generalist")
  with pytest.raises(ValueError, match=r"1 <= frozen_stages <= 4 .* got 0"):
    trunk_lib.split(model, 0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """QAT specialists with the stem and stage 1 frozen (tfmot wrappers list frozen weights as
  trainable: pinning must hold them) and a delta budget on the rest."""
  config = training.TrainConfig(
      model_dir=str(tmp_path_factory.mktemp("run")), dataset=SMOKE,
      data_dir=str(tmp_path_factory.mktemp("tfds")), epochs=1, specialist_epochs=1,
      batch_size=16, qat=True, qat_epochs=1, freeze_stages=2, delta_keep=0.05)
  config = training.train(config, log=lambda _: None)
  evaluation.evaluate(config, log=lambda _: None)
  return config


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  export_dir = str(tmp_path_factory.mktemp("export") / "bundle")
  return export_dir, export_lib.export(run, export_dir, log=lambda _: None)


def test_frozen_stages_are_exported_once_as_a_trunk(run, exported):
  export_dir, manifest = exported
  files = manifest["files"]
  assert "tflite/trunk.tflite" in files
  trunk_bytes = files["tflite/trunk.tflite"]["bytes"]
  lite = predictor.TwoStageLite(os.path.join(export_dir, "tflite"))
  tails = files["tflite/generalist.tflite"]["bytes"] + sum(
      len(lite.bundle.specialist(k)) for k in range(5))
  # Six separate int8 networks would each carry the trunk.
  assert manifest["bytes"]["tflite_naive_int8"] == 6 * trunk_bytes + tails
  assert lite.trunk is not None and lite.generalist.input_shape == lite.trunk.output_shape
  result = export_lib.tflite_parity(run, export_dir, log=lambda _: None)
  assert result["agreement_with_keras"] >= 0.9


def test_trunk_tflite_feeds_the_generalist_tail_like_the_whole_network(run, exported):
  builder = tfds.builder(SMOKE, data_dir=run.data_dir)
  images = export_lib.representative_images(run, builder, count=32)
  generalist = training.load_model(run, builder, "generalist_qat")
  whole = predictor._LiteModel(export_lib.to_tflite(generalist, images), 1, "whole")  # pylint: disable=protected-access
  lite = predictor.TwoStageLite(os.path.join(exported[0], "tflite"))
  split = lite.generalist(lite.trunk(images))
  assert np.mean(split.argmax(1) == whole(images).argmax(1)) >= 0.95


def test_specialists_left_the_frozen_stages_bit_exact(run):
  builder = tfds.builder(SMOKE, data_dir=run.data_dir)
  base = training.load_model(run, builder, "generalist_qat")
  specialist = training.load_model(run, builder, "specialist_4")
  trunk_lib.check_shared(base, specialist, 2)
  frozen = compression.frozen_variables(specialist)
  assert any(frozen) and not all(frozen)
  stem = next(v for v in specialist.weights if "stem_conv" in v.name and "kernel:" in v.name)
  stem.assign(stem.numpy() + 1e-3)
  with pytest.raises(ValueError, match="differs from the generalist in .*stem_conv"):
    trunk_lib.check_shared(base, specialist, 2)


def test_bundle_manifest_must_checksum_the_trunk(exported, tmp_path):
  copy = tmp_path / "tflite"
  shutil.copytree(os.path.join(exported[0], "tflite"), copy)
  manifest = json.loads((copy / "manifest.json").read_text())
  del manifest["files"]["trunk.tflite"]
  (copy / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(bundle_lib.BundleError, match="trunk.tflite"):
    bundle_lib.load_bundle(copy)
