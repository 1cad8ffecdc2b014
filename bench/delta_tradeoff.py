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

import glob
import json
import os

from absl import app
from absl import flags

from super_sub._internal import files
from super_sub.bundles import storage as storage_lib
from super_sub.training import config as config_lib

_RUNS = flags.DEFINE_multi_string("run", [], "LABEL:MODEL_DIR:EXPORT_DIR, one per run.")
_OUT = flags.DEFINE_string("out", "bench/results/delta_tradeoff", "Output path without suffix.")

_KNOBS = ("qat", "delta_l1", "delta_keep", "freeze_bn", "freeze_stages", "specialist_epochs")


def row(label: str, model_dir: str, export_dir: str) -> dict:
  """One run's accuracy, delta sparsity and storage."""
  config = config_lib.load_config(model_dir)
  with open(os.path.join(model_dir, "eval.json"), encoding="utf-8") as f:
    result = json.load(f)
  with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
    storage = storage_lib.storage_fit(json.load(f))
  changed = []
  for path in sorted(glob.glob(os.path.join(model_dir, "specialists", "*", "metrics.json"))):
    with open(path, encoding="utf-8") as f:
      changed.append(json.load(f)["delta"]["changed_fraction"])
  return {"label": label, "model_dir": model_dir, "export_dir": export_dir,
          "knobs": {k: getattr(config, k) for k in _KNOBS},
          "flat_top1": result["flat"]["top1"],
          "two_stage_top1": result["two_stage"]["hard"]["top1"],
          "oracle_top1": result["oracle_specialists"]["top1"],
          "per_superclass": result["oracle_specialists"]["per_superclass"],
          "changed_fraction": {"min": min(changed), "max": max(changed)},
          "storage_ratio": storage["storage_ratio"], "a": storage["a"], "b": storage["b"],
          "ratio_at_n10": storage["ratio_at_n10"]}


def main(argv):
  del argv
  if not _RUNS.value:
    raise app.UsageError("give at least one --run=LABEL:MODEL_DIR:EXPORT_DIR")
  rows = []
  for spec in _RUNS.value:
    parts = spec.split(":")
    if len(parts) != 3:
      raise app.UsageError(f"--run={spec!r}: expected LABEL:MODEL_DIR:EXPORT_DIR")
    rows.append(row(*parts))
  lines = ["| run | kernel weights changed | two-stage top-1 | oracle specialists | "
           "per superclass (oracle) | b (x fp32 net) | bundle, N here | a + 10 b |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    c = r["changed_fraction"]
    per = ", ".join(f"{k} {v:.1%}" for k, v in r["per_superclass"].items() if v is not None)
    lines.append(f"| {r['label']} | {c['min']:.1%}-{c['max']:.1%} | {r['two_stage_top1']:.2%} | "
                 f"{r['oracle_top1']:.2%} | {per} | {r['b']:.4f} | {r['storage_ratio']:.3f} | "
                 f"{r['ratio_at_n10']:.2f} |")
  markdown = "\n".join(lines) + "\n"
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  files.write_json(_OUT.value + ".json", {"runs": rows})
  with open(_OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
