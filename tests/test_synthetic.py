"""Tests for super_sub.synthetic: determinism, balance and that the shapes are really drawn."""

import numpy as np
import pytest

from super_sub.data import synthetic


def test_deterministic_per_seed_and_split():
  first = list(synthetic.generate("train", 2, size=16, seed=3))
  again = list(synthetic.generate("train", 2, size=16, seed=3))
  other_seed = list(synthetic.generate("train", 2, size=16, seed=4))
  validation = list(synthetic.generate("validation", 2, size=16, seed=3))
  for (k1, a, l1), (k2, b, l2) in zip(first, again):
    assert (k1, l1) == (k2, l2)
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0][1], other_seed[0][1])
  assert not np.array_equal(first[0][1], validation[0][1])


def test_balanced_labels_and_shapes():
  h = synthetic.load_hierarchy()
  examples = list(synthetic.generate("train", 3, size=24))
  labels = np.array([label for _, _, label in examples])
  np.testing.assert_array_equal(np.bincount(labels, minlength=h.num_subclasses),
                                np.full(h.num_subclasses, 3))
  assert {img.shape for _, img, _ in examples} == {(24, 24, 3)}
  assert {img.dtype for _, img, _ in examples} == {np.dtype(np.uint8)}
  assert len({key for key, _, _ in examples}) == len(examples)


@pytest.mark.parametrize("name", sorted(synthetic.RENDERERS))
def test_every_shape_covers_part_of_the_canvas(name):
  ys, xs = np.mgrid[-1.2:1.2:64j, -1.2:1.2:64j]
  coverage = synthetic.RENDERERS[name](xs, ys).mean()
  assert 0.05 < coverage < 0.9, f"{name} covers {coverage:.2f} of the canvas"


def test_siblings_differ():
  ys, xs = np.mgrid[-1.2:1.2:64j, -1.2:1.2:64j]
  h = synthetic.load_hierarchy()
  for sup in h.superclasses:
    masks = [synthetic.RENDERERS[s.name](xs, ys) for s in sup.subclasses]
    for i in range(len(masks)):
      for j in range(i + 1, len(masks)):
        assert (masks[i] != masks[j]).mean() > 0.03, (sup.subclasses[i].name,
                                                      sup.subclasses[j].name)


def test_unknown_split():
  with pytest.raises(ValueError, match="unknown split 'test'"):
    next(synthetic.generate("test", 1))
