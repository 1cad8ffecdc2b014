r"""Accuracy against specialist size: one row per trained, evaluated and exported run.

  .venv/bin/python bench/delta_tradeoff.py \
      --run="dense:runs/a:exports/a" --run="keep 2%:runs/b:exports/b" \
      --out=bench/results/delta_tradeoff_demo

Each run is LABEL:MODEL_DIR:EXPORT_DIR (super-sub-train, super-sub-eval, super-sub-export).
Reads eval.json (two-stage and oracle-specialist top-1), the specialists' metrics.json
(fraction of backbone kernel weights that differ from the generalist's) and the export's
manifest (b = cost of one specialist in units of one fp32 network, super_sub.bundles.storage.storage_fit).
Writes <out>.json and <out>.md.
"""

import shlex
import sys

from absl import app
from absl import flags

from _common import tradeoff_row
from _common import tradeoff_table
from _common import write_results

_RUNS = flags.DEFINE_multi_string("run", [], "LABEL:MODEL_DIR:EXPORT_DIR, one per run.")
_OUT = flags.DEFINE_string("out", "bench/results/delta_tradeoff", "Output path without suffix.")


def main(argv):
  del argv
  if not _RUNS.value:
    raise app.UsageError("give at least one --run=LABEL:MODEL_DIR:EXPORT_DIR")
  rows = []
  for spec in _RUNS.value:
    parts = spec.split(":")
    if len(parts) != 3:
      raise app.UsageError(f"--run={spec!r}: expected LABEL:MODEL_DIR:EXPORT_DIR")
    rows.append(tradeoff_row(*parts))
  command = "python bench/delta_tradeoff.py " + " ".join(
      shlex.quote(arg) for arg in sys.argv[1:])
  markdown = f"Command: `{command}`\n\n" + tradeoff_table(rows)
  write_results(_OUT.value, {"command": command, "runs": rows}, markdown)


if __name__ == "__main__":
  app.run(main)
