"""Two-stage routing on hand-made models whose outputs are fixed per image, checked by hand."""

import numpy as np
import pytest
import tensorflow as tf

from super_sub import routing
from super_sub._internal.compat import keras
from super_sub.models import classifiers

from routing_cases import (FLAT, PRODUCT_HARD_LABEL, PRODUCT_SUPERCLASS_PROBS, GENERALIST, HARD_LABEL, HARD_LABEL_PROBS, HARD_SUPERCLASS,
                           NUM_IMAGES, SOFT2_LABEL, SOFT2_LABEL_PROBS, SPEC_A, SPEC_B, TOY)


class _Recorder(keras.layers.Layer):
  """Identity that records the batch size of every eager call."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.calls = []

  def call(self, x):
    if tf.executing_eagerly():
      self.calls.append(int(x.shape[0]))
    return x


def _fixed_model(probs, name, num_images=NUM_IMAGES):
  """A model whose logits for image e_i are log(probs[i]): softmax gives probs[i] back."""
  probs = np.asarray(probs, np.float32)
  image = keras.Input((1, 1, num_images), name="image")
  x = _Recorder(name="recorder")(keras.layers.Flatten()(image))
  dense = keras.layers.Dense(probs.shape[1], use_bias=False, name="head")
  model = keras.Model(image, dense(x), name=name)
  dense.set_weights([np.log(probs)])
  return model


def _calls(model):
  return model.get_layer("recorder").calls


@pytest.fixture
def two_stage():
  return routing.TwoStage(_fixed_model(GENERALIST, "generalist"),
                          {0: _fixed_model(SPEC_A, "specialist_0"),
                           1: _fixed_model(SPEC_B, "specialist_1")}, TOY)


def _images(indices):
  return np.eye(NUM_IMAGES, dtype=np.float32)[list(indices)].reshape(-1, 1, 1, NUM_IMAGES)


def test_hard_routing(two_stage):
  out = two_stage.predict(_images(range(4)), mode="hard", batch_size=4)
  np.testing.assert_array_equal(out["superclass"], HARD_SUPERCLASS)
  np.testing.assert_allclose(out["superclass_probs"], GENERALIST, atol=1e-6)
  np.testing.assert_array_equal(out["label"], HARD_LABEL)
  np.testing.assert_allclose(out["label_probs"], HARD_LABEL_PROBS, atol=1e-6)


def test_soft_routing_differs_from_hard(two_stage):
  out = two_stage.predict(_images(range(4)), mode="soft", k=2, batch_size=4)
  np.testing.assert_array_equal(out["superclass"], HARD_SUPERCLASS)
  np.testing.assert_allclose(out["label_probs"], SOFT2_LABEL_PROBS, atol=1e-6)
  np.testing.assert_array_equal(out["label"], SOFT2_LABEL)
  # k = 3 follows every superclass: rows sum to 1 and img0 gains C's 0.1.
  out3 = two_stage.predict(_images(range(4)), mode="soft", k=3)
  np.testing.assert_allclose(out3["label_probs"].sum(axis=1), 1.0, atol=1e-6)
  assert out3["label_probs"][0, 5] == pytest.approx(0.1)
  # k above the superclass count means all superclasses.
  np.testing.assert_allclose(two_stage.predict(_images(range(4)), mode="soft", k=9)["label_probs"],
                             out3["label_probs"])


def test_each_specialist_runs_once_per_batch_on_its_rows(two_stage):
  spec_a, spec_b = two_stage.specialists[0], two_stage.specialists[1]
  two_stage.predict(_images(range(4)), mode="soft", k=2, batch_size=4)
  assert _calls(two_stage.generalist) == [4]
  assert _calls(spec_a) == [3]  # img0, img2, img3
  assert _calls(spec_b) == [3]  # img0, img1, img2
  for model in (two_stage.generalist, spec_a, spec_b):
    _calls(model).clear()
  # Hard, two batches: (img0, img1) sends only img0 to A; (img2, img3) only img2 to B.
  two_stage.predict(_images(range(4)), mode="hard", batch_size=2)
  assert _calls(two_stage.generalist) == [2, 2]
  assert _calls(spec_a) == [1] and _calls(spec_b) == [1]


def test_empty_groups_call_no_specialist(two_stage):
  out = two_stage.predict(_images([1, 3]), mode="hard", batch_size=1)  # both routed to C
  np.testing.assert_array_equal(out["label"], [5, 5])
  assert _calls(two_stage.specialists[0]) == [] and _calls(two_stage.specialists[1]) == []
  empty = two_stage.predict(np.zeros((0, 1, 1, NUM_IMAGES), np.float32), mode="soft")
  assert empty["label"].shape == (0,) and empty["label_probs"].shape == (0, 6)
  assert empty["superclass_probs"].shape == (0, 3)
  assert _calls(two_stage.generalist) == [1, 1]


def test_oracle_routes_by_given_superclasses(two_stage):
  out = two_stage.oracle(_images(range(4)), np.array([1, 1, 0, 2]), batch_size=3)
  np.testing.assert_array_equal(out["superclass"], [1, 1, 0, 2])
  np.testing.assert_array_equal(out["superclass_probs"], np.eye(3)[[1, 1, 0, 2]])
  np.testing.assert_array_equal(out["label"], [2, 4, 1, 5])
  np.testing.assert_allclose(out["label_probs"], [[0, 0, 0.90, 0.05, 0.05, 0],
                                                  [0, 0, 0.20, 0.30, 0.50, 0],
                                                  [0.20, 0.80, 0, 0, 0, 0],
                                                  [0, 0, 0, 0, 0, 1]], atol=1e-6)
  assert _calls(two_stage.generalist) == []
  assert _calls(two_stage.specialists[1]) == [2]  # img0 and img1, both in the first batch
  with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
    two_stage.oracle(_images(range(2)), np.array([0, 3]))
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    two_stage.oracle(_images(range(2)), np.array([0, 1, 2]))


def test_bad_inputs(two_stage):
  with pytest.raises(ValueError, match=r"shape \(N, 1, 1, 4\).*got \(2, 1, 1, 5\)"):
    two_stage.predict(np.zeros((2, 1, 1, 5), np.float32))
  with pytest.raises(ValueError, match=r"shape \(N, 1, 1, 4\).*got \(2, 4\)"):
    two_stage.predict(np.zeros((2, 4), np.float32))
  with pytest.raises(TypeError, match="must be uint8 or floating point"):
    two_stage.predict(np.zeros((2, 1, 1, 4), np.int32))
  # uint8 images follow the image contract, as in the runtime: divided by 255.
  as_uint8 = two_stage.predict(np.full((2, 1, 1, 4), 51, np.uint8))
  as_float = two_stage.predict(np.full((2, 1, 1, 4), 0.2, np.float32))
  np.testing.assert_allclose(as_uint8["label_probs"], as_float["label_probs"], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown routing mode 'medium'"):
    two_stage.predict(_images([0]), mode="medium")
  with pytest.raises(ValueError, match="k must be a positive integer"):
    two_stage.predict(_images([0]), mode="soft", k=0)
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    two_stage.predict(_images([0]), batch_size=0)


def test_product_router_with_the_flat_network():
  two = routing.TwoStage(_fixed_model(GENERALIST, "generalist"),
                         {0: _fixed_model(SPEC_A, "specialist_0"),
                          1: _fixed_model(SPEC_B, "specialist_1")}, TOY,
                         flat=_fixed_model(FLAT, "flat"))
  out = two.predict(_images(range(4)), mode="hard", router="product")
  np.testing.assert_allclose(out["superclass_probs"], PRODUCT_SUPERCLASS_PROBS, atol=1e-5)
  np.testing.assert_array_equal(out["label"], PRODUCT_HARD_LABEL)


def test_routers_that_need_the_flat_network_say_so(two_stage):
  with pytest.raises(ValueError, match="router 'flat' needs the flat network"):
    two_stage.predict(_images(range(4)), router="flat")
  with pytest.raises(ValueError, match="flat network .* outputs 3 logits; expected 6"):
    routing.TwoStage(_fixed_model(GENERALIST, "generalist"),
                     {0: _fixed_model(SPEC_A, "specialist_0"),
                      1: _fixed_model(SPEC_B, "specialist_1")}, TOY,
                     flat=_fixed_model(GENERALIST, "flat"))


def test_bad_models():
  gen = _fixed_model(GENERALIST, "generalist")
  spec_a, spec_b = _fixed_model(SPEC_A, "a"), _fixed_model(SPEC_B, "b")
  with pytest.raises(ValueError, match=r"missing: 1 \('B'\); extra: none"):
    routing.TwoStage(gen, {0: spec_a}, TOY)
  with pytest.raises(ValueError, match=r"missing: none; extra: 2 \('C'\), 7 \(no such"):
    routing.TwoStage(gen, {0: spec_a, 1: spec_b, 2: spec_a, 7: spec_a}, TOY)
  with pytest.raises(ValueError, match=r"superclass 1 \('B'\): model 'a' outputs 2 logits; "
                                       r"expected 3"):
    routing.TwoStage(gen, {0: spec_a, 1: spec_a}, TOY)
  with pytest.raises(ValueError, match=r"generalist.*outputs 2 logits; expected 3"):
    routing.TwoStage(spec_a, {0: spec_a, 1: spec_b}, TOY)
  wide = _fixed_model(np.full((5, 3), 1 / 3), "wide", num_images=5)
  with pytest.raises(ValueError, match=r"inputs of shape \(1, 1, 5\), the generalist \(1, 1, 4\)"):
    routing.TwoStage(gen, {0: spec_a, 1: wide}, TOY)


def test_real_conv_models_with_batches_of_one():
  """Conv specialists from make_specialist; batch size 1 leaves most groups empty."""
  generalist = classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "generalist", "generalist")
  specialists = {k: classifiers.make_specialist(generalist, len(TOY.subclass_range(k)),
                                           f"specialist_{k}")
                 for k in TOY.specialist_superclasses()}
  two_stage = routing.TwoStage(generalist, specialists, TOY)
  images = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
  hard = two_stage.predict(images, mode="hard", batch_size=1)
  soft = two_stage.predict(images, mode="soft", k=2, batch_size=1)
  np.testing.assert_allclose(hard["label_probs"].sum(axis=1), 1.0, atol=1e-5)
  assert np.all(soft["label_probs"].sum(axis=1) <= 1.0 + 1e-5)
  np.testing.assert_array_equal(TOY.superclass_of[hard["label"]], hard["superclass"])
  np.testing.assert_array_equal(hard["superclass"], soft["superclass"])
  # One row a batch must give what a whole batch gives: no row sent to another's specialist.
  for mode, one_by_one in (("hard", hard), ("soft", soft)):
    whole = two_stage.predict(images, mode=mode, k=2, batch_size=3)
    for key in ("superclass", "label"):
      np.testing.assert_array_equal(one_by_one[key], whole[key])
    np.testing.assert_allclose(one_by_one["label_probs"], whole["label_probs"], atol=1e-6)
