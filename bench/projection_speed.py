"""Milliseconds of one specialist projection (`DeltaToBase`): the compiled TensorFlow function
(`project`, what training runs) against the numpy reference (`project_reference`, the old
per-step host round trip), on the same QAT model in the same process.

    python bench/projection_speed.py --out=bench/results/projection_speed

Each row: one untimed call (tracing), then the median of `--repeats` calls. CPU only here; on
a GPU the reference's copies to the host and back would weigh more.
"""

import os
import platform
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(__file__))
import _common  # pylint: disable=wrong-import-position

flags.DEFINE_string("out", "bench/results/projection_speed", "Results path, no extension.")
flags.DEFINE_integer("repeats", 20, "Timed calls per implementation.")
flags.DEFINE_string("note", "", "What else shared the machine (written into the result).")
FLAGS = flags.FLAGS

# (backbone, image size, form options, L1 threshold)
SETTINGS = [("small_resnet", 28, dict(form="sign"), 0.0),
            ("small_resnet", 28, dict(form="sign", keep=0.3), 0.0),
            ("small_resnet", 28, dict(), 1e-4),
            ("small_resnet", 28, dict(form="lowrank", rank=8), 0.0),
            ("mobilenet_v2", 32, dict(form="sign"), 0.0),
            ("mobilenet_v2", 32, dict(), 1e-4)]


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  from super_sub.models import classifiers  # pylint: disable=import-outside-toplevel
  from super_sub.training import deltas  # pylint: disable=import-outside-toplevel
  from super_sub.training import projection  # pylint: disable=import-outside-toplevel
  from super_sub.training import qat as qat_lib  # pylint: disable=import-outside-toplevel
  rows = []
  for backbone, size, options, threshold in SETTINGS:
    model = qat_lib.quantize(classifiers.build_classifier(backbone, (size, size, 3), 5,
                                                          "specialist", "s"))
    variables = deltas.backbone_variables(model)
    for r, k in deltas.range_owners(model).items():  # ranges as QAT leaves them
      is_min = deltas.short_name(variables[r]).endswith("_min")
      # The kernel's own per-channel extent: a zero range grown to it.
      variables[r].assign(projection.grow_range(np.zeros_like(variables[r].numpy()),
                                                variables[k].numpy(), is_min=is_min))
    base = [v.numpy() for v in variables]
    times = {}
    for name in ("project_reference", "project"):
      callback = deltas.DeltaToBase(base, 0.0, **options)
      if "keep" in options:
        callback.keep_now = options["keep"]
      project = getattr(callback, name)
      times[name] = _common.median_ms(lambda: project(model, threshold), FLAGS.repeats)  # pylint: disable=cell-var-from-loop
    form = options.get("form", "delta") + (f", keep {options['keep']}" if "keep" in options
                                           else "") + (f", L1 step {threshold}" if threshold
                                                       else "")
    rows.append({"backbone": backbone, "image_size": size, "form": form,
                 "kernel_weights": int(sum(b.size for b, v in zip(base, variables)
                                           if deltas.is_kernel(v))),
                 "reference_ms": round(times["project_reference"], 2),
                 "compiled_ms": round(times["project"], 2),
                 "speedup": round(times["project_reference"] / times["project"], 2)})
    print(rows[-1], flush=True)
  result = {"command": " ".join(["python", "bench/projection_speed.py"] + sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU; {FLAGS.note}",
            "rows": rows}
  lines = markdown_table(
      ["backbone", "px", "form", "kernel weights", "numpy reference ms", "compiled ms",
       "speed-up"],
      [[r["backbone"], r["image_size"], r["form"], r["kernel_weights"], r["reference_ms"],
        r["compiled_ms"], f"{r['speedup']}x"] for r in rows])
  _common.write_results(FLAGS.out, result, "\n".join(lines) + "\n\n" + result["machine"] + "\n")


if __name__ == "__main__":
  app.run(main)
