r"""Makes or shows a Super-Sub hierarchy: derived from WordNet superclasses, learned from a
flat network's confusions (--from_run, --from_predictions), or printed (--show=NAME|PATH).

The shipped super_sub/hierarchies/superclassed_imagenet.json was made with:

  super-sub-hierarchy --wordnet_dir=/usr/share/wordnet \
    --superclasses=n01503061,n02958343,n02121620,n02084071,n13134947,n12992868,n02159955,n02484322,n01726692,watercraft=n04530566 \
    --name=superclassed_imagenet --output=super_sub/hierarchies/superclassed_imagenet.json

(WordNet 3.0 from Debian's wordnet-base; the class list defaults to TFDS's imagenet2012
labels.txt.) Classes under two superclasses are refused unless --resolve says how, e.g.
--resolve=nearest, or --resolve=n03770679=n02958343 to put minivan under car, not truck.

  super-sub-hierarchy --show=superclassed_imagenet   # a shipped name or a JSON path, as text

An existing --output is replaced only if it is a hierarchy JSON (or with --overwrite).

Without a taxonomy, learn one from a flat network's confusions (HD-CNN;
super_sub.hierarchy.learned):

  super-sub-hierarchy --from_run=runs/flat --superclasses=5 --output=learned.json
  super-sub-hierarchy --from_predictions=preds.csv --class_names=names.txt --superclasses=5 \
    --output=learned.json
"""

import os
import shutil

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub.hierarchy import tree
from super_sub.hierarchy import wordnet

_WORDNET_DIR = flags.DEFINE_string(
    "wordnet_dir", None, "Directory holding WordNet 3.0's data.noun, e.g. /usr/share/wordnet "
    "(Debian wordnet-base) or nltk_data/corpora/wordnet.")
_CLASS_LIST = flags.DEFINE_string(
    "class_list", None, "Text file of wnids, line k = source label k. Default: the "
    "imagenet2012 labels.txt shipped inside tensorflow_datasets (nothing is downloaded).")
_SUPERCLASSES = flags.DEFINE_list(
    "superclasses", None, "Superclasses in order, each a wnid (named by its first WordNet "
    "lemma) or NAME=WNID. With --from_run/--from_predictions: K, the number of groups "
    "(2 to one fewer than the classes).")
_RESOLVE = flags.DEFINE_string(
    "resolve", "", "How to settle classes under several superclasses, comma separated: a "
    "rule (nearest | first | drop) and/or CLASS_WNID=SUPERCLASS_WNID or CLASS_WNID=drop. "
    "Empty: overlaps are an error that lists them.")
_NAME = flags.DEFINE_string("name", None, "Hierarchy name; default: --output's file stem.")
_FROM_PREDICTIONS = flags.DEFINE_string(
    "from_predictions", None, "Learn the hierarchy from a flat network's predictions on "
    "held-out data (.csv or .npz, the format super-sub-analyze reads): --superclasses=K "
    "groups of the classes it confuses.")
_FROM_RUN = flags.DEFINE_string(
    "from_run", None, "Learn the hierarchy from an evaluated run (its model_dir): the flat "
    "network's predictions/flat.npz, classes named by the run's hierarchy.")
_CLASS_NAMES = flags.DEFINE_string(
    "class_names", None, "With --from_predictions: a text file, line k the name of class k "
    "(default: class_<k>).")
_MIN_GROUP_SIZE = flags.DEFINE_integer(
    "min_group_size", 1, "With --from_predictions/--from_run: the fewest classes a learned "
    "superclass holds.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the hierarchy JSON.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace --output even when it is not a "
                                  "hierarchy JSON (an earlier hierarchy is replaced anyway).")
_SHOW = flags.DEFINE_string("show", None, "Print a hierarchy as a tree instead of deriving one: "
                            "a shipped name (" + ", ".join(tree.shipped_hierarchies())
                            + ") or a JSON path.")


def default_class_list() -> str:
  """Path of TFDS's ImageNet-1k labels.txt, found without importing tensorflow_datasets."""
  path = wordnet.imagenet_class_list()
  if path is None:
    raise app.UsageError("--class_list not given and no imagenet2012 labels.txt in an "
                         "installed tensorflow_datasets")
  return path


