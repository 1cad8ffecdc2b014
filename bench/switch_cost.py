r"""Where a two-stage image's time goes at batch 1: the parts, each timed alone in one process.

  .venv/bin/python bench/switch_cost.py \
      --bundle=/work/deploy/mobilenet_v2/dense_k4_router/tflite \
      --flat=/work/deploy/mobilenet_v2/flat_int8.tflite --out=bench/results/switch_cost_mobilenet_v2

On a bundle built by bench/deployment.py (a trunk, ideally a router head): the flat int8
network; two-stage with every specialist cached (no switch); the trunk (with the router head
fused into it, where the bundle has one) and one specialist's tail; a specialist switch with a
cache of one and a `cache_dir` (every specialist written there first, so a switch maps a file
and builds an interpreter: `TwoStageLite.specialist`); and the fusion of the router head into
the trunk (`fusion.fuse_router`). Milliseconds, median of --repeats. bench/deployment.py
measures whole streams in fresh processes; this splits them, so the parts need not add up to
its totals (a switch also leaves a cold interpreter and evicted CPU caches behind).
Writes <out>.json and <out>.md.
"""

import shlex
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

from _common import median_ms
from _common import write_results
from super_sub.analysis.tables import markdown_table
from super_sub.runtime import fusion
from super_sub.runtime import predictor

_BUNDLE = flags.DEFINE_string("bundle", None, "A tflite/ bundle with a trunk.", required=True)
_FLAT = flags.DEFINE_string("flat", None, "The flat int8 .tflite to compare with.",
                            required=True)
_THREADS = flags.DEFINE_integer("num_threads", 2, "LiteRT threads per interpreter.")
_REPEATS = flags.DEFINE_integer("repeats", 200, "Calls timed per part.")
_OUT = flags.DEFINE_string("out", "bench/results/switch_cost", "Output path without suffix.")


def main(argv):
  del argv
  repeats, threads = _REPEATS.value, _THREADS.value
  with open(_FLAT.value, "rb") as f:
    flat = predictor.LiteModel(f.read(), threads, "flat")
  image = np.random.default_rng(0).integers(0, 256, (1, *flat.input_shape), np.uint8)
  scaled = image.astype(np.float32) / 255
  cached = predictor.TwoStageLite(_BUNDLE.value, cache_size=16, num_threads=threads)
  if cached.trunk is None:
    raise app.UsageError(f"{_BUNDLE.value}: expected a bundle with a trunk")
  specialists = sorted(cached.bundle.deltas)
  for k in specialists:
    cached.specialist(k)
  features = cached.trunk(scaled)
  features = features[0] if isinstance(features, tuple) else features
  tail = cached.specialist(specialists[0])
  parts = {"flat": median_ms(lambda: flat(scaled), repeats),
           "two_stage_all_cached": median_ms(lambda: cached.predict(image, batch_size=1),
                                             repeats),
           "trunk": median_ms(lambda: cached.trunk(scaled), repeats),
           "tail": median_ms(lambda: tail(features), repeats)}
  del cached, tail
  with tempfile.TemporaryDirectory() as folder:
    lite = predictor.TwoStageLite(_BUNDLE.value, cache_size=1, num_threads=threads,
                                  cache_dir=folder)
    for k in specialists:
      lite.specialist(k)
    turn = iter(range(10 ** 9))
    parts["switch_from_cache_dir"] = median_ms(
        lambda: lite.specialist(specialists[next(turn) % len(specialists)]), repeats)
    if lite.bundle.router_head is not None:
      trunk, head = lite.bundle.trunk, lite.bundle.router_head
      parts["fuse_router"] = median_ms(lambda: fusion.fuse_router(trunk, head),
                                       min(repeats, 20))
  command = " ".join(["python"] + [shlex.quote(a) for a in sys.argv])
  result = {"command": command, "bundle": _BUNDLE.value, "threads": threads,
            "repeats": repeats, "ms": parts}
  lines = [f"`{command}`", "",
           f"Median ms of {repeats} calls at batch 1, {threads} LiteRT threads, one process.",
           ""]
  lines += markdown_table(["part", "ms", "x flat"],
                          [[name, f"{ms:.2f}", f"{ms / parts['flat']:.2f}"]
                           for name, ms in parts.items()])
  write_results(_OUT.value, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
