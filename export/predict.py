"""super-sub-predict: classifies image files with a `tflite/` bundle, without TensorFlow.

  super-sub-predict --bundle=export/tflite shoe.jpg shirt.png photos/
  super-sub-predict --bundle=export/tflite --json --mode=soft --soft_k=2 *.jpg
  super-sub-predict --bundle=export/tflite --cache_dir=~/.cache/super-sub *.jpg  # faster switches

A folder stands for the image files under it (recursively, sorted). Every image gets one line:
`path<TAB>superclass (P)<TAB>label (P joint, P given its superclass)`, or `path<TAB>error: ...`
for one that cannot be read; with --json one object each, {"image", "error"} for those.
Probabilities: superclass_prob is P(superclass); label_prob_given_superclass is
P(label | its superclass); label_prob_joint is P(its superclass) x P(label | its superclass);
label_prob (kept for older readers) is the first under --mode=hard, the second under
--mode=soft. Exit status: 0 every image answered, 1 some failed (or the bundle does not
verify), 2 a usage error. LiteRT's INFO lines are hidden; TF_CPP_MIN_LOG_LEVEL=0 or
SUPER_SUB_TF_LOGS=1 shows them.
"""

import json
import sys

from absl import flags

from super_sub._internal import cli
from super_sub import runtime
from super_sub.runtime import classify

_BUNDLE = flags.DEFINE_string("bundle", None, "A tflite/ bundle folder (written by "
                              "super-sub-export), its manifest.json, or the export folder "
                              "holding it.", required=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per image (JSON lines); "
                          "label_prob is P(label | superclass) with --mode=hard, the joint "
                          "probability with --mode=soft (label_prob_given_superclass and "
                          "label_prob_joint name each).")
_MODE = flags.DEFINE_enum("mode", "hard", ["hard", "soft"], "Routing: hard = the argmax "
                          "superclass's specialist; soft = the top-k superclasses' specialists.")
_K = flags.DEFINE_integer("soft_k", 2, "Superclasses soft routing follows (formerly --k).",
                         lower_bound=1)
_CACHE_SIZE = flags.DEFINE_integer("cache_size", 1, "Rebuilt specialists kept in memory.",
                                   lower_bound=1)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "A folder where each specialist, once "
                                 "rebuilt, is kept as a verified .tflite file that later runs "
                                 "map instead of rebuilding (disk for speed; default: none).")
_PACKED_WEIGHTS = flags.DEFINE_bool("packed_weights", False, "With --cache_dir, also keep "
                                    "LiteRT's packed weights of each specialist there, so that "
                                    "a switch maps them instead of repacking: faster switches "
                                    "for large specialists (ResNet-50's), slower for small "
                                    "ones (MobileNetV2's).")
_NUM_THREADS = flags.DEFINE_integer("num_threads", None, "LiteRT threads (default: LiteRT's).",
                                    lower_bound=1)


def main(argv):
  if not argv[1:]:
    raise cli.UsageError("give one or more image files or folders after the flags")
  try:
    bundle = runtime.find_bundle(_BUNDLE.value)
  except runtime.BundleError as e:
    raise cli.UsageError(f"--bundle: {e}") from None
  try:
    model = runtime.TwoStageLite(bundle, cache_size=_CACHE_SIZE.value,
                                 num_threads=_NUM_THREADS.value, cache_dir=_CACHE_DIR.value,
                                 packed_weights=_PACKED_WEIGHTS.value)
    total = failed = 0
    for row in classify.classify(model, argv[1:], mode=_MODE.value, k=_K.value):
      print(json.dumps(row, ensure_ascii=False) if _JSON.value else classify.text_line(row),
            flush=True)
      total, failed = total + 1, failed + ("error" in row)
  except ValueError as e:  # BundleError, a bad --cache_dir
    sys.exit(f"super-sub-predict: {e}")
  if failed:
    print(f"super-sub-predict: {failed} of {total} images failed", file=sys.stderr)
  return 1 if failed else 0


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
