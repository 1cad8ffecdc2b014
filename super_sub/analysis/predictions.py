"""One model's predictions as arrays, checked, and mapped into a hierarchy's global subclass index.

Files are read by `super_sub.analysis.loading`; library users can build `Predictions`
from their own arrays. Everything here is vectorised numpy: no loop per example.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub.errors import SuperSubError

# "subclass": the hierarchy's global subclass index (what super-sub's models predict);
# "source": the source dataset's label ids (e.g. ImageNet-1k's 0..999), mapped through
# `Hierarchy.source_to_global`.
LABEL_SPACES = ("subclass", "source")
UNMAPPED_LABELS = ("error", "skip")
OUTSIDE = -1  # a prediction outside the hierarchy, after mapping
# How far outside [0, 1] a probability may stray (float rounding) before it is refused.
PROBABILITY_SLACK = 1e-3


class AnalysisError(SuperSubError, ValueError):
  """Input that cannot be analysed; the message names the file and the row or field."""


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
  """One model's predictions over N examples, in the label space they were written in.

  Attributes:
    labels: int [N] true class ids.
    predictions: int [N] predicted class ids.
    label_space: "subclass" (global subclass indices) or "source" (source dataset ids).
    top5: int [N, k] or None: the k most probable class ids, most probable first.
    probs: float [N, C] or None: class probabilities, column c = class id c; gives each
      prediction's confidence (which mistakes the image grids show first).
    file_names: str [N] or None: the image of each example, for the image grids.
    source: where the arrays came from, for error messages (a path, or "<arrays>").
    first_line: line of the first example in a text file (errors then say "line L"),
      or None (errors say "example i", counting from 0).
    probs_from: the field `probs` was read from ("probs", or "logits" turned into
      probabilities), for error messages.
  """
  labels: np.ndarray
  predictions: np.ndarray
  label_space: str = "subclass"
  top5: np.ndarray | None = None
  probs: np.ndarray | None = None
  file_names: np.ndarray | None = None
  source: str = "<arrays>"
  first_line: int | None = None
  probs_from: str = "probs"

  def __post_init__(self):
    for name in ("labels", "predictions", "top5", "probs", "file_names"):
      value = getattr(self, name)
      if value is not None and not isinstance(value, np.ndarray):
        object.__setattr__(self, name, np.asarray(value))
    _check(self)
    for name in ("labels", "predictions", "top5"):  # int64: no overflow in index arithmetic
      value = getattr(self, name)
      if value is not None and value.dtype != np.int64:
        object.__setattr__(self, name, value.astype(np.int64))

  def __len__(self) -> int:
    return len(self.labels)

  def where(self, i: int) -> str:
    """Names example `i` the way the user's file counts it."""
    if self.first_line is None:
      return f"{self.source}, example {i}"
    return f"{self.source}, line {self.first_line + i}"


@dataclasses.dataclass(frozen=True, eq=False)
class Mapped:
  """Predictions in the hierarchy's global subclass index, ready for counting.

  Attributes:
    labels: int64 [M] global subclass index of the true class.
    predictions: int64 [M] global subclass index, or OUTSIDE (-1) for a source id that
      the hierarchy does not contain.
    raw_predictions: int64 [M] the predicted ids as written in the file.
    top5: int64 [M, k] or None, global indices or OUTSIDE.
    confidence: float [M] or None: probability of the predicted class.
    rows: int64 [M] index of each example in the file (examples whose label lies outside
      the hierarchy may have been skipped).
    num_skipped: how many examples were skipped for that reason.
  """
  labels: np.ndarray
  predictions: np.ndarray
  raw_predictions: np.ndarray
  top5: np.ndarray | None
  confidence: np.ndarray | None
  rows: np.ndarray
  num_skipped: int


