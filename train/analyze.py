r"""super-sub-analyze: the misclassification report of any classifier's predictions.

  super-sub-analyze --predictions=runs/demo/predictions/flat.npz \
    --hierarchy=superclassed_synthetic --output=runs/demo/report_flat \
    --images_dataset=superclassed_synthetic --images_split=validation

  # An ImageNet-1k model's predictions (ids 0..999) with ReaL multi-labels and WordNet:
  super-sub-analyze --predictions=resnet50_val.csv --label_space=source \
    --hierarchy=superclassed_imagenet --unmapped_labels=skip --multilabel=real.json \
    --wordnet_dir=/usr/share/wordnet --output=reports/resnet50

Writes DIR/index.html (open it in a browser), report.json, confusion_pairs.csv,
mistakes.csv and the PNG pictures; see super_sub.analysis for the file formats.
"""

import os

from absl import flags

from super_sub._internal import cli
from super_sub import analysis
from super_sub import hierarchy as hierarchy_lib
from super_sub.hierarchy import wordnet as wordnet_lib

_PREDICTIONS = flags.DEFINE_string(
    "predictions", None, "Predictions file: .csv (columns label, prediction; optional "
    "file_name, top5, prob_<id> or logits) or .npz (labels, predictions or logits/probs; "
    "optional file_names, top5), e.g. a run's predictions/flat.npz.")
_HIERARCHY = flags.DEFINE_string(
    "hierarchy", None, "A shipped hierarchy name (e.g. superclassed_imagenet) or a JSON path.")
_OUT = flags.DEFINE_string("output", None, "Report folder (replaced if it holds an earlier "
                           "report; any other non-empty folder is refused). Formerly --out.")
_LABEL_SPACE = flags.DEFINE_enum(
    "label_space", None, analysis.LABEL_SPACES, "Ids in the file: 'subclass' (the "
    "hierarchy's global subclass index) or 'source' (source dataset ids such as ImageNet-1k's "
    "0..999, mapped through the hierarchy; predictions outside it get an 'outside' column). "
    "Default: the file's label_space field, else subclass.")
_UNMAPPED_LABELS = flags.DEFINE_enum(
    "unmapped_labels", "error", ["error", "skip"], "Examples whose true label is outside "
    "the hierarchy (source space): an error, or skipped and counted.")
_IMAGES_DATASET = flags.DEFINE_string(
    "images_dataset", None, "Dataset holding the images, matched by its file_name feature, "
    "named as super-sub-train's --dataset: a TFDS name (super-sub's are registered, e.g. "
    "superclassed_synthetic), folder:<PATH> (read from the folder) or tfds:<name> (opened "
    "with --hierarchy).")
_IMAGES_SPLIT = flags.DEFINE_string("images_split", None, "Split of --images_dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder of --images_dataset.")
_IMAGES_DIR = flags.DEFINE_string("images_dir", None, "Folder the file names are relative to "
                                  "(instead of --images_dataset).")
_MULTILABEL = flags.DEFINE_string(
    "multilabel", None, "JSON multi-labels (ImageNet ReaL style): a list with the acceptable "
    "class ids of each example ([] = unlabeled), or {file_name: [ids]}.")
_WORDNET_DIR = flags.DEFINE_string(
    "wordnet_dir", None, "WordNet 3.0 folder with data.noun (e.g. /usr/share/wordnet): adds "
    "mistake severity when every subclass has a WordNet id.")
_TOP_CONFUSIONS = flags.DEFINE_integer("top_confusions", 20, "Confusion pairs listed.",
                                       lower_bound=1)
_TITLE = flags.DEFINE_string("title", None, "Title of the page (default: from the file name).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the report folder even when it "
                               "holds files that are not an earlier report.")


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_PREDICTIONS, _HIERARCHY, _OUT):
    if not flag.value:
      raise cli.UsageError(f"--{flag.name} is required")
  if _IMAGES_DATASET.value and _IMAGES_DIR.value:
    raise cli.UsageError("give --images_dataset or --images_dir, not both")
  if bool(_IMAGES_DATASET.value) != bool(_IMAGES_SPLIT.value):
    raise cli.UsageError("--images_dataset and --images_split go together")
  # Bad files and names raise the library's errors, which cli.run prints as one line.
  hierarchy = hierarchy_lib.load_hierarchy(_HIERARCHY.value)
  predictions = analysis.read_predictions(_PREDICTIONS.value, _LABEL_SPACE.value)
  images = None
  if _IMAGES_DATASET.value:
    images = analysis.images_from_tfds(_IMAGES_DATASET.value, _IMAGES_SPLIT.value,
                                       _DATA_DIR.value, hierarchy=_HIERARCHY.value)
  elif _IMAGES_DIR.value:
    images = analysis.images_from_folder(_IMAGES_DIR.value)
  report = analysis.write_report(
      _OUT.value, predictions, hierarchy, images=images,
      multilabels=(analysis.read_multilabels(_MULTILABEL.value, predictions)
                   if _MULTILABEL.value else None),
      wordnet=wordnet_lib.read_wordnet(_WORDNET_DIR.value) if _WORDNET_DIR.value else None,
      top_confusions=_TOP_CONFUSIONS.value, unmapped_labels=_UNMAPPED_LABELS.value,
      title=_TITLE.value, overwrite=_OVERWRITE.value)
  print(analysis.summary(report))
  print(f"wrote {os.path.join(os.path.abspath(_OUT.value), 'index.html')}")


def run():
  cli.run(main, needs_training_extra=True)


if __name__ == "__main__":
  run()
