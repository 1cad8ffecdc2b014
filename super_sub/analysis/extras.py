"""Report numbers that need more than predictions: multi-labels and WordNet mistake severity."""

from __future__ import annotations

from typing import Any

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub.analysis import loading
from super_sub.analysis import predictions as predictions_lib


def multilabel(m: predictions_lib.Mapped, multilabels: loading.MultiLabels,
               hierarchy: hierarchy_lib.Hierarchy, source: str) -> dict[str, Any]:
  """Top-1 when any acceptable label counts, and which errors that forgives.

  As in ImageNet ReaL ("Are we done with ImageNet?", Beyer et al. 2020): accuracy is
  taken over labeled examples only, and a prediction is right when it is among the
  example's acceptable labels (compared in the file's own label space, so a prediction
  outside the hierarchy can still be acceptable).

  Returns:
    labeled_examples, unlabeled_examples, top1, top1_original (plain top-1 over the same
    labeled examples), errors_now_correct {total, within_superclass, across_superclass,
    outside_hierarchy}, correct_now_wrong (original label predicted, but not acceptable),
    per_superclass_top1 {name: float or None}.
  Raises:
    AnalysisError: when the multi-labels describe another number of examples.
  """
  num_file = len(m.rows) + m.num_skipped
  if multilabels.num_examples != num_file:
    raise predictions_lib.AnalysisError(
        f"multi-labels for {multilabels.num_examples} examples, but {source} has "
        f"{num_file}")
  num = len(m.labels)
  position = np.full(num_file, -1, dtype=np.int64)
  position[m.rows] = np.arange(num)
  at = position[multilabels.rows]
  keep = at >= 0
  at, acceptable = at[keep], multilabels.labels[keep]
  labeled = np.bincount(at, minlength=num) > 0
  correct = np.bincount(at[m.raw_predictions[at] == acceptable], minlength=num) > 0
  wrong = m.labels != m.predictions
  outside = m.predictions < 0
  sup = hierarchy.superclass_of[m.labels]
  same = hierarchy.superclass_of[np.maximum(m.predictions, 0)] == sup
  forgiven = wrong & correct
  k = hierarchy.num_superclasses
  per_labeled = np.bincount(sup[labeled], minlength=k)
  per_correct = np.bincount(sup[correct], minlength=k)
  n_labeled = int(labeled.sum())
  return {
      "labeled_examples": n_labeled, "unlabeled_examples": num - n_labeled,
      "top1": float(correct.sum() / n_labeled) if n_labeled else None,
      "top1_original": float((~wrong & labeled).sum() / n_labeled) if n_labeled else None,
      "errors_now_correct": {
          "total": int(forgiven.sum()),
          "within_superclass": int((forgiven & same & ~outside).sum()),
          "across_superclass": int((forgiven & ~same & ~outside).sum()),
          "outside_hierarchy": int((forgiven & outside).sum())},
      "correct_now_wrong": int((~wrong & labeled & ~correct).sum()),
      "per_superclass_top1": {
          name: float(per_correct[i] / per_labeled[i]) if per_labeled[i] else None
          for i, name in enumerate(hierarchy.superclass_names)},
  }


def mistake_severity(confusion: np.ndarray, hierarchy: hierarchy_lib.Hierarchy,
                     wordnet) -> dict[str, Any]:
  """Mean height of the lowest common WordNet ancestor of true and predicted class.

  As in Bertinetto et al., "Making Better Mistakes" (CVPR 2020): heights are taken in the
  part of WordNet above the hierarchy's subclasses (`WordNet.lca_height`), averaged over
  mistakes inside the hierarchy; predictions outside it have no WordNet id here and are
  counted apart. One LCA per distinct confusion pair, not per example.

  Returns:
    mean_lca_height (None without mistakes), mistakes, within_superclass and
    across_superclass (means), histogram {height: mistakes}, excluded_outside, wordnet.
  Raises:
    AnalysisError: when a subclass has no WordNet id.
  """
  wnids = [s.wnid for s in hierarchy.subclasses]
  missing = [s.name for s in hierarchy.subclasses if not s.wnid]
  if missing:
    raise predictions_lib.AnalysisError(
        f"mistake severity needs a WordNet id on every subclass; hierarchy "
        f"{hierarchy.name!r} has none for {len(missing)} (e.g. {missing[:3]})")
  n = hierarchy.num_subclasses
  leaves = frozenset(wnids)
  off = confusion[:, :n].copy()
  off[np.arange(n), np.arange(n)] = 0
  rows, cols = np.nonzero(off)
  counts = off[rows, cols]
  heights = np.array([wordnet.lca_height(wnids[a], wnids[b], leaves)
                      for a, b in zip(rows.tolist(), cols.tolist())], dtype=np.int64)
  within = hierarchy.superclass_of[rows] == hierarchy.superclass_of[cols]

  def mean(mask):
    total = counts[mask].sum()
    return float((heights[mask] * counts[mask]).sum() / total) if total else None
  histogram = np.bincount(heights, weights=counts).astype(np.int64) if len(heights) else []
  return {
      "mean_lca_height": mean(np.ones_like(within)), "mistakes": int(counts.sum()),
      "within_superclass": mean(within), "across_superclass": mean(~within),
      "histogram": {str(h): int(c) for h, c in enumerate(histogram) if c},
      "excluded_outside": int(confusion[:, n].sum()), "wordnet": wordnet.source,
  }
