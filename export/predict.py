"""super-sub-predict: classifies image files with a `tflite/` bundle, without TensorFlow.

  super-sub-predict --bundle=export/tflite shoe.jpg shirt.png
  super-sub-predict --bundle=export/tflite --json --mode=soft --k=2 *.jpg
  super-sub-predict --bundle=export/tflite --cache_dir=~/.cache/super-sub *.jpg  # faster switches
"""

import json
import sys

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub import runtime

_BUNDLE = flags.DEFINE_string("bundle", None, "A tflite/ bundle folder (written by "
                              "super-sub-export).", required=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per image (JSON lines).")
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
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give one or more image files after the flags")
  try:
    model = runtime.TwoStageLite(_BUNDLE.value, cache_size=_CACHE_SIZE.value,
                                 num_threads=_NUM_THREADS.value, cache_dir=_CACHE_DIR.value,
                                 packed_weights=_PACKED_WEIGHTS.value)
    out = model.predict(runtime.load_images(paths, model.input_shape, model.framing), mode=_MODE.value,
                        k=_K.value)
  except ValueError as e:  # BundleError, ImageError, a bad --cache_dir
    sys.exit(f"super-sub-predict: {e}")
  h = model.hierarchy
  for i, path in enumerate(paths):
    sup, label = int(out["superclass"][i]), int(out["label"][i])
    row = {"image": path,
           "superclass": h.superclasses[sup].name, "superclass_index": sup,
           "superclass_prob": round(float(out["superclass_probs"][i, sup]), 6),
           "label": h.subclasses[label].name, "label_index": label,
           "label_prob": round(float(out["label_probs"][i, label]), 6)}
    if _JSON.value:
      print(json.dumps(row, ensure_ascii=False))
    else:
      print(f"{path}\t{row['superclass']} ({row['superclass_prob']:.3f})\t"
            f"{row['label']} ({row['label_prob']:.3f})")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
