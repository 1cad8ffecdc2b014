"""The SavedModel bundle: base + sparse deltas reproduce the Keras two-stage, TF alone loads it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from super_sub import hierarchy as hierarchy_lib
from super_sub import routing
from super_sub._internal.compat import keras
from super_sub.bundles import saved_model as saved_model_lib
from super_sub.models import classifiers
from super_sub.training import qat as qat_lib

from known_routing import set_head

# Images the models route evenly (known_routing): 20 noise images of varied brightness, 4 to
# each of fashion_mnist's 5 superclasses, 2 of which (tops, footwear) have specialists.
IMAGES_PER_SUPERCLASS = 4


def _images(rng, count=20, shape=(28, 28, 1)):
  return (rng.uniform(0, 1, (count, *shape)) * rng.uniform(0, 1, (count, 1, 1, 1))
          ).astype(np.float32)


def _assert_every_specialist_served(superclass, h, at_least):
  served = {k: int(np.sum(np.asarray(superclass) == k)) for k in h.specialist_superclasses()}
  assert min(served.values()) >= at_least, f"images per specialist: {served}"


@pytest.fixture(scope="module")
def models():
  """(hierarchy, generalist, {superclass: specialist}, images): a generalist that routes the
  images evenly (known_routing) and two specialists, one changed in a few weights and one in
  every weight of its stem."""
  h = hierarchy_lib.load_hierarchy("fashion_mnist")  # specialists for tops and footwear only
  rng = np.random.default_rng(0)
  generalist = classifiers.build_classifier("small_resnet", (28, 28, 1), h.num_superclasses,
                                       "generalist", "generalist")
  for v in generalist.weights:  # non-trivial BatchNorm statistics and weights
    if "moving_variance" in v.name:
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
    elif "moving_mean" in v.name or "beta" in v.name:
      v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
  specialists = {}
  sparse_k, dense_k = h.specialist_superclasses()
  for k in (sparse_k, dense_k):
    s = classifiers.make_specialist(generalist, len(h.superclasses[k].subclasses), f"specialist_{k}")
    kernel = s.layers[1].weights[0]  # the stem conv, changed as fine-tuning would:
    values = kernel.numpy()
    if k == sparse_k:  # a few weights (a delta budget)
      values.flat[rng.choice(values.size, 20, replace=False)] += 0.3
    else:  # every weight (dense fine-tuning)
      values += rng.normal(0, 0.05, values.shape).astype(np.float32)
    kernel.assign(values)
    specialists[k] = s
  images = _images(rng)
  routed = set_head(generalist, images)
  _assert_every_specialist_served(routed, h, IMAGES_PER_SUPERCLASS)
  return h, generalist, specialists, images


@pytest.fixture(scope="module")
def models_and_path(models, tmp_path_factory):
  """`models` and the path of their exported SavedModel: (h, generalist, specialists, path,
  images)."""
  h, generalist, specialists, images = models
  path = str(tmp_path_factory.mktemp("sm") / "saved_model")
  saved_model_lib.export_saved_model(path, generalist, specialists, h)
  return h, generalist, specialists, path, images


def test_deltas_hold_only_the_changed_weights_the_cheaper_way(models):
  """Sparse (int32 position + float32 difference) for the 20 moved weights, dense (4 bytes a
  weight) for the kernel whose every weight moved, nothing for unchanged tensors: never more
  than the dense difference of the changed tensors."""
  h, generalist, specialists, _ = models
  module = saved_model_lib.SuperSubModule(generalist, specialists, h)
  sparse_k, dense_k = h.specialist_superclasses()
  stem = generalist.layers[1].weights[0].numpy()

  sparse, dense = module.specialists[str(sparse_k)], module.specialists[str(dense_k)]
  assert sparse.changed == [(1, 0, "sparse")] and int(sparse.positions.shape[0]) == 20
  assert sparse.stored_bytes() == 20 * (4 + 4)
  assert dense.changed == [(1, 0, "dense")]
  assert dense.stored_bytes() == stem.nbytes + 4  # the difference and the tensor's ordinal
  # Base + delta gives back every weight of each specialist (whatever the routing of a test's
  # images exercises).
  for k, model in specialists.items():
    rebuilt = module._specialist_weights(k)  # pylint: disable=protected-access
    for layer, got in zip(model.layers, rebuilt):
      for want, value in zip(saved_model_lib._weights(layer), got):  # pylint: disable=protected-access
        np.testing.assert_allclose(value.numpy(), want.numpy(), atol=1e-6, err_msg=want.name)


@pytest.mark.slow
def test_deflated_deltas_are_smaller_and_serve_the_same_answers_bit_for_bit(tmp_path):
  """deflate=True stores the dense differences as zlib byte planes: fewer bytes than float32
  for fine-tuning noise, the same weights after inflating, and the loaded SavedModel answers
  exactly as the one storing them plainly."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("fashion_mnist")
  rng = np.random.default_rng(5)
  generalist = classifiers.build_classifier("small_resnet", (28, 28, 1), h.num_superclasses,
                                            "generalist", "generalist")
  images = _images(rng, 32)
  set_head(generalist, images)  # routes the images evenly: every specialist answers some
  specialists = {}
  for k in h.specialist_superclasses():
    s = classifiers.make_specialist(generalist, len(h.superclasses[k].subclasses),
                                    f"specialist_{k}")
    for v in s.trainable_weights:  # dense fine-tuning: every weight moves a little
      v.assign(v.numpy() + rng.normal(0, 0.002, v.shape).astype(np.float32))
    specialists[k] = s
  plain = saved_model_lib.SuperSubModule(generalist, specialists, h)
  deflated = saved_model_lib.SuperSubModule(generalist, specialists, h, deflate=True)
  for k in specialists:
    d, p = deflated.specialists[str(k)], plain.specialists[str(k)]
    assert d.deflated and not p.deflated and d.changed == p.changed
    dense = p.dense.numpy()
    assert d.stored_bytes() == p.stored_bytes() - dense.nbytes + len(d.dense.numpy())
    assert len(d.dense.numpy()) < 0.9 * dense.nbytes
    np.testing.assert_array_equal(deflated.assemble(k).numpy(), plain.assemble(k).numpy())
  images = tf.constant(images)
  outputs = {}
  for name, deflate in (("plain", False), ("deflated", True)):
    saved_model_lib.export_saved_model(str(tmp_path / name), generalist, specialists, h,
                                       deflate=deflate)
    serve = tf.saved_model.load(str(tmp_path / name)).signatures["serving_default"]
    outputs[name] = {key: v.numpy() for key, v in serve(images=images).items()}
  _assert_every_specialist_served(outputs["plain"]["superclass"], h, 6)
  for key, value in outputs["plain"].items():
    np.testing.assert_array_equal(outputs["deflated"][key], value, err_msg=key)