def to_hierarchy(p: Predictions, hierarchy: hierarchy_lib.Hierarchy,
                 unmapped_labels: str = "error") -> Mapped:
  """Maps `p` into `hierarchy`'s global subclass index.

  Args:
    p: the predictions.
    hierarchy: the hierarchy whose index the report speaks.
    unmapped_labels: for source labels that the hierarchy does not contain (e.g. the 711
      ImageNet classes outside superclassed_imagenet): "error", or "skip" those examples
      (counted in `num_skipped`).
  Raises:
    AnalysisError: naming the first offending example, for labels (or, in the subclass
      space, predictions) outside the hierarchy.
  """
  if unmapped_labels not in UNMAPPED_LABELS:
    raise AnalysisError(f"unmapped_labels must be one of {UNMAPPED_LABELS}, "
                        f"got {unmapped_labels!r}")
  n = hierarchy.num_subclasses
  _check_label_space(p, hierarchy)
  if p.label_space == "subclass":
    for name, values in (("label", p.labels), ("prediction", p.predictions),
                         ("top5", p.top5)):
      if values is not None:
        _in_range(p, name, values, n, hierarchy)
    labels, predictions, top5 = p.labels, p.predictions, p.top5
  else:
    labels, predictions = _source(p.labels, hierarchy), _source(p.predictions, hierarchy)
    top5 = None if p.top5 is None else _source(p.top5, hierarchy)
  rows = np.arange(len(p), dtype=np.int64)
  unmapped = labels < 0
  if unmapped.any():
    if unmapped_labels == "error":
      i = int(np.flatnonzero(unmapped)[0])
      raise AnalysisError(
          f"{p.where(i)}: label {int(p.labels[i])} is not a source label of any subclass "
          f"in hierarchy {hierarchy.name!r} ({int(unmapped.sum())} of {len(p)} examples "
          f"are like this); skip them with unmapped_labels='skip' (--unmapped_labels=skip)")
    rows = np.flatnonzero(~unmapped)
    if not rows.size:
      raise AnalysisError(f"{p.source}: no example has a label inside hierarchy "
                          f"{hierarchy.name!r}")
  confidence = None
  if p.probs is not None:
    pred = p.predictions[rows]
    inside = pred < p.probs.shape[1]
    confidence = np.zeros(len(rows), dtype=np.float64)
    confidence[inside] = p.probs[rows[inside], pred[inside]]
  return Mapped(labels=labels[rows], predictions=predictions[rows],
                raw_predictions=p.predictions[rows],
                top5=None if top5 is None else top5[rows], confidence=confidence,
                rows=rows, num_skipped=len(p) - len(rows))


def space_size(hierarchy: hierarchy_lib.Hierarchy, label_space: str) -> int | None:
  """How many class ids `label_space` has in `hierarchy`: its subclasses, or its source
  labels (None where the hierarchy does not say how many its source dataset has)."""
  return hierarchy.num_subclasses if label_space == "subclass" else hierarchy.num_source_labels


def _check_label_space(p: Predictions, hierarchy: hierarchy_lib.Hierarchy) -> None:
  """Refuses scores whose class dimension is not the label space's size, and (source space)
  labels beyond the source dataset's labels: both give a report that looks right and is not.

  Raises:
    AnalysisError: naming both numbers and the flag that fixes it.
  """
  size = space_size(hierarchy, p.label_space)
  what = {"subclass": "subclasses (global subclass indices)",
          "source": "source labels"}[p.label_space]
  if p.probs is not None and size is not None and p.probs.shape[1] != size:
    c = p.probs.shape[1]
    other = "source" if p.label_space == "subclass" else "subclass"
    if space_size(hierarchy, other) == c:
      fix = f"if the scores are {other} ids, pass --label_space={other}"
    else:
      fits = []
      for name in hierarchy_lib.shipped_hierarchies():
        spaces = [space for space in (p.label_space, other)
                  if space_size(hierarchy_lib.load_hierarchy(name), space) == c]
        if spaces:  # the label space asked for where it fits, else the other one
          fits.append(f"--hierarchy={name}" + ("" if spaces[0] == p.label_space
                                               else f" --label_space={spaces[0]}"))
      fix = ("pass the hierarchy the model was trained on with --hierarchy"
             + (f" (shipped ones with {c} classes: {'; '.join(fits)})" if fits else ""))
    raise AnalysisError(
        f"{p.source}: {p.probs_from!r} has {c} columns (classes), but hierarchy "
        f"{hierarchy.name!r} has {size} {what} in the {p.label_space!r} label space; {fix}")
  # Labels must lie in the label space: the source dataset's labels where the hierarchy says
  # how many (subclass ids are checked against the hierarchy in `to_hierarchy`), and in any
  # case the scores' columns.
  limit, of = ((size, f"the {size} source labels of hierarchy {hierarchy.name!r}")
               if p.label_space == "source" and size is not None else (None, ""))
  if p.probs is not None and (limit is None or p.probs.shape[1] < limit):
    limit, of = p.probs.shape[1], f"the {p.probs.shape[1]} columns of {p.probs_from!r}"
  if limit is not None and (p.labels >= limit).any():
    beyond = p.labels >= limit
    i = int(np.flatnonzero(beyond)[0])
    raise AnalysisError(
        f"{p.where(i)}: label {int(p.labels[i])} is outside {of} (0..{limit - 1}); "
        f"{int(beyond.sum())} of {len(p)} labels are like this: pass the hierarchy of the "
        f"dataset the labels come from with --hierarchy, and --label_space=source for source "
        f"dataset ids")


