r"""How long the edge runtime takes to rebuild a specialist from the base and its delta.

  .venv/bin/python bench/rebuild_speed.py --bundle=runs/x/export/tflite [--bundle=...] \
      --out=bench/results/rebuild_speed

The first rebuild of each specialist goes through the flatbuffer object API and leaves a
fast form behind (formats.fast_rebuild.FastRebuild); later ones copy bytes. Then a LiteRT
interpreter is made from the bytes, as TwoStageLite does, and run once on one image (the
first invoke after a rebuild). Needs no TensorFlow.
Writes <out>.json and <out>.md.
"""

import sys
import time

from absl import app
from absl import flags
import numpy as np

from _common import write_results
from super_sub.analysis.tables import markdown_table
from super_sub.formats import bundle_loader as bundle_lib
from super_sub.runtime import predictor

_BUNDLES = flags.DEFINE_multi_string("bundle", [], "A tflite/ bundle folder.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Later rebuilds timed per specialist.")
_OUT = flags.DEFINE_string("out", "bench/results/rebuild_speed", "Output path without suffix.")


def _ms(fn) -> float:
  start = time.perf_counter()
  fn()
  return 1000 * (time.perf_counter() - start)


def measure(path: str, repeats: int) -> dict:
  """Mean milliseconds per specialist: first rebuild, later rebuilds, new interpreter."""
  bundle = bundle_lib.load_bundle(path)
  ks = sorted(bundle.skeletons)
  first = [_ms(lambda k=k: bundle.specialist(k)) for k in ks]
  later = [_ms(lambda k=k: bundle.specialist(k)) for _ in range(repeats) for k in ks]
  model = bundle.specialist(ks[0])
  interpreter, first_invoke = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    lite = predictor.LiteModel(model, 2, "s")
    interpreter.append(1000 * (time.perf_counter() - start))
    x = np.zeros((1, *lite.input_shape), np.float32)
    first_invoke.append(_ms(lambda: lite(x)))  # pylint: disable=cell-var-from-loop
  return {"bundle": path, "num_specialists": len(ks), "specialist_bytes": len(model),
          "first_rebuild_ms": float(np.mean(first)), "later_rebuild_ms": float(np.mean(later)),
          "new_interpreter_ms": float(np.mean(interpreter)),
          "first_invoke_ms": float(np.mean(first_invoke))}


def main(argv):
  del argv
  if not _BUNDLES.value:
    raise app.UsageError("give at least one --bundle=DIR")
  rows = [measure(p, _REPEATS.value) for p in _BUNDLES.value]
  lines = [f"`python {' '.join(sys.argv)}`", ""] + markdown_table(
      ["bundle", "first rebuild ms", "later rebuilds ms", "new interpreter ms"],
      [[r["bundle"], f"{r['first_rebuild_ms']:.1f}", f"{r['later_rebuild_ms']:.2f}",
        f"{r['new_interpreter_ms']:.2f}"] for r in rows])
  write_results(_OUT.value, {"command": " ".join(sys.argv), "bundles": rows},
                "\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
