"""The whole chain at 224 px on ImageNet-shaped data: a few training steps per stage, then
evaluation, export and on-device prediction, timed stage by stage.

  .venv/bin/python bench/imagenet_pipeline.py --work_dir=/work/inet   # makes the data first
  .venv/bin/python bench/imagenet_chain.py --work_dir=/work/inet --backbone=mobilenet_v2 \
      --out=bench/results/imagenet_chain_mobilenet_v2

Runs the `imagenet_<backbone>` recipe (super_sub.configs) on the superclassed_imagenet/full data
that bench/imagenet_pipeline.py built from its fake ILSVRC2012 tree, with `--steps` steps per
stage (flat, generalist, the 10 specialists), so the numbers are costs, not accuracies: time
per training step after the first (which traces and compiles), the first step, evaluation,
export (SavedModel + int8 TFLite bundle) and the TFLite runtime per image. Multiply the step
time by the recipe's steps to estimate a full run on this kind of machine.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from absl import app
from absl import flags
import numpy as np

from super_sub import configs
from super_sub import evaluation
from super_sub import runs
from super_sub import runtime
from super_sub import keras
from super_sub.analysis.tables import markdown_table
from super_sub.bundles import export as export_lib
from super_sub.bundles import tflite
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/imagenet_shaped", "bench/imagenet_pipeline.py's "
                                "work_dir (its bench_tfds/ data is read; the run goes beside).")
_BACKBONE = flags.DEFINE_enum("backbone", "mobilenet_v2", ["mobilenet_v2", "resnet50"],
                              "Which ImageNet recipe.")
_STEPS = flags.DEFINE_integer("steps", 4, "Training steps per stage.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size.")
_OUT = flags.DEFINE_string("out", None, "Results path prefix (.json and .md).")


class StepTimer(keras.callbacks.Callback):
  """Wall time of every training step, per stage (the model's name is the stage key)."""

  def __init__(self):
    super().__init__()
    self.steps: dict[str, list[float]] = {}

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.steps.setdefault(self.model.name, []).append(time.perf_counter() - self._start)


def main(argv):
  del argv
  data_dir = os.path.join(_WORK_DIR.value, "bench_tfds")
  model_dir = os.path.join(_WORK_DIR.value, f"chain_{_BACKBONE.value}")
  shutil.rmtree(model_dir, ignore_errors=True)  # the bench's own run folder
  config = config_lib.TrainConfig(**{
      **configs.get(f"imagenet_{_BACKBONE.value}"), "model_dir": model_dir,
      "data_dir": data_dir, "manual_dir": os.path.join(_WORK_DIR.value, "ILSVRC2012"),
      "epochs": 1, "specialist_epochs": 1, "steps_per_epoch": _STEPS.value,
      "batch_size": _BATCH.value, "warmup_epochs": 0.0})
  timer = StepTimer()
  start = time.perf_counter()
  resolved = fit.train(config, callbacks=[timer])
  train_s = time.perf_counter() - start
  run = run_lib.Run(resolved)
  start = time.perf_counter()
  evaluation.evaluate(run, log=lambda _: None)
  eval_s = time.perf_counter() - start
  start = time.perf_counter()
  manifest = export_lib.export(run, runs.export_dir(model_dir), log=lambda _: None)
  export_s = time.perf_counter() - start

  lite = runtime.TwoStageLite(os.path.join(runs.export_dir(model_dir), "tflite"), cache_size=1)
  images = tflite.representative_images(run, count=32)
  lite.predict(images[:1])
  start = time.perf_counter()
  for i in range(len(images)):
    lite.predict(images[i:i + 1])
  predict_ms = (time.perf_counter() - start) / len(images) * 1000

  stages = {name: {"first_step_s": times[0], "step_s": float(np.median(times[1:])),
                   "steps": len(times)} for name, times in timer.steps.items()}
  result = {
      "backbone": _BACKBONE.value, "image_size": resolved.image_size,
      "batch_size": _BATCH.value, "cpus": os.cpu_count(),
      "num_params": run.metrics(run_lib.FLAT)["num_params"],
      "stages": stages, "train_all_stages_s": train_s, "evaluate_s": eval_s,
      "evaluated_images": run.builder.info.splits[run.evaluation_split].num_examples,
      "export_s": export_s, "tflite_bundle_bytes": manifest["bytes"]["tflite_bundle"],
      "saved_model_bytes": manifest["bytes"].get("saved_model"),
      "tflite_two_stage_ms_per_image_batch1": predict_ms,
      "specialist_rebuilds": lite.num_rebuilds,
  }
  out = _OUT.value or f"bench/results/imagenet_chain_{_BACKBONE.value}"
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(to_markdown(result))
  print(to_markdown(result))


def to_markdown(r: dict) -> str:
  steps = r["stages"]
  specialists = [v["step_s"] for k, v in steps.items() if k.startswith("specialist")]
  lines = [
      f"{r['backbone']} ({r['num_params'] / 1e6:.1f}M parameters) at {r['image_size']} px, "
      f"batch {r['batch_size']}, {r['cpus']} CPUs, ImageNet-shaped data.",
      "",
  ]
  rows = [[name, f"{steps[name]['first_step_s']:.1f}", f"{steps[name]['step_s']:.2f}"]
          for name in ("flat", "generalist") if name in steps]
  if specialists:
    rows.append([f"specialists ({len(specialists)}), median",
                 f"{np.median([v['first_step_s'] for k, v in steps.items() if k.startswith('specialist')]):.1f}",
                 f"{np.median(specialists):.2f}"])
  lines += markdown_table(
      ["stage", "first step (s, traces and compiles)", "step (s, median of the rest)"], rows)
  lines += [
      "",
      f"All stages ({sum(v['steps'] for v in steps.values())} steps, with per-epoch validation "
      f"and saving): {r['train_all_stages_s']:.0f} s. Evaluation of "
      f"{r['evaluated_images']} images (flat, every router, oracle): {r['evaluate_s']:.0f} s. "
      f"Export (SavedModel + int8 TFLite bundle): {r['export_s']:.0f} s; TFLite bundle "
      f"{r['tflite_bundle_bytes'] / 1e6:.1f} MB, SavedModel "
      f"{(r['saved_model_bytes'] or 0) / 1e6:.1f} MB. TFLite two-stage runtime, batch 1, cache of "
      f"one: {r['tflite_two_stage_ms_per_image_batch1']:.0f} ms per image "
      f"({r['specialist_rebuilds']} specialist rebuilds).",
  ]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