def _source(ids: np.ndarray, hierarchy: hierarchy_lib.Hierarchy) -> np.ndarray:
  """Source ids -> global indices; ids the hierarchy does not know -> OUTSIDE."""
  table = hierarchy.source_to_global
  out = np.full(ids.shape, OUTSIDE, dtype=np.int64)
  known = ids < len(table)
  out[known] = table[ids[known]]
  return out


def _in_range(p: Predictions, name: str, values: np.ndarray, n: int,
              hierarchy: hierarchy_lib.Hierarchy) -> None:
  bad = (values < 0) | (values >= n)
  if bad.any():
    i = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
    value = values[i] if values.ndim == 1 else values[i][bad[i]][0]
    hint = (" (if these are source dataset ids, use label_space='source', "
            "--label_space=source)" if hierarchy.num_source_labels != n else "")
    raise AnalysisError(f"{p.where(i)}: {name} {int(value)} is outside hierarchy "
                        f"{hierarchy.name!r}, whose global subclass indices are "
                        f"0..{n - 1}{hint}")


def _check(p: Predictions) -> None:
  """Shapes, dtypes and values that every later step relies on."""
  if p.label_space not in LABEL_SPACES:
    raise AnalysisError(f"{p.source}: label space {p.label_space!r} is not one of "
                        f"{LABEL_SPACES}")
  n = len(p.labels) if np.ndim(p.labels) == 1 else -1
  if n == 0:
    raise AnalysisError(f"{p.source}: holds no examples")
  fields = {"labels": p.labels, "predictions": p.predictions, "top5": p.top5,
            "probs": p.probs, "file_names": p.file_names}
  for name, value in fields.items():
    if value is None:
      continue
    ndim = 2 if name in ("top5", "probs") else 1
    if value.ndim != ndim:
      raise AnalysisError(f"{p.source}: field {name!r} must be a {ndim}-D array, got "
                          f"shape {np.shape(value)}")
    if len(value) != n:
      raise AnalysisError(f"{p.source}: field {name!r} has {len(value)} entries but "
                          f"'labels' has {n}: the fields must describe the same examples")
    if name in ("labels", "predictions", "top5"):
      if not np.issubdtype(value.dtype, np.integer):
        raise AnalysisError(f"{p.source}: field {name!r} must hold integer class ids, "
                            f"got dtype {value.dtype}")
      if value.size and value.min() < 0:
        i = int(np.flatnonzero((value < 0).reshape(n, -1).any(axis=1))[0])
        raise AnalysisError(f"{p.where(i)}: field {name!r} holds a negative class id")
  if p.probs is not None:
    finite = np.isfinite(p.probs)
    if not finite.all():
      i = int(np.flatnonzero(~finite.all(axis=1))[0])
      raise AnalysisError(f"{p.where(i)}: field {p.probs_from!r} holds NaN or infinite values")
    outside = (p.probs < -PROBABILITY_SLACK) | (p.probs > 1 + PROBABILITY_SLACK)
    if outside.any():  # logits saved as probabilities would give confidences above 1
      i, j = (int(x) for x in np.argwhere(outside)[0])
      raise AnalysisError(
          f"{p.where(i)}: field {p.probs_from!r} holds {float(p.probs[i, j]):g} for class {j}, "
          f"outside [0, 1] ({int(outside.any(axis=1).sum())} of {len(p)} rows are like this): "
          f"these are not probabilities; if they are logits, save them under 'logits'")
    _check_scores(p)


def _check_scores(p: Predictions) -> None:
  """Predictions that are the scores' arg-max: a file whose fields disagree would give top-1
  from one and top-5 from the other. (Whether the scores' classes are the label space's is
  `_check_label_space`'s question: it needs the hierarchy.)"""
  c = p.probs.shape[1]
  if c == 0:
    raise AnalysisError(f"{p.source}: field {p.probs_from!r} has no columns (classes)")
  pred = p.predictions
  inside = pred < c
  best = p.probs.max(axis=1)
  agree = inside.copy()
  # A prediction agrees when its score is the row's largest (ties: any of the largest).
  agree[inside] = p.probs[np.flatnonzero(inside), pred[inside]] >= best[inside]
  if not agree.all():
    i = int(np.flatnonzero(~agree)[0])
    raise AnalysisError(
        f"{p.source}: field 'predictions' disagrees with the arg-max of {p.probs_from!r} in "
        f"{int((~agree).sum())} of {len(p)} rows (first: {p.where(i)}, prediction "
        f"{int(pred[i])}, arg-max {int(p.probs[i].argmax())}); refusing to take top-1 from "
        f"one and top-5 from the other: keep only the field that is right")