def test_a_sign_delta_costs_a_bit_per_weight_and_rebuilds_within_float_tolerance(models):
  """A kernel whose every weight but its largest moved by +-a of its output channel (a sign
  specialist, which holds the largest) is stored as one bit a weight plus a float32 a channel,
  the held weights as sparse exceptions, and base + delta gives it back."""
  h, generalist, specialists, _ = models
  sparse_k, dense_k = h.specialist_superclasses()
  rng = np.random.default_rng(3)
  signed = classifiers.make_specialist(generalist, len(h.superclasses[sparse_k].subclasses),
                                       "signed")
  kernel = signed.layers[1].weights[0]  # the stem conv [3, 3, 1, C]
  amounts = rng.uniform(0.001, 0.01, kernel.shape[-1]).astype(np.float32)
  amounts[0] = 0.0  # a channel that did not move
  up = rng.random(kernel.shape) < 0.5
  base = kernel.numpy()
  largest = np.abs(base) == np.abs(base).max(axis=(0, 1, 2))
  assert np.count_nonzero(largest) == kernel.shape[-1]
  kernel.assign(np.where(largest, base, base + np.where(up, amounts, -amounts)))
  module = saved_model_lib.SuperSubModule(generalist, {sparse_k: signed,
                                                       dense_k: specialists[dense_k]}, h)
  delta = module.specialists[str(sparse_k)]
  assert delta.changed == [(1, 0, "signed")]
  size, channels = int(np.prod(kernel.shape)), int(kernel.shape[-1])
  # Bits, amounts, ordinal, and an exception (position, value) a channel that moved.
  assert delta.stored_bytes() == -(-size // 8) + 4 * channels + 4 + 8 * (channels - 1)
  rebuilt = module._specialist_weights(sparse_k)  # pylint: disable=protected-access
  for layer, got in zip(signed.layers, rebuilt):
    for want, value in zip(saved_model_lib._weights(layer), got):  # pylint: disable=protected-access
      np.testing.assert_allclose(value.numpy(), want.numpy(), atol=1e-6, err_msg=want.name)
  moved = rebuilt[1][0].numpy() - generalist.layers[1].weights[0].numpy()
  np.testing.assert_allclose(np.abs(moved).max(axis=(0, 1, 2)), amounts, atol=1e-6)
  np.testing.assert_allclose(moved[largest], 0.0, atol=1e-6)  # held (float rounding)
  # The dense specialist next to it still rebuilds exactly as before.
  dense = module._specialist_weights(dense_k)[1][0].numpy()  # pylint: disable=protected-access
  np.testing.assert_allclose(dense, specialists[dense_k].layers[1].weights[0].numpy(), atol=1e-6)


def _backbone_tensors(model):
  """(layer index, weight index, variable) of every backbone weight (the head excluded)."""
  return [(i, j, v) for i, layer in enumerate(model.layers[:-1])
          for j, v in enumerate(saved_model_lib._weights(layer))]  # pylint: disable=protected-access


def test_every_encoding_in_one_specialist_rebuilds_each_tensor(models):
  """One specialist whose changed tensors take all three forms, interleaved with unchanged
  ones and with each other (dense, sparse, signed, dense, signed): each weight reads its own
  tensor's stored values, at its own offset, and no other."""
  h, generalist, specialists, _ = models
  sparse_k, dense_k = h.specialist_superclasses()
  rng = np.random.default_rng(5)
  s = classifiers.make_specialist(generalist, len(h.superclasses[sparse_k].subclasses), "mixed")
  tensors = [t for t in _backbone_tensors(s) if t[2].shape.rank >= 2 and t[2].shape[-1] > 1]
  assert len(tensors) >= 9
  forms = dict(zip((1, 3, 4, 6, 8), ("dense", "sparse", "signed", "dense", "signed")))
  for n, form in forms.items():
    v = tensors[n][2]
    values = v.numpy()
    if form == "dense":
      values += rng.normal(0, 0.05, values.shape).astype(np.float32)
    elif form == "sparse":
      values.flat[rng.choice(values.size, 5, replace=False)] += 0.3
    else:
      amounts = rng.uniform(0.001, 0.01, values.shape[-1]).astype(np.float32)
      values += np.where(rng.random(values.shape) < 0.5, amounts, -amounts)
    v.assign(values)
  module = saved_model_lib.SuperSubModule(generalist, {sparse_k: s,
                                                       dense_k: specialists[dense_k]}, h)
  assert module.specialists[str(sparse_k)].changed == [
      (tensors[n][0], tensors[n][1], form) for n, form in forms.items()]
  rebuilt = module._specialist_weights(sparse_k)  # pylint: disable=protected-access
  for i, j, v in _backbone_tensors(s):
    np.testing.assert_allclose(rebuilt[i][j].numpy(), v.numpy(), atol=1e-6, err_msg=v.name)


def test_weight_assembly_is_one_traced_block_whatever_the_tensor_count(models):
  """The function that adds a delta to the base holds a fixed set of operations plus the
  reshape of each tensor, not operations per tensor for each form of delta (unrolled, it was
  0.5 MB of a 224-px MobileNetV2 SavedModel)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  h, generalist, specialists, _ = models
  module = saved_model_lib.SuperSubModule(generalist, specialists, h)
  tensors = len(_backbone_tensors(generalist))
  graph = module._patched.get_concrete_function().graph  # pylint: disable=protected-access
  # Per tensor: its reshape, its shape and its output (3); the rest is a fixed block (~150
  # operations). Unrolled, every tensor took ~16.
  assert len(graph.get_operations()) < 5 * tensors + 100


@pytest.mark.slow
def test_matches_keras_two_stage_in_a_fresh_process(models_and_path, tmp_path):
  """Image by image, on 20 images routed 4 to each superclass, so both specialists (the
  sparse and the dense delta) serve 4 each."""
  h, generalist, specialists, path, images = models_and_path
  np.save(tmp_path / "images.npy", images)
  child = f"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load({path!r})
out = model.signatures["serving_default"](images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
np.savez({str(tmp_path / 'out.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("super_sub"))))
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
  done = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no super-sub code needed
  expected = routing.TwoStage(generalist, specialists, h).predict(images, mode="hard")
  _assert_every_specialist_served(expected["superclass"], h, IMAGES_PER_SUPERCLASS)
  with np.load(tmp_path / "out.npz") as got:
    np.testing.assert_array_equal(got["superclass"], expected["superclass"])
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_allclose(got["superclass_probs"], expected["superclass_probs"], atol=1e-5)
    np.testing.assert_allclose(got["label_probs"], expected["label_probs"], atol=1e-5)


@pytest.mark.slow
def test_signature_is_documented_shape(models_and_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  *_, path, _ = models_and_path
  serving = tf.saved_model.load(path).signatures["serving_default"]
  assert list(serving.structured_input_signature[1]) == ["images"]
  assert set(serving.structured_outputs) == {"superclass", "superclass_probs", "label",
                                             "label_probs"}
  out = serving(images=tf.zeros([1, 28, 28, 1]))  # batch 1: most specialists get no rows
  assert out["label_probs"].shape == (1, 10)


def test_backbone_mismatch_is_refused(models):
  h, generalist, specialists, _ = models
  other = classifiers.build_classifier("resnet18", (32, 32, 3), 4, "specialist", "specialist_0")
  with pytest.raises(ValueError, match="does not match the base"):
    saved_model_lib.SuperSubModule(generalist, {**specialists, 0: other}, h)


@pytest.mark.slow
def test_quantization_aware_models_export_with_their_float_weights(models, tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  h, generalist, specialists, images = models
  qat = {k: qat_lib.quantize(m) for k, m in specialists.items()}
  path = str(tmp_path / "qat_saved_model")
  saved_model_lib.export_saved_model(path, qat_lib.quantize(generalist), qat, h)
  out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  # Same float weights as the models above, so the same answers as their float two-stage, on
  # the 20 images routed 4 to each superclass.
  expected = routing.TwoStage(generalist, specialists, h).predict(images, mode="hard")
  _assert_every_specialist_served(out["superclass"].numpy(), h, IMAGES_PER_SUPERCLASS)
  np.testing.assert_array_equal(out["superclass"].numpy(), expected["superclass"])
  np.testing.assert_allclose(out["label_probs"].numpy(), expected["label_probs"], atol=1e-5)


def _conv_ops(module, shape) -> tuple[int, int]:
  """(convolutions in the serving graph, convolutions run when every specialist gets rows):
  the first counts each traced function once, the second once per call."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  graph = tf.function(module.serve).get_concrete_function(
      tf.TensorSpec([None, *shape], tf.float32)).graph.as_graph_def()
  functions = {f.signature.name: list(f.node_def) for f in graph.library.function}

  def is_conv(node):
    return node.op in ("Conv2D", "DepthwiseConv2dNative")

  def run(nodes):  # a called function's convolutions, each time it is called
    called = [a.func.name for n in nodes for key, a in n.attr.items()
              if a.HasField("func") and key != "else_branch"]  # else: a specialist without rows
    return sum(map(is_conv, nodes)) + sum(run(functions[f]) for f in called if f in functions)

  stored = sum(map(is_conv, graph.node)) + sum(sum(map(is_conv, f)) for f in functions.values())
  return stored, run(list(graph.node))


