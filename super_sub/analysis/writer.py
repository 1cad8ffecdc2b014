"""Writes a whole report folder: report.json, CSV tables, PNG pictures and index.html.

The folder is built in a temporary sibling and renamed into place (`files.atomic_dir`),
so a failure leaves the previous report, or nothing, never half a report.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from super_sub._internal import files
from super_sub import hierarchy as hierarchy_lib
from super_sub.analysis import images as images_lib
from super_sub.analysis import page
from super_sub.analysis import plots
from super_sub.analysis import predictions as predictions_lib
from super_sub.analysis import report as report_lib

GRID_ROWS = 6     # confusion pairs per superclass grid
GRID_COLUMNS = 4  # example images per pair
# Per-superclass confusion pictures cost ~0.25 s each; beyond this many, the superclasses
# with the most within-superclass errors get one (the rest are in confusion_pairs.csv).
MAX_SUPERCLASS_PICTURES = 24


def write_report(out_dir: str | os.PathLike, predictions: predictions_lib.Predictions,
                 hierarchy: hierarchy_lib.Hierarchy, *,
                 images: images_lib.ImageSource | None = None, multilabels=None,
                 wordnet=None, top_confusions: int = 20, unmapped_labels: str = "error",
                 title: str | None = None, overwrite: bool = False) -> dict[str, Any]:
  """Analyses `predictions` and writes the report folder `out_dir`.

  Writes index.html, report.json (the `analyze` numbers), confusion_pairs.csv (every
  true -> predicted pair), mistakes.csv (every misclassified example),
  subclass_confusion.png, superclass_confusion.png, errors_per_superclass.png and, under
  superclasses/, one confusion picture per superclass when the hierarchy has more than
  plots.NAMED_LIMIT subclasses and one grid of mistakes per superclass when `images` is
  given.

  Args:
    out_dir: the report folder; replaced if it holds an earlier report, or anything at all
      with `overwrite`.
    images: from `images.images_from_folder` or `images.images_from_tfds`, or None for no
      image grids.
    Other arguments: as for `report.build`.
  Returns:
    The report.json content.
  Raises:
    AnalysisError: for bad input (see `report.build`), a missing image, or an `out_dir`
      that exists and is not a report folder (it is never deleted unless `overwrite`).
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  _check_out_dir(out_dir, overwrite)
  analysis = report_lib.build(predictions, hierarchy, multilabels=multilabels,
                              wordnet=wordnet, top_confusions=top_confusions,
                              unmapped_labels=unmapped_labels)
  r, m = analysis.report, analysis.mapped
  title = title or f"Misclassification report: {os.path.basename(predictions.source)}"
  pairs = report_lib.confusion_pairs(analysis.confusion, hierarchy)
  if images is not None and predictions.file_names is None:
    raise predictions_lib.AnalysisError(
        f"{predictions.source}: has no file names (a 'file_name' column or 'file_names' "
        f"field), so its images cannot be found")
  grids = _grid_examples(analysis, pairs, hierarchy) if images is not None else {}
  if grids:
    wanted = {str(predictions.file_names[i]): predictions.where(i)
              for rows in grids.values() for row in rows for i in row["rows"]}
    loaded = images(wanted)
  with files.atomic_dir(out_dir, "report", "report.json", overwrite=overwrite) as tmp:
    pics: dict[str, Any] = {"subclass_confusion": "subclass_confusion.png",
                            "superclass_confusion": "superclass_confusion.png",
                            "errors_per_superclass": "errors_per_superclass.png",
                            "superclasses": {}}
    share = r["within_superclass_share"]
    plots.subclass_confusion(
        os.path.join(tmp, pics["subclass_confusion"]), analysis.confusion, hierarchy,
        analysis.has_outside, f"{hierarchy.name}: subclass confusion ordered by superclass"
        + ("" if share is None else f"\n{share:.0%} of errors stay inside the true superclass"))
    plots.superclass_confusion(
        os.path.join(tmp, pics["superclass_confusion"]), np.array(r["superclass_confusion"]),
        r["superclass_names"], r["superclass_confusion_columns"],
        f"Superclass confusion (superclass top-1 {r['superclass_top1']:.1%})")
    plots.error_bars(os.path.join(tmp, pics["errors_per_superclass"]), r["per_superclass"],
                     "Where each superclass's errors go")
    matrices = _matrix_superclasses(r, hierarchy)
    if len(matrices) < sum(len(hierarchy.subclass_range(k)) > 1
                           for k in range(hierarchy.num_superclasses)) and matrices:
      pics["note"] = (f"Confusion pictures for the {len(matrices)} superclasses with the "
                      f"most within-superclass errors; all pairs are in confusion_pairs.csv.")
    if matrices or grids:
      os.makedirs(os.path.join(tmp, "superclasses"))
    for k, name in enumerate(hierarchy.superclass_names):
      entry = pics["superclasses"][name] = {"confusion": None, "mistakes": None}
      stem = f"superclasses/{k:03d}_{files.safe_name(name, 40)}"
      if k in matrices:
        entry["confusion"] = f"{stem}_confusion.png"
        plots.superclass_block(os.path.join(tmp, entry["confusion"]), analysis.confusion,
                               hierarchy, k, analysis.has_outside)
      if grids.get(k):
        entry["mistakes"] = f"{stem}_mistakes.png"
        rows = [{**row, "images": [loaded[str(predictions.file_names[i])]
                                   for i in row["rows"]]}
                for row in grids[k]]
        plots.mistake_grid(os.path.join(tmp, entry["mistakes"]),
                           f"{name}: most frequent mistakes", rows)
    _write_pairs(os.path.join(tmp, "confusion_pairs.csv"), pairs)
    _write_mistakes(os.path.join(tmp, "mistakes.csv"), predictions, m, hierarchy,
                    analysis.source_names)
    files.write_json(os.path.join(tmp, "report.json"), r)
    data_files = ["report.json", "confusion_pairs.csv", "mistakes.csv"]
    with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
      f.write(page.render(r, pics, title, data_files))
  return r


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
  """Refuses to replace anything but an earlier report (or an empty folder), unless
  `overwrite`."""
  try:
    files.check_replaceable(out_dir, "report", "report.json", overwrite=overwrite)
  except files.OutputDirError as e:
    raise predictions_lib.AnalysisError(str(e)) from None


