"""Router head: a small network on the shared trunk that routes instead of the generalist's tail."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from super_sub import evaluation
from super_sub import hierarchy as hierarchy_lib
from super_sub import routing
from super_sub.bundles import export as export_lib
from super_sub.bundles import saved_model as saved_model_lib
from super_sub.models import classifiers
from super_sub.models import router_head
from super_sub.models import trunk as trunk_lib
from super_sub.routing import core
from super_sub.formats import bundle_loader as bundle_lib
from super_sub.formats import bundle_writer
from super_sub.formats import flatbuffer
from super_sub.formats import delta as delta_lib
from super_sub.runtime import fusion
from super_sub.runtime import predictor
from super_sub.training import config as config_lib
from super_sub.training import run as run_lib

from conftest import assert_bundle_matches_keras
from conftest import export_run
from known_routing import set_head
from known_routing import train_with_known_routing


def _generalist(shape=(16, 16, 3), superclasses=5):
  return classifiers.build_classifier("small_resnet", shape, superclasses, "generalist",
                                      "generalist")


def test_router_head_is_the_generalists_trunk_and_a_small_head():
  generalist = _generalist()
  router = router_head.build_router_head(generalist, 2, 8)
  trunk_lib.check_shared(generalist, router, 2)  # the same weights, bit for bit
  x = np.random.default_rng(0).random((4, 16, 16, 3), np.float32)
  trunk, tail = trunk_lib.split(router, 2)
  np.testing.assert_array_equal(trunk(x).numpy(), trunk_lib.split(generalist, 2)[0](x).numpy())
  np.testing.assert_array_equal(tail(trunk(x)).numpy(), router(x).numpy())
  assert router.output_shape == (None, 5)
  # small_resnet's stage 1 gives 32 channels: a 3x3 conv of 32 -> 8 (no bias), BatchNorm's
  # 4 x 8, a linear layer 8 -> 5 with biases.
  assert trunk.output_shape[-1] == 32
  assert tail.count_params() == 9 * 32 * 8 + 4 * 8 + 8 * 5 + 5
  cut = trunk_lib.cut_index(router, 2)
  assert not any(layer.trainable for layer in router.layers[1:cut + 1] if layer.weights)
  assert all(layer.trainable for layer in router.layers[cut + 1:])


@pytest.mark.parametrize("frozen, width, match", [
    (0, 8, r"1 <= K <= 3 .* got 0"),
    (4, 8, r"1 <= K <= 3 .* got 4"),
    (2, 0, r"width >= 1; got 0"),
])
def test_router_head_refuses_what_it_cannot_build(frozen, width, match):
  with pytest.raises(ValueError, match=match):
    router_head.build_router_head(_generalist(), frozen, width)


def test_config_needs_a_trunk_for_a_router_head(tmp_path):
  with pytest.raises(ValueError, match="router_head=8, freeze_stages=0"):
    config_lib.TrainConfig(model_dir=str(tmp_path), router_head=8)
  with pytest.raises(ValueError, match="give its width with --router_head=W"):
    config_lib.TrainConfig(model_dir=str(tmp_path), stage="router_head")
  assert "router_head" not in config_lib.TrainConfig(model_dir=str(tmp_path)).stages()
  assert config_lib.TrainConfig(model_dir=str(tmp_path), freeze_stages=2,
                                router_head=8).stages() == (
                                    "flat", "generalist", "router_head", "specialists")


@pytest.mark.slow
def test_saved_model_routes_with_the_router_head(tmp_path):
  """Float models with random weights: the SavedModel's routing is the router head's, and its
  answers the Keras two-stage's with the head routing."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("fashion_mnist")
  rng = np.random.default_rng(4)
  generalist = _generalist((28, 28, 1), h.num_superclasses)
  router = router_head.build_router_head(generalist, 2, 8)
  images = (rng.uniform(0, 1, (30, 28, 28, 1)) * rng.uniform(0, 1, (30, 1, 1, 1))
            ).astype(np.float32)
  # The head routes 6 images to each superclass (known_routing), along another direction of
  # its own features than the generalist's, which keeps its random head.
  routed = set_head(router, images)
  specialists = {k: classifiers.make_specialist(generalist, len(h.subclass_range(k)),
                                                f"specialist_{k}", freeze_stages=2)
                 for k in h.specialist_superclasses()}
  path = str(tmp_path / "saved_model")
  saved_model_lib.export_saved_model(path, generalist, specialists, h, shared_stages=2,
                                     router_head=router)
  out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  np.testing.assert_allclose(out["superclass_probs"].numpy(), core.softmax(router(images)),
                             atol=1e-5)
  expected = routing.TwoStage(generalist, specialists, h, head=router).predict(
      images, mode="hard", router="head")
  by_generalist = routing.TwoStage(generalist, specialists, h).predict(images, mode="hard")
  np.testing.assert_array_equal(expected["superclass"], routed)
  served = {k: int(np.sum(routed == k)) for k in h.specialist_superclasses()}
  assert min(served.values()) >= 5, served  # both specialists answer (tops, footwear)
  assert (by_generalist["superclass"] != routed).any()
  np.testing.assert_array_equal(out["superclass"].numpy(), expected["superclass"])
  np.testing.assert_allclose(out["label_probs"].numpy(), expected["label_probs"], atol=1e-5)
  with pytest.raises(ValueError, match="shared_stages >= 1"):
    saved_model_lib.SuperSubModule(generalist, specialists, h, router_head=router)