@pytest.mark.slow
def test_shared_trunk_runs_once_and_matches_keras(tmp_path):
  """--freeze_stages=2 specialists: the stem and stage 1 run once per batch, the generalist and
  the specialists start from their output, and the answers are the Keras two-stage's."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("fashion_mnist")
  rng = np.random.default_rng(3)
  generalist = classifiers.build_classifier("small_resnet", (28, 28, 1), h.num_superclasses,
                                            "generalist", "generalist")
  images = _images(rng)
  set_head(generalist, images)  # 4 images to each superclass
  specialists = {}
  for k in h.specialist_superclasses():
    s = classifiers.make_specialist(generalist, len(h.superclasses[k].subclasses),
                                    f"specialist_{k}", freeze_stages=2)
    for v in s.trainable_weights:  # fine-tuning moves every weight after the frozen stages
      v.assign(v.numpy() + rng.normal(0, 0.05, v.shape).astype(np.float32))
    specialists[k] = s
  convs = sum(type(l).__name__ == "Conv2D" for l in generalist.layers)
  trunk_convs = sum(type(l).__name__ == "Conv2D" and l.name.startswith(("stem_", "stage1_"))
                    for l in generalist.layers)
  assert 0 < trunk_convs < convs
  shared = saved_model_lib.SuperSubModule(generalist, specialists, h, shared_stages=2)
  plain = saved_model_lib.SuperSubModule(generalist, specialists, h)
  models = 1 + len(specialists)
  # The graph holds each convolution once; the trunk's run once, the rest once per model.
  assert _conv_ops(plain, (28, 28, 1)) == (convs, models * convs)
  assert _conv_ops(shared, (28, 28, 1)) == (convs, trunk_convs + models * (convs - trunk_convs))
  # The trunk's weights store no delta.
  for k in specialists:
    changed = {i for i, *_ in shared.specialists[str(k)].changed}
    assert min(changed) > max(i for i, l in enumerate(generalist.layers)
                              if l.name.startswith(("stem_", "stage1_")))
  path = str(tmp_path / "saved_model")
  saved_model_lib.export_saved_model(path, generalist, specialists, h, shared_stages=2)
  # The file, too, holds each convolution once (saving had stored the network after the
  # trunk twice: the function every model calls, traced again for the module's attribute).
  stored = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    stored.ParseFromString(f.read())
  assert sum(n.op == "Conv2D" for f in stored.meta_graphs[0].graph_def.library.function
             for n in f.node_def) == convs
  out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  expected = routing.TwoStage(generalist, specialists, h).predict(images, mode="hard")
  _assert_every_specialist_served(expected["superclass"], h, IMAGES_PER_SUPERCLASS)
  np.testing.assert_array_equal(out["superclass"].numpy(), expected["superclass"])
  np.testing.assert_allclose(out["label_probs"].numpy(), expected["label_probs"], atol=1e-5)


def test_shared_trunk_needs_specialists_that_left_it_unchanged(models):
  h, generalist, specialists, _ = models  # these changed the stem
  with pytest.raises(ValueError, match="inside the first 2 stages that a shared trunk needs"):
    saved_model_lib.SuperSubModule(generalist, specialists, h, shared_stages=2)
