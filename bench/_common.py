"""Helpers the bench scripts share (no flags here: each script defines its own)."""

import json
import os
import shutil
import statistics
import time

from PIL import Image

from super_sub import load_hierarchy
from super_sub import runs
from super_sub.analysis.tables import markdown_table
from super_sub.bundles import storage as storage_lib
from super_sub.training import config as config_lib

# Training options that shape a specialist, reported beside each trade-off row.
SPECIALIST_KNOBS = ("qat", "specialist_form", "delta_l1", "delta_keep", "delta_ranges",
                    "freeze_bn", "freeze_stages", "distill_from", "specialist_epochs")


def median_ms(call, repeats: int) -> float:
  """Median milliseconds of `call()` over `repeats` calls, after one untimed call (warm-up)."""
  call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def write_json(path: str, payload) -> None:
  """Writes `payload` to `path` as indented JSON (a benchmark's result)."""
  with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


def write_results(out: str, result: dict, markdown: str) -> None:
  """Writes <out>.json and <out>.md (creating their folder) and prints the Markdown."""
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  write_json(out + ".json", result)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)


def copy_stages(source: str, target: str, stages) -> None:
  """Finished stages of the run in `source` into the run `target`, so they are not trained
  again (a stage is finished when its metrics.json exists)."""
  for stage in stages:
    src, dst = os.path.join(source, stage), os.path.join(target, stage)
    if not os.path.exists(dst):
      if not runs.is_done(src):
        raise FileNotFoundError(f"{src} is not finished; train it first")
      shutil.copytree(src, dst)


def tradeoff_row(label: str, model_dir: str, export_dir: str) -> dict:
  """One evaluated and exported run's accuracy, delta sparsity and storage: eval.json
  (two-stage and oracle-specialist top-1), the specialists' metrics.json (fraction of backbone
  kernel weights that differ from the generalist's) and the export's manifest (b = cost of one
  specialist in units of one fp32 network, super_sub.bundles.storage.storage_fit)."""
  config = config_lib.load_config(model_dir)
  result = runs.read_eval(model_dir)
  with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
    storage = storage_lib.storage_fit(json.load(f))
  changed = [runs.read_metrics(folder)["delta"]["changed_fraction"]
             for folder in runs.specialist_dirs(model_dir) if runs.is_done(folder)]
  return {"label": label, "model_dir": model_dir, "export_dir": export_dir,
          "knobs": {k: getattr(config, k) for k in SPECIALIST_KNOBS},
          "flat_top1": result["flat"]["top1"],
          "two_stage_top1": result["two_stage"]["hard"]["top1"],
          "oracle_top1": result["oracle_specialists"]["top1"],
          "per_superclass": result["oracle_specialists"]["per_superclass"],
          "changed_fraction": {"min": min(changed), "max": max(changed)},
          "storage_ratio": storage["storage_ratio"], "a": storage["a"], "b": storage["b"],
          "ratio_at_n10": storage["ratio_at_n10"]}


def tradeoff_table(rows: list[dict]) -> str:
  """The rows of `tradeoff_row` as a Markdown table."""
  def cells(r):
    c = r["changed_fraction"]
    per = ", ".join(f"{k} {v:.1%}" for k, v in r["per_superclass"].items() if v is not None)
    return [r["label"], f"{c['min']:.1%}-{c['max']:.1%}", f"{r['two_stage_top1']:.2%}",
            f"{r['oracle_top1']:.2%}", per, f"{r['b']:.4f}", f"{r['storage_ratio']:.3f}",
            f"{r['ratio_at_n10']:.2f}"]
  return "\n".join(markdown_table(
      ["run", "kernel weights changed", "two-stage top-1", "oracle specialists",
       "per superclass (oracle)", "b (x fp32 net)", "bundle, N here", "a + 10 b"],
      [cells(r) for r in rows])) + "\n"



FASHION_MNIST_SPLITS = {"train": "train", "test": "t10k"}  # split -> IDX file prefix


def folder_name(name: str) -> str:
  """A class name as a folder name ("T-shirt/top" -> "T-shirt_top")."""
  return name.replace("/", "_")


def write_fashion_mnist_pngs(manual_dir: str, image_dir: str, superclass_folders: bool) -> int:
  """Fashion-MNIST's IDX images as <image_dir>/<split>/[<superclass>/]<class>/<index>.png
  (superclasses of the shipped fashion_mnist hierarchy); existing files are kept. Returns how
  many were written."""
  # pylint: disable-next=import-outside-toplevel
  from super_sub.datasets.superclassed_fashion_mnist import (
      superclassed_fashion_mnist_dataset_builder as fmnist)
  h = load_hierarchy("fashion_mnist")
  written = 0
  for split, prefix in FASHION_MNIST_SPLITS.items():
    images = fmnist.read_idx(os.path.join(manual_dir, f"{prefix}-images-idx3-ubyte.gz"), ndim=3)
    labels = fmnist.read_idx(os.path.join(manual_dir, f"{prefix}-labels-idx1-ubyte.gz"), ndim=1)
    for i, (image, g) in enumerate(zip(images, h.source_to_global[labels])):
      parts = [h.superclasses[h.superclass_of[g]].name] if superclass_folders else []
      path = os.path.join(image_dir, split, *parts, folder_name(h.subclass_names[g]),
                          f"{i:05d}.png")
      if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image, "L").save(path)
        written += 1
  return written