@pytest.fixture(scope="module")
def run(tmp_path_factory, smoke_config):
  """QAT, stem and stage 1 shared, a router head of width 8 whose last layer routes an equal
  share of the 84 evaluation images to each specialist (known_routing), evaluated."""
  return train_with_known_routing(smoke_config(tmp_path_factory.mktemp("run"), qat=True,
                                               qat_epochs=1, freeze_stages=2, router_head=8))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  return export_run(run, tmp_path_factory)


@pytest.mark.slow
def test_training_keeps_the_router_heads_trunk_the_generalists(run):
  """tfmot's wrappers train frozen weights and move activation ranges: pinning holds them."""
  base, router = run.load_model(run_lib.GENERALIST_QAT), run.load_model(run_lib.ROUTER_HEAD)
  trunk_lib.check_shared(base, router, 2)
  assert run.metrics(run_lib.ROUTER_HEAD)["role"] == "router_head"
  # The head trained: its convolution's kernel left its initialisation. (Its last layer was
  # replaced by the known routing's.)
  fresh = run.build_model(run_lib.ROUTER_HEAD)
  conv = next(i for i, layer in enumerate(router.layers) if "router_conv" in layer.name)
  assert not np.array_equal(fresh.layers[conv].get_weights()[0],
                            router.layers[conv].get_weights()[0])


@pytest.mark.slow
def test_evaluation_routes_with_the_head_and_compares_every_router(run):
  with open(os.path.join(run.model_dir, "eval.json"), encoding="utf-8") as f:
    result = json.load(f)
  assert result["two_stage"]["router"] == "head"
  assert set(result["routers"]) == set(core.ROUTERS)
  assert result["routers"]["head"]["hard_top1"] == result["two_stage"]["hard"]["top1"]
  with pytest.raises(ValueError, match=r"router head \(--router_head\)"):
    evaluation.evaluate(run_lib.Run(dataclasses.replace(run.config, router_head=0)),
                        router="head", log=lambda _: None)


