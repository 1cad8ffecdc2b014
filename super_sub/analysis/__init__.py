"""Misclassification analysis: where a classifier's errors fall in a Super-Sub hierarchy.

  from super_sub import analysis, load_hierarchy
  h = load_hierarchy("superclassed_synthetic")
  preds = analysis.read_predictions("runs/demo/predictions/flat.npz")  # or .csv
  numbers = analysis.analyze(preds, h)              # the report.json content
  analysis.write_report("runs/demo/report", preds, h)  # + CSVs, pictures, index.html

Needs numpy, and matplotlib for the pictures: `write_report` loads it when first used, so
the rest (and the commands' --help) works where only the edge runtime is installed.
TensorFlow only for images from a TFDS dataset.
"""

from super_sub.analysis.images import images_from_folder, images_from_tfds
from super_sub.analysis.loading import MultiLabels, read_multilabels, read_predictions
from super_sub.analysis.predictions import AnalysisError, LABEL_SPACES, Predictions
from super_sub.analysis.report import analyze, error_counts, summary


def __getattr__(name):
  if name == "write_report":  # matplotlib, on first use
    from super_sub.analysis.writer import write_report  # pylint: disable=import-outside-toplevel
    return write_report
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["AnalysisError", "LABEL_SPACES", "MultiLabels", "Predictions", "analyze",
           "error_counts", "images_from_folder", "images_from_tfds", "read_multilabels",
           "read_predictions", "summary", "write_report"]