def _matrix_superclasses(r: dict, hierarchy: hierarchy_lib.Hierarchy) -> set[int]:
  """Superclasses that get their own confusion picture: none when the whole matrix names
  every class, else those with 2+ subclasses (at most MAX_SUPERCLASS_PICTURES)."""
  if hierarchy.num_subclasses <= plots.NAMED_LIMIT:
    return set()
  stats = list(r["per_superclass"].values())
  candidates = [k for k in range(hierarchy.num_superclasses)
                if len(hierarchy.subclass_range(k)) > 1]
  candidates.sort(key=lambda k: -stats[k]["errors_within"])
  return set(candidates[:MAX_SUPERCLASS_PICTURES])



def _grid_examples(analysis: report_lib.Analysis, pairs: list[dict],
                   hierarchy: hierarchy_lib.Hierarchy) -> dict[int, list[dict]]:
  """Per superclass: its most frequent confusion pairs, each with the rows of up to
  GRID_COLUMNS examples (most confident mistakes first when probabilities are known)."""
  m, n = analysis.mapped, hierarchy.num_subclasses
  wrong = np.flatnonzero(m.labels != m.predictions)
  key = m.labels[wrong] * (n + 1) + np.where(m.predictions[wrong] < 0, n, m.predictions[wrong])
  conf = (np.zeros(len(wrong)) if m.confidence is None else m.confidence[wrong])
  order = np.lexsort((-conf, key))
  wrong, key = wrong[order], key[order]
  out: dict[int, list[dict]] = {}
  for pair in pairs:
    k = int(hierarchy.superclass_of[pair["true"]])
    if len(out.setdefault(k, [])) >= GRID_ROWS:
      continue
    p = n if pair["predicted"] < 0 else pair["predicted"]
    lo, hi = np.searchsorted(key, [pair["true"] * (n + 1) + p, pair["true"] * (n + 1) + p + 1])
    picked = wrong[lo:min(hi, lo + GRID_COLUMNS)]
    out[k].append({**pair, "rows": picked.tolist(),
                   "confidences": [None if m.confidence is None else float(m.confidence[i])
                                   for i in picked]})
  # The grids show file rows: map positions among kept examples back to the file.
  for rows in out.values():
    for row in rows:
      row["rows"] = [int(m.rows[i]) for i in row["rows"]]
  return out


def _write_pairs(path: str, pairs: list[dict]) -> None:
  keys = ["true", "true_name", "predicted", "predicted_name", "true_superclass",
          "predicted_superclass", "kind", "count", "share_of_true"]
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(keys)
    writer.writerows([p[k] for k in keys] for p in pairs)


def _write_mistakes(path: str, predictions: predictions_lib.Predictions,
                    m: predictions_lib.Mapped, hierarchy: hierarchy_lib.Hierarchy,
                    source_names: list[str] | None = None) -> None:
  """Every misclassified example: where it is in the input, its image, true and predicted
  (a prediction outside the hierarchy named by `source_names` where known, else "outside")."""
  wrong = np.flatnonzero(m.labels != m.predictions)
  names = np.array(hierarchy.subclass_names + [report_lib.OUTSIDE_NAME], dtype=object)
  sup = hierarchy.superclass_of
  pred = m.predictions[wrong]
  predicted_names = names[pred]
  if source_names is not None:
    raw = m.raw_predictions[wrong]
    known = (pred < 0) & (raw < len(source_names))
    predicted_names[known] = np.array(source_names, dtype=object)[raw[known]]
  kind = np.where(pred < 0, "outside",
                  np.where(sup[np.maximum(pred, 0)] == sup[m.labels[wrong]], "within", "across"))
  rows = m.rows[wrong]
  columns = {
      "row": (rows + (predictions.first_line or 0)).tolist(),
      "file_name": ([""] * len(rows) if predictions.file_names is None
                    else predictions.file_names[rows].tolist()),
      "true": m.labels[wrong].tolist(), "true_name": names[m.labels[wrong]].tolist(),
      "predicted": pred.tolist(), "predicted_name": predicted_names.tolist(),
      "predicted_id_in_file": m.raw_predictions[wrong].tolist(), "kind": kind.tolist(),
      "confidence": ([""] * len(rows) if m.confidence is None
                     else np.round(m.confidence[wrong], 5).tolist()),
  }
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["line" if predictions.first_line else "example", *list(columns)[1:]])
    writer.writerows(zip(*columns.values()))
