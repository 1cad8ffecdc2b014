r"""Benchmark on real data: flat vs Super-Sub vs a widened flat network on Fashion-MNIST.

  apt-get install dataset-fashion-mnist
  .venv/bin/python bench/fashion_mnist.py --epochs=5 --seeds=0 \
      --work_dir=/tmp/bench_fmnist --out=bench/results/fashion_mnist

Every network trains the same number of epochs over its own data (flat and generalist
over all 60,000 images, each specialist over its superclass's images), with the same
small ResNet. The widened flat network (`small_resnet_wide`, ~0.94M parameters) has about
the parameters of the generalist plus the two specialists together (3 x 0.31M). Also
measures training throughput of the TFDS input pipeline against the same model fed from
in-memory arrays. Writes <out>.json and <out>.md.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub import evaluation
from super_sub._internal import files
from super_sub._internal.compat import keras
from super_sub.data import pipeline as input_pipeline
from super_sub.data import prepare as data
from super_sub.models import classifiers as models
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs of every network.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; one full set of runs each.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/bench_fmnist", "Model dirs go here.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "/usr/share/datasets/fashion-mnist",
                                  "The four Fashion-MNIST IDX files.")
_OUT = flags.DEFINE_string("out", "bench/results/fashion_mnist", "Output path without suffix.")
_THROUGHPUT_STEPS = flags.DEFINE_integer("throughput_steps", 300, "Steps timed per feed.")
_THROUGHPUT_ONLY = flags.DEFINE_boolean(
    "throughput_only", False, "Re-measure only the input-pipeline throughput and update the "
    "existing <out>.json / <out>.md (the trainings are not re-run).")

DATASET = "superclassed_fashion_mnist"


def _flat_eval(run, split):
  """Top-1 and error split of a flat-only run (its model_dir has no generalist)."""
  config, builder = run.config, run.builder
  model = run.load_model(run_lib.FLAT)
  spec = input_pipeline.InputSpec(role="flat", batch_size=512, image_size=config.image_size,
                                  augment="none")
  ds = input_pipeline.make_dataset(builder, split, spec, training=False)
  labels = np.concatenate([y for _, y in tfds.as_numpy(ds)])
  predictions = model.predict(ds, verbose=0).argmax(axis=1)
  errors = evaluation.error_counts(labels, predictions, builder.hierarchy)
  return {"top1": float(np.mean(labels == predictions)), "errors": errors,
          "num_params": int(model.count_params())}


def _stage_times(model_dir):
  times = {}
  for root, _, names in os.walk(model_dir):
    if "metrics.json" in names:
      with open(os.path.join(root, "metrics.json"), encoding="utf-8") as f:
        m = json.load(f)
      times[m["stage"]] = {"wall_time_s": m["wall_time_s_this_run"],
                           "num_params": m["num_params"], "epochs": m["epochs"]}
  return times


def _throughput(builder, seed, rounds=3):
  """Images/s of fit() fed by the TFDS pipeline vs by in-memory arrays (same model, batch).

  The feeds alternate for `rounds` rounds and each keeps its best: measured one after the
  other, whichever ran first in the process came out ~20% slower, whatever the feed.
  """
  keras.utils.set_random_seed(seed)
  spec = input_pipeline.InputSpec(role="flat", batch_size=64, image_size=28, augment="none")
  ds = input_pipeline.make_dataset(builder, "train", spec, training=True)
  images, labels = [], []
  for x, y in tfds.as_numpy(ds):  # also fills the pipeline's cache, so both feeds are warm
    images.append(x)
    labels.append(y)
  feeds = {"tfds_pipeline": ds,
           "in_memory": tf.data.Dataset.from_tensor_slices(
               (np.concatenate(images), np.concatenate(labels))).batch(64)}
  steps = _THROUGHPUT_STEPS.value
  result = {name: 0.0 for name in feeds}
  for _ in range(rounds):
    for name, feed in feeds.items():
      model = models.build_classifier("small_resnet", (28, 28, 1), 10, role="flat",
                                      name="flat")
      model.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      source = feed.repeat()
      model.fit(source, steps_per_epoch=20, epochs=1, verbose=0)  # trace + warm up
      start = time.perf_counter()
      model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0)
      result[name] = max(result[name], steps * 64 / (time.perf_counter() - start))
  result["pipeline_slowdown"] = 1 - result["tfds_pipeline"] / result["in_memory"]
  return result


def run_seed(seed):
  work = os.path.join(_WORK_DIR.value, f"seed{seed}")
  common = dict(dataset=DATASET, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                epochs=_EPOCHS.value, seed=seed)
  config = fit.train(config_lib.TrainConfig(model_dir=os.path.join(work, "supersub"),
                                            **common))
  result = evaluation.evaluate(run_lib.Run(config))
  wide = fit.train(config_lib.TrainConfig(
      model_dir=os.path.join(work, "wide"), stage="flat", backbone="small_resnet_wide",
      **common))
  return {
      "seed": seed, "eval": result,
      "wide_flat": _flat_eval(run_lib.Run(wide), result["split"]),
      "stages": _stage_times(config.model_dir),
      "wide_stage": _stage_times(wide.model_dir),
  }


def markdown(report):
  runs = report["runs"]
  def mean(get):
    vals = [get(r) for r in runs]
    return np.mean(vals), (np.std(vals) if len(vals) > 1 else None)

  def fmt(get, pct=True):
    m, s = mean(get)
    text = f"{100 * m:.2f}" if pct else f"{m:.0f}"
    return text + (f" ± {100 * s:.2f}" if s is not None and pct else "")

  def within(errors):
    return errors["within_superclass"] / max(1, errors["total"])

  e = lambda r: r["eval"]  # noqa: E731
  params = runs[0]["stages"]
  supersub_params = sum(v["num_params"] for k, v in params.items() if k != "flat")
  lines = [
      f"# Fashion-MNIST: flat vs Super-Sub ({len(runs)} seed(s), {report['epochs']} epochs "
      "per network, small_resnet)", "",
      f"Command: `{report['command']}`  ",
      *([f"Throughput re-measured with: `{report['throughput_command']}`  "]
        if "throughput_command" in report else []),
      f"Machine: {report['machine']}", "",
      "| model | params | top-1 (%) | errors within superclass (%) |", "|---|---|---|---|",
      f"| flat | {params['flat']['num_params']:,} | {fmt(lambda r: e(r)['flat']['top1'])} | "
      f"{fmt(lambda r: within(e(r)['flat']['errors']))} |",
      f"| flat, widened (small_resnet_wide) | {runs[0]['wide_flat']['num_params']:,} | "
      f"{fmt(lambda r: r['wide_flat']['top1'])} | "
      f"{fmt(lambda r: within(r['wide_flat']['errors']))} |",
      f"| Super-Sub, hard routing | {supersub_params:,} (generalist + specialists) | "
      f"{fmt(lambda r: e(r)['two_stage']['hard']['top1'])} | "
      f"{fmt(lambda r: within(e(r)['two_stage']['hard']['errors']))} |",
      f"| Super-Sub, soft routing (k=2) | same | "
      f"{fmt(lambda r: e(r)['two_stage']['soft']['top1'])} | "
      f"{fmt(lambda r: within(e(r)['two_stage']['soft']['errors']))} |",
      f"| oracle specialists (true superclass) | same | "
      f"{fmt(lambda r: e(r)['oracle_specialists']['top1'])} | |",
      "", f"Generalist superclass top-1: {fmt(lambda r: e(r)['generalist']['superclass_top1'])} %",
      "", "Per superclass, top-1 (%) on its test images:", "",
      "| superclass | flat | oracle specialist |", "|---|---|---|"]
  for name in runs[0]["eval"]["flat_per_superclass"]:
    lines.append(f"| {name} | {fmt(lambda r: e(r)['flat_per_superclass'][name])} | "
                 f"{fmt(lambda r: e(r)['oracle_specialists']['per_superclass'][name])} |")
  lines += ["", "Wall time per stage (s, seed " + str(runs[0]["seed"]) + "):", "",
            "| stage | seconds |", "|---|---|"]
  for stage, v in {**runs[0]["stages"], "wide_flat": runs[0]["wide_stage"]["flat"]}.items():
    lines.append(f"| {stage} | {v['wall_time_s']:.0f} |")
  t = report["throughput"]
  lines += ["", "Training throughput of small_resnet, batch 64 (images/s):", "",
            "| TFDS pipeline | in-memory arrays | pipeline slower by |", "|---|---|---|",
            f"| {t['tfds_pipeline']:.0f} | {t['in_memory']:.0f} | "
            f"{100 * t['pipeline_slowdown']:.1f} % |"]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  data.prepare(DATASET, _DATA_DIR.value, _MANUAL_DIR.value)
  builder = tfds.builder(DATASET, data_dir=_DATA_DIR.value)
  if _THROUGHPUT_ONLY.value:
    with open(_OUT.value + ".json", encoding="utf-8") as f:
      report = json.load(f)
    report["throughput"] = _throughput(builder, int(_SEEDS.value[0]))
    report["throughput_command"] = "python bench/fashion_mnist.py --throughput_only"
    _write(report)
    return
  start = time.perf_counter()
  runs = [run_seed(int(seed)) for seed in _SEEDS.value]
  report = {
      "command": (f"python bench/fashion_mnist.py --epochs={_EPOCHS.value} "
                  f"--seeds={','.join(_SEEDS.value)}"),
      "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
                 f"tensorflow {tf.__version__}",
      "epochs": _EPOCHS.value, "runs": runs,
      "throughput": _throughput(builder, int(_SEEDS.value[0])),
      "total_wall_time_s": round(time.perf_counter() - start, 1),
  }
  _write(report)


def _write(report):
  files.write_json(_OUT.value + ".json", report)
  text = markdown(report)
  with open(_OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
