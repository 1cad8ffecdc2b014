"""The numbers of the misclassification report: where a model's errors fall in the hierarchy.

All counting is vectorised numpy over the examples (a confusion matrix by `bincount`);
Python loops run over classes or distinct confusion pairs only, so 50,000 predictions
over 1000 classes take well under a second.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub.analysis import extras
from super_sub.hierarchy import wordnet as wordnet_lib
from super_sub.analysis import predictions as predictions_lib

OUTSIDE_NAME = "outside"


@dataclasses.dataclass(frozen=True, eq=False)
class Analysis:
  """The report plus the arrays behind it (for pictures and CSV files).

  Attributes:
    report: the report.json content (see `analyze`).
    mapped: the predictions in the hierarchy's global index.
    confusion: int64 [n, n + 1]: rows true subclass, columns predicted subclass, the last
      column predictions outside the hierarchy.
    has_outside: whether the label space can predict outside the hierarchy ("source").
    source_names: the name of every source label where the source dataset's are known
      (`wordnet.source_label_names`: ImageNet-1k's), else None.
  """
  report: dict[str, Any]
  mapped: predictions_lib.Mapped
  confusion: np.ndarray
  has_outside: bool
  source_names: list[str] | None = None


def error_counts(labels: np.ndarray, predictions: np.ndarray,
                 hierarchy: hierarchy_lib.Hierarchy) -> dict[str, int]:
  """Wrong predictions, split by where the predicted class lies.

  Args:
    labels, predictions: global subclass indices; a prediction of -1 lies outside the
      hierarchy (a source id it does not contain).
  Returns:
    {"total", "within_superclass", "across_superclass", "outside_hierarchy"}; the last
    three are disjoint and add up to the total.
  """
  wrong = labels != predictions
  outside = predictions < 0
  same = hierarchy.superclass_of[np.where(outside, 0, predictions)] == \
      hierarchy.superclass_of[labels]
  within = wrong & same & ~outside
  return {"total": int(wrong.sum()), "within_superclass": int(within.sum()),
          "across_superclass": int((wrong & ~same & ~outside).sum()),
          "outside_hierarchy": int(outside.sum())}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int) -> np.ndarray:
  """int64 [n, n + 1] counts; predictions of -1 (outside the hierarchy) go to column n."""
  columns = np.where(predictions < 0, n, predictions)
  return np.bincount(labels * (n + 1) + columns, minlength=n * (n + 1)).reshape(n, n + 1)


def superclass_confusion(confusion: np.ndarray,
                         hierarchy: hierarchy_lib.Hierarchy) -> np.ndarray:
  """int64 [K, K + 1]: the subclass confusion summed over superclass blocks."""
  starts = hierarchy.superclass_offsets[:-1]
  rows = np.add.reduceat(confusion, starts, axis=0)
  return np.concatenate([np.add.reduceat(rows[:, :-1], starts, axis=1), rows[:, -1:]],
                        axis=1)


def per_superclass(labels: np.ndarray, predictions: np.ndarray,
                   hierarchy: hierarchy_lib.Hierarchy) -> dict[str, dict[str, Any]]:
  """Per true superclass: count, top1, superclass_top1 and its errors by kind.

  Top-1 values are None for a superclass without examples.
  """
  k = hierarchy.num_superclasses
  sup = hierarchy.superclass_of[labels]
  outside = predictions < 0
  pred_sup = np.where(outside, -1, hierarchy.superclass_of[np.where(outside, 0, predictions)])
  wrong = labels != predictions

  def count(mask):
    return np.bincount(sup[mask], minlength=k)
  total, correct, sup_correct = count(np.ones_like(wrong)), count(~wrong), count(pred_sup == sup)
  within, across = count(wrong & (pred_sup == sup)), count(wrong & (pred_sup != sup) & ~outside)
  beyond = count(outside)
  out = {}
  for i, name in enumerate(hierarchy.superclass_names):
    n = int(total[i])
    out[name] = {"count": n, "num_subclasses": len(hierarchy.subclass_range(i)),
                 "top1": float(correct[i] / n) if n else None,
                 "superclass_top1": float(sup_correct[i] / n) if n else None,
                 "errors_within": int(within[i]), "errors_across": int(across[i]),
                 "errors_outside": int(beyond[i])}
  return out


def analyze(predictions: predictions_lib.Predictions, hierarchy: hierarchy_lib.Hierarchy,
            **kwargs) -> dict[str, Any]:
  """The numbers of report.json for `predictions` (see `build` for the arguments).

  Keys: source, num_examples, num_skipped, label_space, hierarchy, num_subclasses,
  num_superclasses, top1, top5 (None without top-5 ids), superclass_top1, errors {total,
  within_superclass, across_superclass, outside_hierarchy}, within_superclass_share
  (within / total errors; None without errors), within_superclass_share_chance (the
  share expected if every mistake picked one of the other subclasses uniformly at
  random: the baseline that within_superclass_share beats), superclass_names, superclass_confusion
  (rows true, columns predicted superclass in hierarchy order, plus a last "outside"
  column in the source label space), superclass_confusion_columns, per_superclass,
  per_subclass, top_confusions, outside ({count, top_source_predictions: [{source_label,
  name (None where the source dataset's label names are unknown), count}]} in the source
  label space, else None), mistake_severity, multilabel_top1, multilabel.
  """
  return build(predictions, hierarchy, **kwargs).report


def summary(report: dict[str, Any]) -> str:
  """The report in one line: examples (and those skipped), top-1, and where the errors fall."""
  errors, share = report["errors"], report["within_superclass_share"]
  return (f"{report['num_examples']} examples"
          + (f" ({report['num_skipped']} skipped: label outside the hierarchy)"
             if report["num_skipped"] else "")
          + f", top-1 {report['top1']:.2%}, {errors['total']} errors: "
          f"{errors['within_superclass']} within the superclass"
          + ("" if share is None else f" ({share:.1%})")
          + f", {errors['across_superclass']} across"
          + (f", {errors['outside_hierarchy']} outside the hierarchy"
             if report["outside"] is not None else ""))


def build(predictions: predictions_lib.Predictions, hierarchy: hierarchy_lib.Hierarchy, *,
          multilabels=None, wordnet=None, top_confusions: int = 20,
          unmapped_labels: str = "error") -> Analysis:
  """Computes the report and keeps the arrays behind it.

  Args:
    predictions: one model's predictions.
    hierarchy: the hierarchy to analyse them in.
    multilabels: a `loading.MultiLabels` for the same examples, or None.
    wordnet: a `super_sub.wordnet.WordNet` for mistake severity (needs WordNet ids on
      every subclass), or None.
    top_confusions: how many true -> predicted subclass pairs to list.
    unmapped_labels: "error" or "skip" for labels outside the hierarchy (source space).
  Raises:
    AnalysisError: for labels outside the hierarchy, multi-labels for another number of
      examples, or mistake severity without WordNet ids.
  """
  m = predictions_lib.to_hierarchy(predictions, hierarchy, unmapped_labels)
  n = hierarchy.num_subclasses
  confusion = confusion_matrix(m.labels, m.predictions, n)
  has_outside = predictions.label_space == "source"
  errors = error_counts(m.labels, m.predictions, hierarchy)
  sup_conf = superclass_confusion(confusion, hierarchy)
  if not has_outside:
    sup_conf = sup_conf[:, :-1]
  num = len(m.labels)
  pred_sup = np.where(m.predictions < 0, -1,
                      hierarchy.superclass_of[np.maximum(m.predictions, 0)])
  source_names = wordnet_lib.source_label_names(hierarchy, wordnet) if has_outside else None
  report = {
      "source": predictions.source, "num_examples": num, "num_skipped": m.num_skipped,
      "label_space": predictions.label_space, "hierarchy": hierarchy.name,
      "num_subclasses": n, "num_superclasses": hierarchy.num_superclasses,
      "top1": float(np.mean(m.labels == m.predictions)),
      "top5": (None if m.top5 is None else
               float(np.mean((m.top5[:, :5] == m.labels[:, None]).any(axis=1)))),
      "superclass_top1": float(np.mean(pred_sup == hierarchy.superclass_of[m.labels])),
      "errors": errors,
      "within_superclass_share": (errors["within_superclass"] / errors["total"]
                                  if errors["total"] else None),
      "within_superclass_share_chance": _chance_within(m, hierarchy),
      "superclass_names": hierarchy.superclass_names,
      "superclass_confusion": sup_conf.tolist(),
      "superclass_confusion_columns": hierarchy.superclass_names + (
          [OUTSIDE_NAME] if has_outside else []),
      "per_superclass": per_superclass(m.labels, m.predictions, hierarchy),
      "per_subclass": _per_subclass(confusion, hierarchy),
      "top_confusions": confusion_pairs(confusion, hierarchy, limit=top_confusions),
      "outside": _outside(m, source_names) if has_outside else None,
      "mistake_severity": (None if wordnet is None else
                           extras.mistake_severity(confusion, hierarchy, wordnet)),
      "multilabel_top1": None, "multilabel": None,
  }
  if multilabels is not None:
    ml = extras.multilabel(m, multilabels, hierarchy, predictions.source)
    report["multilabel"], report["multilabel_top1"] = ml, ml["top1"]
    for name, top1 in ml.pop("per_superclass_top1").items():
      report["per_superclass"][name]["multilabel_top1"] = top1
  return Analysis(report, m, confusion, has_outside, source_names)


def confusion_pairs(confusion: np.ndarray, hierarchy: hierarchy_lib.Hierarchy,
                    limit: int | None = None) -> list[dict[str, Any]]:
  """The true -> predicted subclass pairs of the mistakes, most frequent first.

  Each pair: true, true_name, predicted (-1 outside the hierarchy), predicted_name,
  true_superclass, predicted_superclass (names; "outside"), count, share_of_true (of
  the true class's examples) and kind ("within", "across" or "outside").
  """
  n = hierarchy.num_subclasses
  off = confusion.copy()
  off[np.arange(n), np.arange(n)] = 0
  flat = np.flatnonzero(off)
  if limit is not None and len(flat) > limit:
    flat = flat[np.argpartition(-off.ravel()[flat], limit - 1)[:limit]]
  counts = off.ravel()[flat]
  order = np.lexsort((flat, -counts))  # by count, then by position: deterministic
  flat, counts = flat[order], counts[order]
  rows, cols = np.divmod(flat, n + 1)
  totals = confusion.sum(axis=1)
  names, supers = hierarchy.subclass_names, hierarchy.superclass_names
  out = []
  for t, p, c in zip(rows.tolist(), cols.tolist(), counts.tolist()):
    st = int(hierarchy.superclass_of[t])
    sp = -1 if p == n else int(hierarchy.superclass_of[p])
    out.append({"true": t, "true_name": names[t], "predicted": -1 if p == n else p,
                "predicted_name": OUTSIDE_NAME if p == n else names[p],
                "true_superclass": supers[st],
                "predicted_superclass": OUTSIDE_NAME if sp < 0 else supers[sp],
                "count": c, "share_of_true": c / int(totals[t]),
                "kind": "outside" if sp < 0 else ("within" if sp == st else "across")})
  return out


def _per_subclass(confusion: np.ndarray,
                  hierarchy: hierarchy_lib.Hierarchy) -> list[dict[str, Any]]:
  """Per subclass: count, top1, errors by kind and its most frequent wrong prediction."""
  n = hierarchy.num_subclasses
  idx = np.arange(n)
  totals = confusion.sum(axis=1)
  correct = confusion[idx, idx]
  same_block = hierarchy.superclass_of[:, None] == hierarchy.superclass_of[None, :]
  within = (confusion[:, :n] * same_block).sum(axis=1) - correct
  outside = confusion[:, n]
  off = confusion.copy()
  off[idx, idx] = 0
  worst = off.argmax(axis=1)
  names, supers = hierarchy.subclass_names, hierarchy.superclass_names
  out = []
  for i in range(n):
    c, w = int(totals[i]), int(worst[i])
    out.append({
        "index": i, "name": names[i], "superclass": supers[hierarchy.superclass_of[i]],
        "count": c, "top1": float(correct[i] / c) if c else None,
        "errors_within": int(within[i]),
        "errors_across": int(c - correct[i] - within[i] - outside[i]),
        "errors_outside": int(outside[i]),
        "most_confused_with": (None if not off[i, w] else {
            "name": OUTSIDE_NAME if w == n else names[w], "count": int(off[i, w])})})
  return out


def _chance_within(m: predictions_lib.Mapped,
                   hierarchy: hierarchy_lib.Hierarchy) -> float | None:
  """Mean over mistakes of (siblings of the true class) / (other subclasses)."""
  wrong = m.labels != m.predictions
  if not wrong.any() or hierarchy.num_subclasses < 2:
    return None
  sizes = np.diff(hierarchy.superclass_offsets)[hierarchy.superclass_of[m.labels[wrong]]]
  return float(np.mean((sizes - 1) / (hierarchy.num_subclasses - 1)))


def _outside(m: predictions_lib.Mapped, names: list[str] | None,
             limit: int = 20) -> dict[str, Any]:
  """Predictions outside the hierarchy: how many, and the source ids predicted most, each
  with its name where the source dataset's label names are known (`names`), else None."""
  raw = m.raw_predictions[m.predictions < 0]
  ids, counts = np.unique(raw, return_counts=True)
  order = np.lexsort((ids, -counts))[:limit]
  return {"count": int(len(raw)),
          "top_source_predictions": [
              {"source_label": int(i),
               "name": names[i] if names is not None and i < len(names) else None,
               "count": int(c)} for i, c in zip(ids[order].tolist(), counts[order].tolist())]}