def parse_superclasses(items: list[str]) -> list[tuple[str | None, str]]:
  """["n01503061", "boat=n02858304"] -> [(None, "n01503061"), ("boat", "n02858304")]."""
  out = []
  for item in items:
    name, _, wnid = item.rpartition("=")
    out.append((name.strip() or None, wnid.strip()))
  return out


def check_output(path: str, overwrite: bool) -> None:
  """Refuses, before any work, an --output that is a folder, or a file that is not a
  hierarchy JSON (unless `overwrite`): what super-sub did not write is never replaced."""
  if os.path.isdir(path):
    raise app.UsageError(f"--output={path} is a folder; give the path of a .json file, "
                         f"e.g. --output={os.path.join(path, 'my_hierarchy.json')}")
  if os.path.exists(path) and not overwrite:
    try:
      tree.Hierarchy.from_json(path)
    except tree.HierarchyError:
      raise app.UsageError(f"--output={path} exists and is not a hierarchy JSON; refusing to "
                           "replace it: choose another path, or pass --overwrite") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SHOW.value:
    given = [f"--{f.name}" for f in (_WORDNET_DIR, _CLASS_LIST, _SUPERCLASSES, _OUTPUT) if f.value]
    if given:
      raise app.UsageError(f"--show prints a hierarchy and derives none: drop {', '.join(given)}")
    print(tree.format_tree(tree.load_hierarchy(_SHOW.value), shutil.get_terminal_size().columns))
    return
  if _FROM_PREDICTIONS.value or _FROM_RUN.value:
    return learn_main()
  for flag in (_WORDNET_DIR, _SUPERCLASSES, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required (or --show=NAME to print a hierarchy)")
  check_output(_OUTPUT.value, _OVERWRITE.value)
  class_list = _CLASS_LIST.value or default_class_list()
  name = _NAME.value or os.path.splitext(os.path.basename(_OUTPUT.value))[0]
  # A WordNetError (overlaps, unknown wnids) or a missing file is reported by cli.run.
  hierarchy = wordnet.derive_hierarchy(
      parse_superclasses(_SUPERCLASSES.value), wordnet.read_class_list(class_list),
      wordnet.read_wordnet(_WORDNET_DIR.value), name, wordnet.Resolution.parse(_RESOLVE.value))
  hierarchy.to_json(_OUTPUT.value)

  width = max(len(s.name) for s in hierarchy.superclasses)
  print(f"{'superclass':<{width}}  wnid       subclasses")
  for sup in hierarchy.superclasses:
    print(f"{sup.name:<{width}}  {sup.wnid}  {len(sup.subclasses):10d}")
  print(f"{'total':<{width}}  {'':9}  {hierarchy.num_subclasses:10d} of "
        f"{hierarchy.num_source_labels} classes in {class_list}")
  print(f"wrote {_OUTPUT.value}")


def learn_main():
  """--from_predictions / --from_run: a hierarchy learned from confusions."""
  from super_sub.hierarchy import learned  # pylint: disable=import-outside-toplevel
  if bool(_FROM_PREDICTIONS.value) == bool(_FROM_RUN.value) or _WORDNET_DIR.value:
    raise app.UsageError("give one of --from_predictions and --from_run (and no --wordnet_dir)")
  if not _OUTPUT.value or not _SUPERCLASSES.value or len(_SUPERCLASSES.value) != 1 \
      or not _SUPERCLASSES.value[0].isdigit():
    raise app.UsageError("learning a hierarchy needs --superclasses=K (a number of groups) and "
                         "--output=<json>")
  check_output(_OUTPUT.value, _OVERWRITE.value)
  name = _NAME.value or os.path.splitext(os.path.basename(_OUTPUT.value))[0]
  k = int(_SUPERCLASSES.value[0])
  # LearnError, AnalysisError (a bad predictions file) and a missing run end as one line.
  if _FROM_RUN.value:
    result = learned.from_run(_FROM_RUN.value, k, name, _MIN_GROUP_SIZE.value)
  else:
    names = learned.read_class_names(_CLASS_NAMES.value) if _CLASS_NAMES.value else None
    result = learned.from_predictions(_FROM_PREDICTIONS.value, k, names, name,
                                      _MIN_GROUP_SIZE.value)
  result.hierarchy.to_json(_OUTPUT.value)
  print(learned.format_learned(result))
  print(f"wrote {_OUTPUT.value}")


def run():
  cli.run(main, needs_training_extra=True)


if __name__ == "__main__":
  run()
