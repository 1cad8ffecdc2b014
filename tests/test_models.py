"""Backbones, stage freezing and specialists built from a generalist (all weights=None: no downloads)."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from super_sub import hierarchy
from super_sub._internal.compat import keras
from super_sub.models import backbones
from super_sub.models import classifiers

# Parameter counts with a 5-way head (keras count_params; backbone alone in brackets):
#   small_resnet 28x28x1   308,773 (308,128)  -- the ~0.3M CPU network; 309,349 at 3 channels
#   resnet18     32x32x3 11,188,677 (11,186,112)
#   resnet50     32x32x3 23,597,969 (23,587,724, as keras.applications.ResNet50 + 12 input-norm)
#   mobilenet_v2 32x32x3  2,264,401 (2,257,996, as keras.applications.MobileNetV2 + 12 input-norm)
# Convolutional backbones do not depend on the image size.
SIZES = {"small_resnet": ((28, 28, 1), 308_773), "resnet18": ((32, 32, 3), 11_188_677),
         "resnet50": ((32, 32, 3), 23_597_969), "mobilenet_v2": ((32, 32, 3), 2_264_401)}


@pytest.fixture(scope="module")
def built():
  """One 5-way classifier per backbone, built once for the module."""
  return {name: classifiers.build_classifier(name, shape, 5, "flat", "flat")
          for name, (shape, _) in SIZES.items()}


def _images(shape, n=2, seed=0):
  return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_backbone_shapes_names_and_size(built, name):
  shape, params = SIZES[name]
  model = built[name]
  assert model(_images(shape), training=False).shape == (2, 5)
  assert model.count_params() == params
  assert model.layers[-1].name == "head" and model.layers[-2].name == "pool"
  assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat graph
  unstaged = [l.name for l in model.layers if backbones.stage_of(l.name) is None]
  assert unstaged == ["image", "pool", "head"]
  assert backbones.num_stages(model) == (3 if name == "small_resnet" else 4)
  assert classifiers.spec_of(model) == classifiers.ClassifierSpec(name, shape, 5, "flat", "flat")


def test_small_resnet_at_64px_and_rebuild_is_identical():
  first = classifiers.build_classifier("small_resnet", (64, 64, 3), 3, "generalist", "generalist")
  spec = classifiers.spec_of(first)
  second = classifiers.build_classifier(**spec.to_dict())
  assert second(_images((64, 64, 3)), training=False).shape == (2, 3)
  assert [l.name for l in second.layers] == [l.name for l in first.layers]  # no `_1` suffixes
  assert second.get_config() == first.get_config()


def test_build_classifier_on_a_backbone_model():
  backbone = backbones.build_backbone("small_resnet", (8, 8, 1))
  model = classifiers.build_classifier(backbone, (8, 8, 1), 3, "generalist", "generalist")
  assert model.layers[:-1] == backbone.layers  # the backbone's layers, not a nested Model
  assert classifiers.spec_of(model) == classifiers.ClassifierSpec("small_resnet", (8, 8, 1), 3,
                                                        "generalist", "generalist")
  with pytest.raises(ValueError, match=r"takes images of shape \(8, 8, 1\), not \(9, 9, 1\)"):
    classifiers.build_classifier(backbone, (9, 9, 1), 3, "generalist", "g")
  plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()], name="plain")
  with pytest.raises(ValueError, match="'plain' was not built by build_backbone"):
    classifiers.build_classifier(plain, (8, 8, 1), 3, "generalist", "g")


@pytest.mark.parametrize("name", ["small_resnet",
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_quantize_model_accepts(built, name):
  quantized = tfmot.quantization.keras.quantize_model(built[name])
  assert quantized(_images(SIZES[name][0], n=1), training=False).shape == (1, 5)
  assert backbones.num_stages(quantized) == backbones.num_stages(built[name])  # quant_ prefix


@pytest.mark.slow
@pytest.mark.parametrize("name,preprocess", [
    ("resnet50", keras.applications.resnet50.preprocess_input),
    ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input)])
def test_pretrained_weights_load_with_input_scaling(tmp_path, name, preprocess):
  """The "imagenet" loading path, offline: random keras.applications weights from an .h5 file.

  Our backbone on [0, 1] images must equal keras.applications' model on its own preprocessing.
  """
  app = getattr(keras.applications, backbones.PRETRAINED[name])
  reference = app(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
  rng = np.random.default_rng(1)
  for layer in reference.layers:  # non-trivial BatchNorm statistics
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.set_weights([w + rng.random(w.shape, dtype=np.float32) for w in layer.get_weights()])
  path = str(tmp_path / f"{name}.h5")
  reference.save_weights(path)
  ours = backbones.build_backbone(name, (32, 32, 3), weights=path)
  x = _images((32, 32, 3), n=3)
  want = reference(preprocess(x * 255.0), training=False).numpy()
  np.testing.assert_allclose(ours(x, training=False).numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args,message", [
    (("vgg16", (32, 32, 3)), "unknown backbone 'vgg16'"),
    (("small_resnet", (32, 32, 3), "imagenet"), "no pretrained weights"),
    (("mobilenet_v2", (32, 32, 3), "imagenet21k"), "weights must be None, 'imagenet' or"),
    (("resnet50", (32, 32, 3), "/no/such/file.h5"), "weights must be None, 'imagenet' or"),
    (("small_resnet", (4, 4, 1)), "at least 8x8 pixels; got 4x4"),
    (("mobilenet_v2", (16, 16, 3)), "at least 32x32 pixels; got 16x16"),
    (("resnet18", (32, 24, 3)), "at least 32x32 pixels; got 32x24"),
    (("mobilenet_v2", (32, 32, 1)), "3 channels"),
    (("small_resnet", (32, 32)), "(height, width, channels)"),
])
def test_build_backbone_errors(args, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    backbones.build_backbone(*args)


def test_build_classifier_errors():
  with pytest.raises(ValueError, match="unknown role 'expert'"):
    classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "expert", "m")
  with pytest.raises(ValueError, match="num_classes >= 2"):
    classifiers.build_classifier("small_resnet", (8, 8, 1), 1, "specialist", "m")


def test_stage_of():
  assert backbones.stage_of("stem_conv") == 0
  assert backbones.stage_of("stage3_block1_add") == 3
  assert backbones.stage_of("quant_stage12_x") == 12
  assert [backbones.stage_of(n) for n in ("image", "pool", "head", "stagex_y")] == [None] * 4


def test_freeze_stages():
  model = classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "flat", "flat")
  for k in range(5):  # stem + 3 stages
    backbones.freeze_stages(model, k)
    for layer in model.layers:
      stage = backbones.stage_of(layer.name)
      assert layer.trainable == (stage is None or stage >= k), (k, layer.name)
  backbones.freeze_stages(model, 2)
  frozen = [l for l in model.layers if backbones.stage_of(l.name) in (0, 1)]
  assert frozen and all(l.weights and not l.trainable_weights for l in frozen if l.weights)
  expected = {w.ref() for l in model.layers if l not in frozen for w in l.trainable_weights}
  assert {w.ref() for w in model.trainable_weights} == expected
  # Frozen BatchNorm runs in inference mode even when training: its statistics stay put.
  before = {n: model.get_layer(n).moving_mean.numpy() for n in ("stem_bn", "stage2_block1_1_bn")}
  model(_images((8, 8, 1), n=4) * 5.0, training=True)
  np.testing.assert_array_equal(model.get_layer("stem_bn").moving_mean.numpy(), before["stem_bn"])
  assert not np.array_equal(model.get_layer("stage2_block1_1_bn").moving_mean.numpy(),
                            before["stage2_block1_1_bn"])
  with pytest.raises(ValueError, match=r"in \[0, 4\]"):
    backbones.freeze_stages(model, 5)


def test_input_norm_never_trainable(built):
  model = built["mobilenet_v2"]
  backbones.freeze_stages(model, 0)
  assert not model.get_layer(backbones.INPUT_NORM_NAME).trainable
  assert all(l.trainable for l in model.layers if l.name != backbones.INPUT_NORM_NAME)


def test_make_specialist_copies_backbone_by_position():
  generalist = classifiers.build_classifier("small_resnet", (8, 8, 1), 4, "generalist", "generalist")
  generalist(_images((8, 8, 1)), training=True)  # move BN statistics away from their init
  for layer in generalist.layers:  # as if a second model in the process got `_1` suffixes
    layer._name = layer.name + "_1"  # pylint: disable=protected-access
  kernel = np.arange(128 * 3, dtype=np.float32).reshape(128, 3)
  bias = np.array([1.0, 2.0, 3.0], np.float32)
  specialist = classifiers.make_specialist(generalist, 3, "specialist_2", freeze_stages=2,
                                      head_init=(kernel, bias))
  assert specialist.name == "specialist_2"
  assert specialist.output_shape == (None, 3)
  assert classifiers.spec_of(specialist).role == "specialist"
  assert not any(l.name.endswith("_1") for l in specialist.layers)
  assert len(generalist.layers) == len(specialist.layers)
  for g, s in zip(generalist.layers[:-1], specialist.layers[:-1]):
    assert g.name == s.name + "_1"
    for a, b in zip(g.weights, s.weights, strict=True):
      assert np.array_equal(a.numpy(), b.numpy()), s.name
  np.testing.assert_array_equal(specialist.get_layer("head").kernel.numpy(), kernel)
  np.testing.assert_array_equal(specialist.get_layer("head").bias.numpy(), bias)
  assert not specialist.get_layer("stage1_block1_1_conv").trainable
  assert specialist.get_layer("stage2_block1_1_conv").trainable
  with pytest.raises(ValueError, match=r"expected \(128, 3\), \(3,\)"):
    classifiers.make_specialist(generalist, 3, "s", head_init=(kernel.T, bias))


def test_make_specialist_needs_a_built_classifier_and_matching_backbones():
  plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
  with pytest.raises(ValueError, match="not built by super_sub.models.classifiers.build_classifier"):
    classifiers.make_specialist(plain, 2, "s")
  small = classifiers.build_classifier("small_resnet", (32, 32, 3), 3, "flat", "a")
  other = classifiers.build_classifier("resnet18", (32, 32, 3), 3, "flat", "b")
  with pytest.raises(ValueError, match="backbones differ"):
    classifiers.copy_backbone_weights(small, other)


def test_specialist_superclasses():
  h = hierarchy.from_groups("toy", [("A", [("a0", 0), ("a1", 1)]), ("B", [("b0", 2)]),
                                    ("C", [("c0", 3), ("c1", 4), ("c2", 5)])])
  assert h.specialist_superclasses() == [0, 2]
