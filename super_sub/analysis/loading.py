"""Reads predictions files (CSV or NPZ) and multi-label files; errors name the file and row.

CSV: a header line, then one example a line. Columns (any order; others are ignored):
  label        true class id (required)
  prediction   predicted class id (required unless probabilities or logits are given:
               then their argmax)
  file_name    the example's image, for the image grids
  top5         the most probable class ids, space separated, most probable first
  prob_<id>    probability of class <id>, one column per class; or
  logits       all class logits, space separated (turned into probabilities by softmax)
NPZ (`np.load`, no pickle): `labels`, and `predictions` or `logits` or `probs`; optional
`top5`, `file_names`, and `label_space` ("subclass", "source"; super-sub's own
predictions/<model>.npz files carry it).
Scores under `logits` that are already probabilities (every row in [0, 1], summing to 1) are
refused rather than soft-maxed again (`looks_like_probabilities`), and a `predictions` field
that disagrees with the scores' arg-max is refused (super_sub.analysis.predictions).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

from super_sub._internal import files
from super_sub.analysis import predictions as predictions_lib

AnalysisError = predictions_lib.AnalysisError
Predictions = predictions_lib.Predictions
# How far from 1 the rows of scores under `logits` may sum and still be taken for probabilities
# (`looks_like_probabilities`): 1000 probabilities written with 4 decimals can miss by 0.05.
PROBABILITY_SUM_TOLERANCE = 0.05
# Entries of the probability table that `prob_<id>` columns make ([examples, largest id + 1],
# float64): 2**27 is 1 GiB, far above any real file's, far below what a mistyped id asks for.
MAX_PROB_ENTRIES = 2**27


def read_predictions(path: str | os.PathLike, label_space: str | None = None) -> Predictions:
  """Reads a .csv or .npz predictions file.

  Args:
    path: the file.
    label_space: "subclass" or "source"; None takes the file's own `label_space` field
      when it has one, else "subclass".
  Raises:
    AnalysisError: naming the file and the line, example or field that is wrong.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AnalysisError(f"{path}: no such file")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    fields, first_line = _read_csv(path), 2
  elif ext == ".npz":
    fields, first_line = _read_npz(path), None
  else:
    raise AnalysisError(f"{path}: expected a .csv or .npz predictions file")
  stored = fields.pop("label_space", None)
  if stored == "superclass":
    raise AnalysisError(f"{path}: holds superclass predictions (label_space 'superclass', "
                        f"e.g. a generalist's); the report needs subclass predictions")
  if label_space and stored and label_space != stored:
    raise AnalysisError(f"{path}: the file says its label space is {stored!r}, but "
                        f"{label_space!r} was asked for")
  for name in ("logits", "probs"):
    bad = ~np.isfinite(fields[name]).all(axis=1) if name in fields else np.zeros(0, bool)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      at = f"line {first_line + i}" if first_line else f"example {i}"
      raise AnalysisError(f"{path}, {at}: field {name!r} holds NaN or infinite values")
  logits = fields.pop("logits", None)
  if logits is not None:
    if looks_like_probabilities(logits):
      fix = ("write them as 'prob_<id>' columns" if ext == ".csv"
             else "save them under 'probs'")
      raise AnalysisError(
          f"{path}: field 'logits' holds probabilities (every row in [0, 1], summing to 1), "
          f"which a softmax would flatten into near-equal confidences; {fix} instead")
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    fields["probs"] = shifted / shifted.sum(axis=1, keepdims=True)
  probs = fields.get("probs")
  if "predictions" not in fields and probs is not None:
    fields["predictions"] = probs.argmax(axis=1)
  if probs is not None and "top5" not in fields and np.shape(fields["labels"]) == probs.shape[:1]:
    k = min(5, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    fields["top5"] = np.take_along_axis(part, order, axis=1)
  return Predictions(label_space=label_space or stored or "subclass", source=path,
                     first_line=first_line, probs_from="logits" if logits is not None
                     else "probs", **fields)


def looks_like_probabilities(scores: np.ndarray, tolerance: float = PROBABILITY_SUM_TOLERANCE
                             ) -> bool:
  """Whether every row of [examples, classes] scores lies in [0, 1] and sums to 1 (within
  `tolerance`, which allows probabilities written with few decimals): what a softmax gives,
  and what logits practically never are. A single column is ambiguous and never counts."""
  if scores.ndim != 2 or scores.shape[1] < 2 or not len(scores):
    return False
  return bool((scores >= 0).all() and (scores <= 1).all()
              and np.allclose(scores.sum(axis=1), 1.0, rtol=0, atol=tolerance))


def _read_npz(path: str) -> dict:
  with open(path, "rb") as f:
    head = f.read(4)
  # np.load takes anything that is not a zip for a .npy or a pickle; a text file would then be
  # reported as pickled data, and a lone .npy array has no fields.
  if head != b"PK\x03\x04" and head != b"PK\x05\x06":  # a zip's first entry, or an empty zip
    kind = ("it is empty" if not head else "it is a single .npy array"
            if head == b"\x93NUM" else f"it starts with {head!r}")
    raise AnalysisError(f"{path}: not a readable NPZ file: not an .npz archive (a zip of .npy "
                        f"arrays, as np.savez writes); {kind}")
  try:
    npz = np.load(path, allow_pickle=False)
  except Exception as e:  # zipfile and numpy raise assorted types on a corrupt archive
    raise AnalysisError(f"{path}: not a readable NPZ file ({e!r})") from None
  with npz:
    keys = set(npz.files)
    if "labels" not in keys or not keys & {"predictions", "logits", "probs"}:
      raise AnalysisError(f"{path}: needs the fields 'labels' and one of 'predictions', "
                          f"'logits', 'probs'; it has {sorted(keys) or 'none'}")
    out = {}
    for k in ("labels", "predictions", "logits", "probs", "top5", "file_names", "label_space"):
      if k not in keys:
        continue
      try:
        out[k] = npz[k]
      except ValueError as e:  # object arrays need pickle, which we refuse
        raise AnalysisError(f"{path}: field {k!r} cannot be read without pickle ({e})") from None
      except Exception as e:  # a CRC mismatch, an unsupported compression, ...
        raise AnalysisError(f"{path}: field {k!r} is corrupt ({e!r})") from None
  for name in ("logits", "probs"):
    if name in out:
      if (out[name].ndim != 2 or out[name].dtype.kind not in "iuf"
          or out[name].shape[1] == 0):
        raise AnalysisError(f"{path}: field {name!r} must be a 2-D real-valued array "
                            f"[examples, classes] with at least one class, got "
                            f"{out[name].dtype} {out[name].shape}")
      out[name] = out[name].astype(np.float64)
  if "file_names" in out:
    names = out["file_names"]
    try:
      out["file_names"] = (np.char.decode(names, "utf-8") if names.dtype.kind == "S"
                           else names.astype(str))
    except UnicodeDecodeError as e:
      raise AnalysisError(f"{path}: field 'file_names' is not UTF-8 ({e})") from None
  if "label_space" in out:
    out["label_space"] = str(out["label_space"])
  return out


def _read_csv(path: str) -> dict:
  with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
    reader = csv.reader(f)
    try:
      rows = [row for row in reader if row]
    except UnicodeDecodeError as e:
      raise AnalysisError(f"{path}: not UTF-8 text ({e})") from None
    except csv.Error as e:  # e.g. a field over csv.field_size_limit()
      raise AnalysisError(f"{path}, line {reader.line_num}: not a CSV line ({e})") from None
  if not rows:
    raise AnalysisError(f"{path}: empty file; expected a header line naming at least the "
                        f"columns 'label' and 'prediction'")
  header, body = [h.strip() for h in rows[0]], rows[1:]
  dupes = sorted({h for h in header if header.count(h) > 1})
  if dupes:
    raise AnalysisError(f"{path}, line 1: column(s) {dupes} appear more than once")
  prob_cols = [h for h in header if h.startswith("prob_")]
  if "label" not in header or not ({"prediction", "logits"} & set(header) or prob_cols):
    raise AnalysisError(f"{path}, line 1: needs the columns 'label' and 'prediction' (or "
                        f"'prob_<id>' columns or a 'logits' column); the header is {header}")
  if not body:
    raise AnalysisError(f"{path}: holds no examples, only the header line")
  widths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
  bad = np.flatnonzero(widths != len(header))
  if bad.size:
    i = int(bad[0])
    raise AnalysisError(f"{path}, line {i + 2}: {widths[i]} fields, but the header has "
                        f"{len(header)}")
  columns = dict(zip(header, zip(*body)))
  out = {"labels": _ints(path, "label", columns["label"])}
  if "prediction" in columns:
    out["predictions"] = _ints(path, "prediction", columns["prediction"])
  if "file_name" in columns:
    out["file_names"] = np.array([s.strip() for s in columns["file_name"]])
  if "top5" in columns:
    out["top5"] = _ints(path, "top5", columns["top5"], many=True)
  if "logits" in columns:
    if prob_cols:
      raise AnalysisError(f"{path}, line 1: give either 'prob_<id>' columns or a 'logits' "
                          f"column, not both")
    out["logits"] = _floats(path, "logits", columns["logits"], many=True)
  elif prob_cols:
    ids = []
    for h in prob_cols:
      if not (h[5:].isascii() and h[5:].isdigit()):
        raise AnalysisError(f"{path}, line 1: column {h!r}: expected 'prob_' followed by a "
                            f"class id, e.g. 'prob_3'")
      ids.append(int(h[5:]))
    if len(body) * (max(ids) + 1) > MAX_PROB_ENTRIES:
      raise AnalysisError(f"{path}, line 1: column 'prob_{max(ids)}' makes a probability table "
                          f"of {len(body)} examples x {max(ids) + 1} classes, over the "
                          f"{MAX_PROB_ENTRIES} entries supported; expected 'prob_<id>' with "
                          f"the class ids of the model's classes")
    probs = np.zeros((len(body), max(ids) + 1))
    probs[:, ids] = np.stack([_floats(path, h, columns[h]) for h in prob_cols], axis=1)
    if not np.isfinite(probs).all():
      i, j = np.argwhere(~np.isfinite(probs[:, ids]))[0]
      raise AnalysisError(f"{path}, line {i + 2}, column {prob_cols[j]!r}: NaN or infinite "
                          f"probability")
    out["probs"] = probs
  return out


def _ints(path: str, column: str, values: Sequence[str], many: bool = False) -> np.ndarray:
  return _numbers(path, column, values, np.int64, many)


def _floats(path: str, column: str, values: Sequence[str], many: bool = False) -> np.ndarray:
  return _numbers(path, column, values, np.float64, many)


def _numbers(path, column, values, dtype, many):
  """Parses a column (or, if `many`, space-separated lists of equal length per line)."""
  widths = None
  if many:
    lists = [v.split() for v in values]
    widths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    empty = np.flatnonzero(widths == 0)
    if empty.size:
      raise AnalysisError(f"{path}, line {int(empty[0]) + 2}, column {column!r}: empty; "
                          f"expected space-separated values")
    bad = np.flatnonzero(widths != widths[0])
    if bad.size:
      i = int(bad[0])
      raise AnalysisError(f"{path}, line {i + 2}, column {column!r}: {widths[i]} values, "
                          f"but line 2 has {widths[0]}; every line needs the same number "
                          f"(space separated)")
    values = [x for v in lists for x in v]
  try:
    out = np.array(values, dtype=dtype)
  except (ValueError, OverflowError):
    parse, what = (int, "an integer class id") if dtype == np.int64 else (float, "a number")
    for i, v in enumerate(values):
      line = (i // int(widths[0]) if many else i) + 2
      try:
        number = parse(v)
      except ValueError:
        raise AnalysisError(f"{path}, line {line}, column {column!r}: {v!r} is not "
                            f"{what}") from None
      if parse is int and not -2**63 <= number < 2**63:
        raise AnalysisError(f"{path}, line {line}, column {column!r}: {v!r} is out of range "
                            f"for a class id (64-bit integers)")
    raise AnalysisError(f"{path}, column {column!r}: does not parse as {what}s") from None
  return out.reshape(len(widths), -1) if many else out


@dataclasses.dataclass(frozen=True, eq=False)
class MultiLabels:
  """The acceptable labels of each example (ImageNet ReaL style), as flat arrays.

  Attributes:
    rows: int64 [M] example index (position in the predictions file).
    labels: int64 [M] an acceptable class id for that example, in the predictions'
      label space. An example without any entry is unlabeled.
    num_examples: number of examples of the predictions file.
  """
  rows: np.ndarray
  labels: np.ndarray
  num_examples: int

  @classmethod
  def from_lists(cls, lists: Sequence[Sequence[int]], where: str = "<multilabels>"
                 ) -> "MultiLabels":
    """From one list of acceptable class ids per example ([] = unlabeled)."""
    for i, entry in enumerate(lists):
      if not isinstance(entry, (list, tuple)) or not all(
          isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x < 2**63
          for x in entry):
        raise AnalysisError(f"{where}, example {i}: expected a list of non-negative "
                            f"integer class ids (below 2**63), got {entry!r:.80}")
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    labels = np.fromiter((x for entry in lists for x in entry), dtype=np.int64,
                         count=int(lengths.sum()))
    return cls(np.repeat(np.arange(len(lists)), lengths), labels, len(lists))


def read_multilabels(path: str | os.PathLike, predictions: Predictions) -> MultiLabels:
  """Reads a multi-label file for the examples of `predictions`.

  The file is JSON, either
    a list with one entry per example, in the order of the predictions file: the list of
      acceptable class ids, [] when the example is unlabeled (ImageNet ReaL's real.json,
      for predictions in ImageNet validation order: ILSVRC2012_val_00000001 first); or
    an object {file_name: [class ids]}, matched to the predictions' file names (exactly,
      else by base name); file names the predictions do not have are ignored.
  Class ids are in the predictions' label space (ReaL's are ImageNet-1k ids: use the
  source label space).
  Raises:
    AnalysisError: naming the file and the example that does not fit.
  """
  path = os.fspath(path)
  data = files.read_json(path, AnalysisError)
  n = len(predictions)
  if isinstance(data, list):
    if len(data) != n:
      raise AnalysisError(f"{path}: has {len(data)} entries but {predictions.source} has "
                          f"{n} examples; a list must give one entry per example, in order")
    return MultiLabels.from_lists(data, path)
  if not isinstance(data, dict):
    raise AnalysisError(f"{path}: expected a JSON list (one entry per example) or an "
                        f"object {{file_name: [class ids]}}")
  if predictions.file_names is None:
    raise AnalysisError(f"{path}: is keyed by file name, but {predictions.source} has no "
                        f"file names to match")
  lists = []
  for i, name in enumerate(predictions.file_names.tolist()):
    entry = data.get(name, data.get(os.path.basename(name)))
    if entry is None:
      missing = sum(1 for x in predictions.file_names.tolist()
                    if x not in data and os.path.basename(x) not in data)
      raise AnalysisError(f"{path}: has no entry for {name!r} ({predictions.where(i)}); "
                          f"{missing} of {n} examples have none")
    lists.append(entry)
  return MultiLabels.from_lists(lists, path)
