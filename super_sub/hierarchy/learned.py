"""A hierarchy learned from a flat network's confusions, for data without a taxonomy.

HD-CNN (Yan, Zhang, Piramuthu, Jagadeesh, DeCoste, Di and Yu, "HD-CNN: Hierarchical Deep
Convolutional Neural Networks for Large Scale Visual Recognition", ICCV 2015) groups the fine
classes a flat network confuses into coarse categories by clustering its confusion matrix on
held-out data; the Super-Sub generalist then routes between groups whose members are hard to
tell apart, and each specialist learns one group's confusions. Here:

  1. the confusion matrix C (true class x predicted class) of the held-out split;
  2. the affinity A = (P + P^T) / 2 of its row-normalised form P (each true class's error
     rates, so large and small classes weigh alike), diagonal removed;
  3. average-linkage agglomerative clustering of A into K groups (merge the two groups of
     highest mean affinity, ties to the lowest class ids: deterministic); a group below the
     minimum size then takes, one at a time, the class of a larger group closest to it;
  4. the share of the network's confusion (off-diagonal counts) that falls inside a group,
     beside the share random groups of the same sizes would hold.

numpy only (`from_run` opens the run's dataset, which loads TensorFlow).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from super_sub import runs
from super_sub.errors import SuperSubError
from super_sub.hierarchy import tree


class LearnError(SuperSubError, ValueError):
  """Confusions a hierarchy cannot be learned from, or impossible group counts or sizes."""


@dataclasses.dataclass(frozen=True)
class Learned:
  """A learned hierarchy and how well its groups hold the network's confusion.

  Attributes:
    hierarchy: K superclasses; subclasses named by their classes, source_label = class id.
    groups: int [C]: the group of each class id.
    within: the share of off-diagonal confusion counts whose true and predicted classes
      share a group.
    chance: the share random groups of the same sizes would hold (pairs within / all pairs).
    errors: the off-diagonal confusion count.
  """
  hierarchy: tree.Hierarchy
  groups: np.ndarray
  within: float
  chance: float
  errors: int


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """int64 [C, C]: entry (i, j) counts examples of class i predicted as j.

  Raises:
    LearnError: a class id outside [0, num_classes).
  """
  labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
  for name, ids in (("label", labels), ("prediction", predictions)):
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise LearnError(f"a {name} id lies outside [0, {num_classes}): got {ids.min()}.."
                       f"{ids.max()}; give the class names of every id")
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def affinity(confusion: np.ndarray) -> np.ndarray:
  """The symmetrised, row-normalised confusion without its diagonal (float64 [C, C])."""
  c = np.asarray(confusion, np.float64)
  rows = c.sum(axis=1, keepdims=True)
  p = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
  a = (p + p.T) / 2
  np.fill_diagonal(a, 0.0)
  return a


def cluster(confusion: np.ndarray, k: int, min_size: int = 1) -> np.ndarray:
  """Groups the classes of a confusion matrix into `k` groups (int [C], groups numbered by
  their smallest class id), each of at least `min_size` classes.

  Raises:
    LearnError: k outside [1, C], or k * min_size > C.
  """
  a = affinity(confusion)
  n = a.shape[0]
  if not 1 <= k <= n:
    raise LearnError(f"--superclasses={k}: the number of groups must lie in [1, {n}] (the "
                     "classes)")
  if min_size < 1 or k * min_size > n:
    raise LearnError(f"--min_group_size={min_size}: {k} groups of at least {min_size} classes "
                     f"need {k * min_size} classes; there are {n}")
  members = [[i] for i in range(n)]
  # link[x, y]: summed affinity between groups x and y (average = link / (|x| |y|)).
  link = a.copy()
  alive = list(range(n))
  while len(alive) > k:
    sizes = np.array([len(members[x]) for x in alive], np.float64)
    sub = link[np.ix_(alive, alive)] / np.outer(sizes, sizes)
    np.fill_diagonal(sub, -np.inf)
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)  # first maximum: lowest ids
    x, y = sorted((alive[int(i)], alive[int(j)]))
    members[x] += members[y]
    link[x, :] += link[y, :]
    link[:, x] += link[:, y]
    alive.remove(y)
  groups = [sorted(members[x]) for x in alive]
  _top_up(groups, a, min_size)
  out = np.zeros(n, np.int64)
  for g, group in enumerate(sorted(groups)):
    out[group] = g
  return out


def _top_up(groups: list[list[int]], a: np.ndarray, min_size: int) -> None:
  """Moves classes into groups below min_size, each time the class of a group above it
  with the highest mean affinity to the small group."""
  while True:
    small = [g for g in groups if len(g) < min_size]
    if not small:
      return
    target = min(small, key=lambda g: (len(g), g[0]))
    donors = [c for g in groups if len(g) > min_size for c in g]
    best = max(donors, key=lambda c: (a[c, target].mean(), -c))
    next(g for g in groups if best in g).remove(best)
    target.append(best)
    target.sort()


def within_share(confusion: np.ndarray, groups: np.ndarray) -> tuple[float, float, int]:
  """(share of off-diagonal confusion inside groups, share random same-size groups would
  hold, off-diagonal count)."""
  c = np.asarray(confusion, np.int64).copy()
  np.fill_diagonal(c, 0)
  errors = int(c.sum())
  same = groups[:, None] == groups[None, :]
  within = float(c[same].sum() / errors) if errors else 0.0
  n = len(groups)
  sizes = np.bincount(groups)
  chance = float((sizes * (sizes - 1)).sum() / (n * (n - 1))) if n > 1 else 1.0
  return within, chance, errors


def learn_hierarchy(confusion: np.ndarray, k: int, class_names: Sequence[str], name: str,
                    min_size: int = 1, wnids: Sequence[str | None] | None = None) -> Learned:
  """The hierarchy of `k` groups of the classes a network confuses (module docstring).

  Args:
    confusion: [C, C] counts, rows true classes, on held-out data.
    k: the number of superclasses.
    class_names: the C class names (subclass names; class id c is source_label c).
    name: the hierarchy's name.
    min_size: the fewest classes a superclass may hold.
    wnids: the classes' WordNet ids (kept on the subclasses, so folders named by them still
      match), or None.

  Raises:
    LearnError: no confusion to learn from, names that do not match the classes, or
      k outside [2, C - 1] (Super-Sub would be the flat network), or impossible min_size.
  """
  confusion = np.asarray(confusion)
  n = confusion.shape[0]
  if confusion.ndim != 2 or confusion.shape[1] != n:
    raise LearnError(f"the confusion matrix must be square; got {confusion.shape}")
  if len(class_names) != n:
    raise LearnError(f"{len(class_names)} class names for {n} classes")
  if len(set(class_names)) != n:
    raise LearnError("class names must be distinct")
  off = confusion.sum() - np.trace(confusion)
  if off == 0:
    raise LearnError("the predictions hold no mistakes: there is no confusion to group "
                     "classes by (use a held-out split, or a less trained network)")
  if not 2 <= k < n:
    raise LearnError(
        f"--superclasses={k}: group these {n} classes into 2 to {n - 1} superclasses (one "
        "superclass is the flat network again; one class in each leaves no specialist)"
        if n > 2 else f"{n} classes are too few to group: a hierarchy needs at least 3")
  groups = cluster(confusion, k, min_size)
  wnids = list(wnids) if wnids is not None else [None] * n
  supers = []
  for g in range(k):
    ids = np.flatnonzero(groups == g).tolist()
    names = [class_names[i] for i in ids]
    label = "+".join(names[:3]) + ("+..." if len(names) > 3 else "")
    supers.append(tree.Superclass(f"{g}_{label}", None, tuple(
        tree.Subclass(class_names[i], wnids[i], i) for i in ids)))
  try:
    h = tree.Hierarchy(name, tuple(supers), n)
  except tree.HierarchyError as e:
    raise LearnError(f"the learned groups do not make a hierarchy: {e}") from None
  within, chance, errors = within_share(confusion, groups)
  return Learned(h, groups, within, chance, errors)


def format_learned(result: Learned) -> str:
  """The groups, one a line, and the share of confusion they hold."""
  h = result.hierarchy
  lines = [f"{'superclass':<32} {'#sub':>5}  subclasses"]
  for sup in h.superclasses:
    names = [s.name for s in sup.subclasses]
    shown = ", ".join(names[:8]) + (f", ... (+{len(names) - 8})" if len(names) > 8 else "")
    lines.append(f"{sup.name[:32]:<32} {len(names):>5}  {shown}")
  lines.append(f"confusion inside the groups: {result.within:.1%} of the network's "
               f"{result.errors} mistakes (random groups of these sizes: {result.chance:.1%})")
  return "\n".join(lines)


def from_predictions(path: str, k: int, class_names: Sequence[str] | None = None,
                     name: str = "learned", min_size: int = 1,
                     wnids: Sequence[str | None] | None = None) -> Learned:
  """`learn_hierarchy` from a predictions file in the report's input format (.csv or .npz,
  super_sub.analysis.loading), e.g. an evaluated run's predictions/flat.npz.

  Args:
    path: the predictions file (subclass or source label space).
    k, name, min_size, wnids: as for `learn_hierarchy`.
    class_names: name of each class id; default: the ids as names ("class_<id>").

  Raises:
    analysis.AnalysisError: a file that does not read (named, with the line).
    LearnError: as for `learn_hierarchy`.
  """
  from super_sub.analysis import loading  # pylint: disable=import-outside-toplevel
  preds = loading.read_predictions(path)
  if class_names is None:
    n = max(int(preds.labels.max()), int(preds.predictions.max())) + 1
    if preds.probs is not None:
      n = max(n, preds.probs.shape[1])
    class_names = [f"class_{i}" for i in range(n)]
  confusion = confusion_matrix(preds.labels, preds.predictions, len(class_names))
  return learn_hierarchy(confusion, k, list(class_names), name, min_size, wnids)


def from_run(model_dir: str, k: int, name: str = "learned", min_size: int = 1) -> Learned:
  """`learn_hierarchy` from an evaluated run: its flat network's held-out predictions
  (model_dir/predictions/flat.npz, written by super-sub-eval), classes named by the run's
  hierarchy. Loads TensorFlow (the run's dataset names its classes).

  Raises:
    LearnError: the run has no evaluated flat network; as for `learn_hierarchy`.
    FileNotFoundError: model_dir is not a run.
  """
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  path = runs.predictions_path(model_dir, "flat")
  if not os.path.isfile(path):
    raise LearnError(f"{path} does not exist: learning from a run needs its flat network "
                     "trained and evaluated (super-sub-train, then super-sub-eval)")
  h = run_lib.Run.open(model_dir).hierarchy
  return from_predictions(path, k, h.subclass_names, name, min_size,
                          wnids=[sub.wnid for sub in h.subclasses])


def read_class_names(path: str) -> list[str]:
  """One class name a line (line k: class id k); blank lines are refused.

  Raises:
    LearnError: an unreadable file or a blank line, naming it.
  """
  try:
    with open(path, encoding="utf-8") as f:
      names = [line.rstrip("\n") for line in f]
  except (OSError, UnicodeDecodeError) as e:
    raise LearnError(f"{path}: cannot be read as a list of class names ({e})") from None
  if names and not names[-1]:
    names.pop()
  if blank := [i + 1 for i, n in enumerate(names) if not n.strip()]:
    raise LearnError(f"{path}, line {blank[0]}: empty class name")
  return [n.strip() for n in names]