@pytest.mark.slow
def test_bundles_route_with_the_head(run, exported):
  export_dir, manifest = exported
  assert "tflite/router_head.tflite" in manifest["files"]
  tflite_dir = os.path.join(export_dir, "tflite")
  lite = predictor.TwoStageLite(tflite_dir)
  # The head runs inside the trunk's interpreter; the generalist's is never built.
  assert lite.router is None and lite.trunk.name == "trunk and router head"
  assert lite.trunk.widths[1] == run.hierarchy.num_superclasses
  # The bundle answers as the Keras two-stage routed by the head did, up to int8 noise.
  head = run.load_model(run_lib.ROUTER_HEAD)
  checked = assert_bundle_matches_keras(run, tflite_dir, atol=0.05, router=head)
  assert sorted(checked["per_specialist"]) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_router_head_needs_a_trunk(run, exported, tmp_path):
  bundle = bundle_lib.load_bundle(os.path.join(exported[0], "tflite"))
  h = bundle.hierarchy
  with pytest.raises(bundle_lib.BundleError, match="a bundle without a trunk cannot hold one"):
    bundle_writer.write_tflite_bundle(tmp_path / "b", h, bundle.generalist,
                                      {k: bundle.specialist(k) for k in bundle.deltas},
                                      {"shape": [16, 16, 3], "dtype": "float32", "range": [0, 1]},
                                      router_head=bundle.router_head)
  # A manifest that names a router head but no trunk is refused on loading.
  copy = tmp_path / "copy"
  shutil.copytree(os.path.join(exported[0], "tflite"), copy)
  manifest = json.loads((copy / "manifest.json").read_text())
  manifest["trunk"] = None
  (copy / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(bundle_lib.BundleError, match="names a router head but no trunk"):
    bundle_lib.load_bundle(copy)
  with pytest.raises(ValueError, match="shared_stages >= 1"):
    export_lib.export_models(str(tmp_path / "e"), h, run.load_model(run.generalist), {},
                             np.zeros((1, 16, 16, 3), np.float32),
                             router_head=run.load_model(run_lib.ROUTER_HEAD))


@pytest.mark.slow
def test_with_a_router_head_the_generalist_stays_on_disk_and_is_checked_at_each_rebuild(
    exported, tmp_path):
  copy = tmp_path / "tflite"
  shutil.copytree(os.path.join(exported[0], "tflite"), copy)
  lite = predictor.TwoStageLite(copy)
  assert isinstance(lite.bundle.models, bundle_lib.VerifiedFiles)  # not held in memory
  first = lite.bundle.specialist(1)
  base = bytearray((copy / "generalist.tflite").read_bytes())
  base[len(base) // 2] ^= 1
  (copy / "generalist.tflite").write_bytes(bytes(base))
  with pytest.raises(bundle_lib.BundleError, match="generalist.tflite: sha256 differs"):
    lite.specialist(1)
  (copy / "generalist.tflite").write_bytes(bytes(base[:len(base) // 2]) + bytes(
      [base[len(base) // 2] ^ 1]) + bytes(base[len(base) // 2 + 1:]))
  assert lite.bundle.specialist(1) == first  # restored: the runtime is usable again


@pytest.mark.slow
def test_the_fused_trunk_gives_the_separate_models_outputs_bit_for_bit(exported):
  bundle = bundle_lib.load_bundle(os.path.join(exported[0], "tflite"))
  images = np.random.default_rng(0).random((5, *bundle.input_shape), np.float32)
  trunk = predictor.LiteModel(bundle.trunk, None, "trunk", raw_output=True)
  head = predictor.LiteModel(bundle.router_head, None, "head")
  fused = predictor.LiteModel(fusion.fuse_router(bundle.trunk, bundle.router_head), None,
                              "fused", raw_output=True)
  features, logits = fused(images)
  assert features.dtype == np.int8
  np.testing.assert_array_equal(features, trunk(images))
  np.testing.assert_array_equal(logits, head(trunk(images)))
  # It still takes any batch size after another.
  np.testing.assert_array_equal(fused(images[:2])[1], logits[:2])


@pytest.mark.slow
def test_a_router_head_that_does_not_read_the_trunks_output_is_refused(exported, tmp_path):
  bundle = bundle_lib.load_bundle(os.path.join(exported[0], "tflite"))
  head = flatbuffer.parse_model(bundle.router_head)
  graph = head.subgraphs[0]
  graph.tensors[graph.inputs[0]].quantization.scale = np.array([0.5], np.float32)
  moved = flatbuffer.pack_model(head)
  with pytest.raises(delta_lib.DeltaError, match="router head's input .* is not the trunk's"):
    fusion.fuse_router(bundle.trunk, moved)
  with pytest.raises(delta_lib.DeltaError, match="one subgraph with one input and one output"):
    fusion.fuse_router(fusion.fuse_router(bundle.trunk, bundle.router_head), bundle.router_head)
  # A bundle holding such a head is refused when the runtime loads it, naming the bundle.
  bundle_writer.write_tflite_bundle(tmp_path / "b", bundle.hierarchy, bundle.generalist,
                                    {k: bundle.specialist(k) for k in bundle.deltas},
                                    bundle.manifest["input"], trunk=bundle.trunk, router_head=moved)
  with pytest.raises(bundle_lib.BundleError, match="router head cannot read the trunk's output"):
    predictor.TwoStageLite(tmp_path / "b")
