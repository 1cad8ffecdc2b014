"""A hierarchy learned from confusions (HD-CNN): a planted group structure is
recovered from hand-built predictions; group counts and sizes hold; the command writes a
hierarchy from a predictions file and from an evaluated run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from super_sub import hierarchy as hierarchy_lib
from super_sub.hierarchy import learned

# 12 classes in 3 hidden groups, ids interleaved so that no ordering gives them away.
PLANTED = [[0, 3, 6, 9, 11], [1, 4, 7, 10], [2, 5, 8]]


def planted_predictions(seed=0, per_class=60, confused=0.3, noise=0.03, big=()):
  """(labels, predictions): each class right most of the time, wrong mostly within its
  group (`confused`) and rarely anywhere (`noise`); classes in `big` have 50 times the
  examples and spread 80% of them uniformly over all classes (a large, poorly learnt class)."""
  rng = np.random.default_rng(seed)
  group = {c: g for g, members in enumerate(PLANTED) for c in members}
  labels, preds = [], []
  for c in range(12):
    mates = [m for m in PLANTED[group[c]] if m != c]
    n, conf, nz = (50 * per_class, 0.0, 0.8) if c in big else (per_class, confused, noise)
    for _ in range(n):
      r = rng.random()
      if r < conf:
        p = int(rng.choice(mates))
      elif r < conf + nz:
        p = int(rng.integers(12))
      else:
        p = c
      labels.append(c)
      preds.append(p)
  return np.array(labels), np.array(preds)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", [
    {},
    {"noise": 0.2},  # much noise: average linkage holds, summed linkage glues groups
    {"big": (2, 5)},  # imbalance: row normalisation keeps big classes' counts from dominating
])
def test_recovers_planted_groups_through_noise_and_imbalance(case, seed):
  labels, preds = planted_predictions(seed=seed, **case)
  confusion = learned.confusion_matrix(labels, preds, 12)
  groups = learned.cluster(confusion, 3)
  assert sorted(sorted(np.flatnonzero(groups == g).tolist()) for g in range(3)) == sorted(PLANTED)


def test_recovers_the_planted_groups():
  labels, preds = planted_predictions()
  confusion = learned.confusion_matrix(labels, preds, 12)
  names = [f"c{i}" for i in range(12)]
  result = learned.learn_hierarchy(confusion, 3, names, "planted")
  got = sorted(sorted(np.flatnonzero(result.groups == g).tolist()) for g in range(3))
  assert got == sorted(PLANTED)
  assert result.within > 0.85 and result.chance < 0.35
  h = result.hierarchy
  assert h.num_superclasses == 3 and sorted(h.subclass_names) == sorted(names)
  for sub in h.subclasses:  # named by their classes, source_label the class id
    assert sub.name == f"c{sub.source_label}"
  assert "confusion inside the groups" in learned.format_learned(result)
  wnids = [f"n{i:08d}" for i in range(12)]  # kept, so folders named by WordNet id still match
  kept = learned.learn_hierarchy(confusion, 3, names, "planted", wnids=wnids).hierarchy
  assert [kept.lookup(w) for w in wnids] == [kept.lookup(n) for n in names]


def test_deterministic_and_independent_of_class_order():
  labels, preds = planted_predictions(seed=1)
  confusion = learned.confusion_matrix(labels, preds, 12)
  first = learned.cluster(confusion, 3)
  np.testing.assert_array_equal(first, learned.cluster(confusion, 3))
  perm = np.random.default_rng(2).permutation(12)
  inverse = np.argsort(perm)
  relabelled = learned.cluster(confusion[np.ix_(perm, perm)], 3)[inverse]
  same = first[:, None] == first[None, :]
  np.testing.assert_array_equal(same, relabelled[:, None] == relabelled[None, :])


def test_minimum_group_size_and_no_empty_group():
  labels, preds = planted_predictions()
  confusion = learned.confusion_matrix(labels, preds, 12)
  for k, min_size in ((3, 1), (4, 3), (6, 2), (12, 1), (1, 1), (2, 6)):
    groups = learned.cluster(confusion, k, min_size)
    sizes = np.bincount(groups, minlength=k)
    assert len(sizes) == k and sizes.min() >= min_size, (k, min_size, sizes)


@pytest.mark.parametrize("k,min_size,pattern", [
    (13, 1, r"must lie in \[1, 12\]"), (0, 1, r"must lie in \[1, 12\]"),
    (3, 5, r"3 groups of at least 5 classes need 15 classes; there are 12"),
])
def test_impossible_counts_refused(k, min_size, pattern):
  labels, preds = planted_predictions()
  with pytest.raises(learned.LearnError, match=pattern):
    learned.cluster(learned.confusion_matrix(labels, preds, 12), k, min_size)


@pytest.mark.parametrize("k", [1, 12, 13])
def test_hierarchies_that_make_super_sub_the_flat_network_refused(k):
  labels, preds = planted_predictions()
  with pytest.raises(learned.LearnError, match=rf"--superclasses={k}: .* 2 to 11 superclasses"):
    learned.learn_hierarchy(learned.confusion_matrix(labels, preds, 12), k,
                            [str(i) for i in range(12)], "x")


def test_two_classes_are_too_few_to_group():
  labels, preds = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])
  with pytest.raises(learned.LearnError, match="2 classes are too few to group: a hierarchy "
                                               "needs at least 3"):
    learned.learn_hierarchy(learned.confusion_matrix(labels, preds, 2), 2, ["a", "b"], "x")


def test_no_mistakes_refused():
  labels = np.arange(12).repeat(3)
  with pytest.raises(learned.LearnError, match="no mistakes"):
    learned.learn_hierarchy(learned.confusion_matrix(labels, labels, 12), 3,
                            [str(i) for i in range(12)], "x")


def _command(*args):
  return subprocess.run([sys.executable, "-m", "super_sub.train.derive_hierarchy", *args],
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_command_from_a_predictions_csv(tmp_path):
  labels, preds = planted_predictions()
  csv = tmp_path / "preds.csv"
  csv.write_text("label,prediction\n" + "".join(f"{l},{p}\n" for l, p in zip(labels, preds)))
  names = tmp_path / "names.txt"
  names.write_text("".join(f"class {i}\n" for i in range(12)))
  out = tmp_path / "learned.json"
  done = _command(f"--from_predictions={csv}", f"--class_names={names}", "--superclasses=3",
                  f"--output={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  h = hierarchy_lib.load_hierarchy(str(out))
  got = sorted(sorted(s.source_label for s in sup.subclasses) for sup in h.superclasses)
  assert got == sorted(PLANTED) and h.subclasses[0].name == "class 0"
  assert "confusion inside the groups" in done.stdout
  bad = _command(f"--from_predictions={csv}", "--superclasses=30", f"--output={out}")
  assert bad.returncode == 2 and "into 2 to 11 superclasses" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_command_from_an_evaluated_run(tmp_path, smoke_config):
  """The route without a taxonomy: a flat folder, its flat network trained and evaluated
  alone (smoke), then grouped by its confusions."""
  from conftest import train_run  # pylint: disable=import-outside-toplevel
  from test_folder_dataset import make_tree  # pylint: disable=import-outside-toplevel
  root = make_tree(tmp_path / "imgs", {"x": None, "y": None, "z": None, "w": None},
                   splits=("train", "validation"), per_class=6, size=(16, 16))
  train_run(smoke_config(tmp_path / "run", dataset=f"folder:{root}", stage="flat",
                         data_dir=str(tmp_path / "tfds")), evaluate=True)
  out = tmp_path / "learned.json"
  done = _command(f"--from_run={tmp_path / 'run'}", "--superclasses=2", f"--output={out}")
  if done.returncode == 2 and "no mistakes" in done.stderr:
    pytest.skip("the smoke network made no mistakes on the held-out split")
  assert done.returncode == 0, done.stderr[-2000:]
  h = hierarchy_lib.load_hierarchy(str(out))
  assert sorted(h.subclass_names) == ["w", "x", "y", "z"] and h.num_superclasses == 2
  missing = _command(f"--from_run={tmp_path}", "--superclasses=2", f"--output={out}")
  assert missing.returncode == 2 and "super-sub-eval" in missing.stderr
