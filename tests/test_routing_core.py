"""The two-stage core (numpy) and the SavedModel's graph mirror, on the same hand-computed cases
as the Keras router (tests/routing_cases.py)."""

import numpy as np
import pytest

from super_sub.routing import core
from routing_cases import (DUSTBIN_HARD_LABEL, DUSTBIN_HARD_LABEL_PROBS,
                           DUSTBIN_SOFT2_LABEL_PROBS, SPEC_A_DUSTBIN, FLAT, FLAT_HARD_LABEL, FLAT_SUPERCLASS_PROBS, PRODUCT_HARD_LABEL,
                           PRODUCT_SUPERCLASS_PROBS, GENERALIST, HARD_LABEL, HARD_LABEL_PROBS, HARD_SUPERCLASS,
                           ORACLE_LABEL_PROBS, ORACLE_SUPERCLASSES, SOFT2_LABEL,
                           SOFT2_LABEL_PROBS, SPECIALISTS, TOY, images, logits)


def _generalist(x):
  return logits(GENERALIST, x)


def _specialists(calls=None):
  def run(k, x):
    if calls is not None:
      calls.append((k, len(x)))
    assert len(x) > 0, "a specialist must never run on zero rows"
    return logits(SPECIALISTS[k], x)
  return run


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_hard(batch_size):
  out = core.predict(images(), TOY, _generalist, _specialists(), mode="hard",
                     batch_size=batch_size)
  np.testing.assert_array_equal(out["superclass"], HARD_SUPERCLASS)
  np.testing.assert_allclose(out["superclass_probs"], GENERALIST, atol=1e-6)
  np.testing.assert_array_equal(out["label"], HARD_LABEL)
  np.testing.assert_allclose(out["label_probs"], HARD_LABEL_PROBS, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_soft_top2(batch_size):
  out = core.predict(images(), TOY, _generalist, _specialists(), mode="soft", k=2,
                     batch_size=batch_size)
  np.testing.assert_array_equal(out["label"], SOFT2_LABEL)
  np.testing.assert_allclose(out["label_probs"], SOFT2_LABEL_PROBS, atol=1e-6)


def test_oracle():
  out = core.oracle(images(), np.array(ORACLE_SUPERCLASSES), TOY, _specialists(),
                    batch_size=3)
  np.testing.assert_array_equal(out["superclass"], ORACLE_SUPERCLASSES)
  np.testing.assert_allclose(out["superclass_probs"], np.eye(3)[ORACLE_SUPERCLASSES])
  np.testing.assert_allclose(out["label_probs"], ORACLE_LABEL_PROBS, atol=1e-6)


def test_groups_rows_by_superclass_and_visits_first_what_is_asked():
  calls = []
  core.predict(images(), TOY, _generalist, _specialists(calls), mode="soft", k=2,
               batch_size=4, first=lambda k: k == 1)
  # Soft k=2: A gets img0, img2, img3; B gets img0, img1, img2; C has no specialist.
  assert calls == [(1, 3), (0, 3)]
  calls.clear()
  core.predict(images(), TOY, _generalist, _specialists(calls), mode="hard", batch_size=4)
  assert calls == [(0, 1), (1, 1)]  # C's rows never reach a specialist


def test_trunk_runs_once_before_the_models():
  seen = []

  def trunk(x):
    seen.append(len(x))
    return x

  out = core.predict(images(), TOY, _generalist, _specialists(), batch_size=3, trunk=trunk)
  assert seen == [3, 1]
  np.testing.assert_array_equal(out["label"], HARD_LABEL)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_trunk_that_routes_replaces_the_generalist(batch_size):
  """A trunk with the router head inside (super_sub.runtime.fusion) gives (features, logits)."""
  def trunk(x):
    return x, _generalist(x)

  for mode, label_probs in (("hard", HARD_LABEL_PROBS), ("soft", SOFT2_LABEL_PROBS)):
    out = core.predict(images(), TOY, None, _specialists(), mode=mode, batch_size=batch_size,
                       trunk=trunk)
    np.testing.assert_allclose(out["superclass_probs"], GENERALIST, atol=1e-6)
    np.testing.assert_allclose(out["label_probs"], label_probs, atol=1e-6)
  with pytest.raises(ValueError, match="needs a generalist, or a trunk that routes"):
    core.predict(images(), TOY, None, _specialists())


def test_no_images_calls_no_model():
  def never(*_):
    raise AssertionError("no model may run on zero images")

  out = core.predict(images([]), TOY, never, never)
  assert out["label_probs"].shape == (0, TOY.num_subclasses)
  assert out["superclass_probs"].shape == (0, TOY.num_superclasses)


@pytest.mark.parametrize("options, message", [
    (dict(mode="medium"), "unknown routing mode 'medium'"),
    (dict(k=0), "k must be a positive integer; got 0"),
    (dict(k=True), "k must be a positive integer"),
    (dict(batch_size=0), "batch_size must be a positive integer; got 0"),
])
def test_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    core.predict(images(), TOY, _generalist, _specialists(), **options)


def test_graph_mirror_matches_the_hard_cases():
  """The SavedModel's in-graph routing, with the same fixed models as TensorFlow functions."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from super_sub.bundles import saved_model  # pylint: disable=import-outside-toplevel

  def as_tf(table):
    table = tf.constant(np.log(np.asarray(table, np.float32)))
    return lambda x: tf.gather(table, tf.argmax(tf.reshape(x, [-1, 4]), axis=1))

  calls = []

  def specialists(k, x):
    calls.append(k)
    return as_tf(SPECIALISTS[k])(x)

  graph = tf.function(lambda x: saved_model.two_stage_graph(x, TOY, as_tf(GENERALIST),
                                                            specialists))
  for indices in (range(4), [1], [3, 1]):  # [1]: no row for A or B, both skipped in-graph
    x = images(indices)
    out = {k: v.numpy() for k, v in graph(tf.constant(x)).items()}
    rows = list(indices)
    np.testing.assert_array_equal(out["superclass"], np.asarray(HARD_SUPERCLASS)[rows])
    np.testing.assert_array_equal(out["label"], np.asarray(HARD_LABEL)[rows])
    np.testing.assert_allclose(out["label_probs"], np.asarray(HARD_LABEL_PROBS)[rows],
                               atol=1e-6)
    np.testing.assert_allclose(out["superclass_probs"], np.asarray(GENERALIST)[rows], atol=1e-6)
  assert sorted(set(calls)) == TOY.specialist_superclasses()  # C (one subclass) never has one


def test_superclass_probs_sums_each_superclass_columns():
  np.testing.assert_allclose(core.superclass_probs(np.array(FLAT), TOY), FLAT_SUPERCLASS_PROBS,
                             atol=1e-6)


@pytest.mark.parametrize("router, expected_probs, expected_label", [
    ("generalist", GENERALIST, [0, 5, 4, 5]),
    ("flat", FLAT_SUPERCLASS_PROBS, FLAT_HARD_LABEL),
    ("product", PRODUCT_SUPERCLASS_PROBS, PRODUCT_HARD_LABEL)])
def test_routers(router, expected_probs, expected_label):
  def route(x):
    return core.router_logits(router, logits(GENERALIST, x), logits(FLAT, x), TOY)
  out = core.predict(images(), TOY, route, _specialists(), mode="hard", batch_size=3)
  np.testing.assert_allclose(out["superclass_probs"], expected_probs, atol=1e-6)
  np.testing.assert_array_equal(out["label"], expected_label)


def test_router_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown router 'best'"):
    core.router_logits("best", np.zeros((1, 3)), None, TOY)
  with pytest.raises(ValueError, match="router 'product' needs the generalist and flat"):
    core.router_logits("product", np.zeros((1, 3)), None, TOY)


def test_flat_router_survives_a_zero_probability():
  flat = np.log(np.array([[1.0, 0, 0, 0, 0, 0]]) + 1e-300)  # B and C get exactly 0 after exp
  out = core.router_logits("product", np.zeros((1, 3)), flat, TOY)
  assert np.isfinite(out).all() and out.argmax() == 0


def _dustbin_specialists(calls=None):
  tables = {0: SPEC_A_DUSTBIN, 1: SPECIALISTS[1]}
  def run(k, x):
    if calls is not None:
      calls.append((k, len(x)))
    return logits(tables[k], x)
  return run


def test_dustbin_hard_falls_back_to_the_second_superclass():
  calls = []
  out = core.predict(images(), TOY, _generalist, _dustbin_specialists(calls), mode="hard",
                     batch_size=4)
  np.testing.assert_array_equal(out["superclass"], [0, 2, 1, 2])  # still the generalist's
  np.testing.assert_array_equal(out["label"], DUSTBIN_HARD_LABEL)
  np.testing.assert_allclose(out["label_probs"], DUSTBIN_HARD_LABEL_PROBS, atol=1e-6)
  assert calls == [(0, 1), (1, 1), (1, 1)]  # A said "not mine" to img0: B answers it


def test_dustbin_soft_leaves_the_not_mine_mass_out():
  out = core.predict(images(), TOY, _generalist, _dustbin_specialists(), mode="soft", k=2)
  np.testing.assert_allclose(out["label_probs"], DUSTBIN_SOFT2_LABEL_PROBS, atol=1e-6)


def test_specialist_of_the_wrong_width_is_named():
  def bad(k, x):
    return np.zeros((len(x), 4))
  with pytest.raises(ValueError, match="superclass 0 \\('A'\\) gave 4 outputs; expected 2 "
                                       "subclasses \\(or 3 with a dustbin\\)"):
    core.predict(images(), TOY, _generalist, bad, mode="hard")
