"""Tests for super_sub.hierarchy: index maps, lookup, JSON round trip, validation errors."""

import copy
import json

import numpy as np
import pytest

from super_sub import hierarchy as hierarchy_lib
from super_sub.hierarchy import Hierarchy, HierarchyError

# Two superclasses over a 6-label source dataset; source label 2 is outside the hierarchy.
SMALL = {
    "name": "small",
    "num_source_labels": 6,
    "superclasses": [
        {"name": "bird", "wnid": "n01503061", "subclasses": [
            {"name": "finch", "wnid": "n01529672", "source_label": 4},
            {"name": "robin", "wnid": None, "source_label": 0},
        ]},
        {"name": "dog", "wnid": "n02084071", "subclasses": [
            {"name": "pug", "wnid": "n02110958", "source_label": 5},
            {"name": "collie", "wnid": None, "source_label": 1},
            {"name": "basenji", "wnid": None, "source_label": 3},
        ]},
    ],
}


@pytest.fixture
def small():
  return Hierarchy.from_dict(SMALL)


def test_sizes_and_names(small):
  assert (small.num_superclasses, small.num_subclasses) == (2, 5)
  assert small.superclass_names == ["bird", "dog"]
  assert small.subclass_names == ["finch", "robin", "pug", "collie", "basenji"]


def test_index_maps(small):
  np.testing.assert_array_equal(small.superclass_of, [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(small.index_in_superclass, [0, 1, 0, 1, 2])
  np.testing.assert_array_equal(small.superclass_offsets, [0, 2, 5])
  assert small.global_index(1, 2) == 4
  assert list(small.subclass_range(1)) == [2, 3, 4]
  for label in range(small.num_subclasses):
    assert small.global_index(small.superclass_of[label],
                              small.index_in_superclass[label]) == label
  with pytest.raises(IndexError, match="'bird' has 2 subclasses; got index 2"):
    small.global_index(0, 2)


def test_source_label_maps(small):
  np.testing.assert_array_equal(small.source_to_global, [1, 3, -1, 4, 0, 2])
  np.testing.assert_array_equal(small.global_to_source, [4, 0, 5, 1, 3])
  # Whole label vectors map at once.
  np.testing.assert_array_equal(small.source_to_global[[5, 5, 0]], [2, 2, 1])


def test_lookup_by_name_and_wnid(small):
  assert small.lookup("pug") == ("subclass", 2)
  assert small.lookup("n02110958") == ("subclass", 2)
  assert small.lookup("n01503061") == ("superclass", 0)
  assert small.lookup("dog") == ("superclass", 1)
  with pytest.raises(KeyError, match="'cat' is neither a class name nor a WordNet id"):
    small.lookup("cat")


def test_json_round_trip(small, tmp_path):
  path = tmp_path / "small.json"
  small.to_json(path)
  assert json.loads(path.read_text()) == SMALL
  assert hierarchy_lib.load_hierarchy(path) == small
  assert [p.name for p in tmp_path.iterdir()] == ["small.json"]  # no temporary left behind


def test_immutable(small):
  with pytest.raises(AttributeError):
    small.name = "other"


def _with(change):
  data = copy.deepcopy(SMALL)
  change(data)
  return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d["superclasses"][1]["subclasses"].append(
        {"name": "finch", "wnid": None, "source_label": 2}),
     r"duplicate name 'finch' \(in subclass 'finch' of superclass 'bird' and "
     r"subclass 'finch' of superclass 'dog'\)"),
    (lambda d: d["superclasses"][1]["subclasses"].append(
        {"name": "finch2", "wnid": "n01529672", "source_label": 2}),
     "duplicate wnid 'n01529672'"),
    (lambda d: d["superclasses"][1]["subclasses"].append(
        {"name": "robin2", "wnid": None, "source_label": 0}),
     "duplicate source_label 0 .*'robin' of superclass 'bird' and subclass 'robin2'"),
    (lambda d: d["superclasses"][0].update(subclasses=[]),
     "superclass 'bird' has no subclasses"),
    (lambda d: d["superclasses"][0]["subclasses"][0].update(color="red"),
     r"superclasses\[0\] \('bird'\).subclasses\[0\]: unknown key\(s\) \['color'\]"),
    (lambda d: d.update(version=2), r"unknown key\(s\) \['version'\]"),
    (lambda d: d["superclasses"][1]["subclasses"][0].update(source_label=6),
     "'pug' of superclass 'dog' has source_label 6, which does not exist in a source "
     r"dataset of 6 labels \(valid: 0..5\)"),
    (lambda d: d["superclasses"][1]["subclasses"][0].update(source_label=-1),
     "'pug' .* has source_label -1; expected a non-negative integer"),
    (lambda d: d["superclasses"][1]["subclasses"][0].update(source_label="5"),
     "'pug' .* has source_label '5'; expected a non-negative integer"),
    (lambda d: d["superclasses"][1].update(wnid="dog"),
     "superclass 'dog' has wnid 'dog'; expected null or a WordNet noun id"),
    (lambda d: d["superclasses"][1]["subclasses"][0].pop("source_label"),
     r"subclasses\[0\]: missing key\(s\) \['source_label'\]"),
    (lambda d: d.update(superclasses=[]), "has no superclasses"),
])
def test_validation_names_the_offending_entry(change, message):
  with pytest.raises(HierarchyError, match=message):
    Hierarchy.from_dict(_with(change))


def test_from_json_reports_bad_json(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text('{"name": "x", ')
  with pytest.raises(HierarchyError, match="broken.json: not valid JSON"):
    Hierarchy.from_json(path)


def test_load_unknown_name_lists_shipped():
  with pytest.raises(HierarchyError, match="shipped: .*fashion_mnist"):
    hierarchy_lib.load_hierarchy("no_such_hierarchy")


@pytest.mark.parametrize("name", ["fashion_mnist", "superclassed_synthetic",
                                  "superclassed_imagenet"])
def test_shipped_hierarchies_validate(name):
  h = hierarchy_lib.load_hierarchy(name)
  assert h.name == name
  assert name in hierarchy_lib.shipped_hierarchies()


def test_fashion_mnist_hierarchy():
  h = hierarchy_lib.load_hierarchy("fashion_mnist")
  assert h.superclass_names == ["tops", "footwear", "trouser", "dress", "bag"]
  tops = [h.subclasses[i] for i in h.subclass_range(0)]
  assert [(s.name, s.source_label) for s in tops] == [
      ("T-shirt/top", 0), ("Pullover", 2), ("Coat", 4), ("Shirt", 6)]
  footwear = [h.subclasses[i].source_label for i in h.subclass_range(1)]
  assert footwear == [5, 7, 9]
  assert sorted(h.global_to_source.tolist()) == list(range(10))


def test_synthetic_hierarchy_matches_generator():
  from super_sub.data import synthetic  # pylint: disable=import-outside-toplevel
  h = synthetic.load_hierarchy()
  assert h.num_superclasses >= 4
  assert all(3 <= len(s.subclasses) <= 8 for s in h.superclasses)
  assert set(h.subclass_names) == set(synthetic.RENDERERS)


def test_load_by_name_ignores_folder_of_that_name(tmp_path, monkeypatch):
  (tmp_path / "fashion_mnist").mkdir()
  monkeypatch.chdir(tmp_path)
  assert hierarchy_lib.load_hierarchy("fashion_mnist").num_subclasses == 10


def test_to_json_gives_usual_permissions(small, tmp_path):
  path = tmp_path / "small.json"
  small.to_json(path)
  assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
