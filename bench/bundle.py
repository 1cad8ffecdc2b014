r"""Parity, storage, memory and latency of an exported Super-Sub bundle.

  .venv/bin/super-sub-demo --model_dir=runs/demo          # or train + eval + export a run
  .venv/bin/python bench/bundle.py --model_dir=runs/demo --out=bench/results/bundle_demo

Needs a run that super-sub-eval has evaluated (model_dir/predictions) and super-sub-export
has exported (default model_dir/export). Measures, on the evaluation split:

  parity   top-1 of the Keras two-stage (from super-sub-eval), the SavedModel bundle and the
           TFLite bundle, and how often each bundle predicts what Keras predicts; the flat
           network in Keras and as a post-training int8 TFLite file (the edge baseline);
  storage  the TFLite bundle's bytes as a + b * N specialists, in units of one fp32 network
           (super_sub.bundles.storage.storage_fit), per file kind;
  runtime  peak resident memory and latency per image (batch 1 and 32) of the two-stage
           TFLite runtime (default cache of 1 specialist, and every specialist cached)
           against the flat int8 network, each in a fresh process that imports only numpy,
           LiteRT and super_sub.runtime. Images arrive in a shuffled order, so a cache of 1
           rebuilds a specialist whenever the routed superclass changes.

Writes <out>.json and <out>.md.
"""

import json
import os
import platform
import sys
import tempfile
import time

from _report import in_worker
from _report import memory_kib
from _report import serve_worker
from absl import app
from absl import flags
import numpy as np

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A trained, evaluated, exported run.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Its export (default model_dir/export).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's).")
_OUT = flags.DEFINE_string("out", "bench/results/bundle", "Output path without suffix.")
_IMAGES = flags.DEFINE_integer("latency_images", 320, "Images per latency measurement.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "LiteRT threads per interpreter.")
# Internal: the runtime measurement of one configuration, in a fresh process.
_WORKER = flags.DEFINE_string("worker", None, "(internal) JSON spec of one runtime to measure "
                              "(_report.in_worker).")


def worker(spec: dict) -> dict:
  """One runtime's memory and latency (spec: kind flat / two_stage / two_stage_cache_all,
  model .tflite or bundle dir, images .npy, num_threads); runs in its own process (no
  TensorFlow imported)."""
  from super_sub.runtime import predictor  # pylint: disable=import-outside-toplevel
  kind, model, images_path, num_threads = (spec["kind"], spec["model"], spec["images"],
                                           spec["num_threads"])
  images = np.load(images_path, allow_pickle=False)
  rss_before = memory_kib("VmRSS")
  if kind == "flat":
    with open(model, "rb") as f:
      run = predictor.LiteModel(f.read(), num_threads, "flat")
    rebuilds = lambda: 0  # noqa: E731
  else:
    lite = predictor.TwoStageLite(model, num_threads=num_threads,
                                  cache_size=1 if kind == "two_stage" else 1 << 20)
    run = lambda x: lite.predict(x, mode="hard")  # noqa: E731
    rebuilds = lambda: lite.num_rebuilds  # noqa: E731
  run(images[:1])  # warm-up: allocation and the first specialist
  result = {"kind": kind, "num_images": len(images)}
  for batch in (1, 32):
    start_rebuilds = rebuilds()
    start = time.perf_counter()
    for i in range(0, len(images), batch):
      run(images[i:i + batch])
    seconds = time.perf_counter() - start
    result[f"batch_{batch}"] = {"ms_per_image": 1000 * seconds / len(images),
                                "specialist_rebuilds": rebuilds() - start_rebuilds}
  result["rss_after_imports_mb"] = rss_before / 1024
  result["peak_rss_mb"] = memory_kib("VmHWM") / 1024
  result["model_rss_mb"] = result["peak_rss_mb"] - result["rss_after_imports_mb"]
  return result


def main(argv):
  del argv
  if serve_worker(_WORKER.value, worker):
    return
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required")
  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds
  from _common import write_results
  from super_sub import parity as parity_lib
  from super_sub import runs
  from super_sub.bundles import storage
  from super_sub.bundles import tflite
  from super_sub.data import pipeline
  from super_sub.runtime import predictor
  from super_sub.training import run as run_lib
  # pylint: enable=import-outside-toplevel

  run = run_lib.Run.open(_MODEL_DIR.value, _DATA_DIR.value)
  config = run.config
  export_dir = _EXPORT_DIR.value or runs.export_dir(config.model_dir)
  with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  evaluation = runs.read_eval(config.model_dir)
  split = run.evaluation_split
  result = {"command": " ".join(["python"] + sys.argv), "machine": platform.machine(),
            "cpus": os.cpu_count(), "config": {k: getattr(config, k) for k in (
                "dataset", "backbone", "epochs", "specialist_epochs", "qat", "delta_l1",
                "delta_keep", "freeze_bn", "freeze_stages")}}

  print("parity: TFLite bundle")
  parity = parity_lib.tflite_parity(run, export_dir, split)
  print("parity: SavedModel bundle")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  serve = tf.saved_model.load(os.path.join(export_dir, "saved_model")).signatures[
      "serving_default"]
  saved = parity_lib.compare_with_keras(
      run, lambda x: serve(images=tf.constant(x))["label"].numpy(), split)
  parity["saved_model_top1"] = saved["top1"]
  parity["saved_model_agreement_with_keras"] = saved["agreement_with_keras"]

  print("parity: flat network as int8 TFLite (the edge baseline)")
  flat = run.load_model(run_lib.FLAT)
  flat_tflite = tflite.to_tflite(flat, tflite.representative_images(run))
  spec = run.evaluation_input(256)
  ds = pipeline.make_dataset(run.builder, split, spec, training=False)
  images, labels = map(np.concatenate, zip(*tfds.as_numpy(ds)))
  flat_lite = predictor.LiteModel(flat_tflite, _THREADS.value, "flat")
  parity["flat_keras_top1"] = evaluation["flat"]["top1"]
  parity["flat_int8_top1"] = float(np.mean(np.argmax(flat_lite(images), -1) == labels))
  parity["two_stage_keras_top1"] = evaluation["two_stage"]["hard"]["top1"]
  parity["oracle_specialists_keras_top1"] = evaluation["oracle_specialists"]["top1"]
  result["parity"] = parity
  result["storage"] = storage.storage_fit(manifest)

  order = np.random.default_rng(0).permutation(len(images))[:_IMAGES.value]
  with tempfile.TemporaryDirectory() as tmp:
    flat_path = os.path.join(tmp, "flat_int8.tflite")
    with open(flat_path, "wb") as f:
      f.write(flat_tflite)
    images_path = os.path.join(tmp, "images.npy")
    np.save(images_path, images[order])
    result["runtime"] = {}
    for kind, model in (("flat", flat_path), ("two_stage", os.path.join(export_dir, "tflite")),
                        ("two_stage_cache_all", os.path.join(export_dir, "tflite"))):
      print(f"runtime: {kind}")
      result["runtime"][kind] = in_worker(__file__, {
          "kind": kind, "model": model, "images": images_path, "num_threads": _THREADS.value})
  result["runtime"]["flat_int8_bytes"] = len(flat_tflite)
  flat_rt = result["runtime"]["flat"]
  for kind in ("two_stage", "two_stage_cache_all"):
    rt = result["runtime"][kind]
    rt["vs_flat"] = {
        "peak_rss": rt["peak_rss_mb"] / flat_rt["peak_rss_mb"],
        "model_rss": rt["model_rss_mb"] / max(flat_rt["model_rss_mb"], 1e-9),
        "latency_batch_1": rt["batch_1"]["ms_per_image"] / flat_rt["batch_1"]["ms_per_image"],
        "latency_batch_32": (rt["batch_32"]["ms_per_image"]
                             / flat_rt["batch_32"]["ms_per_image"])}

  write_results(_OUT.value, result, to_markdown(result))


def to_markdown(r: dict) -> str:
  """The tables BENCHMARKS.md quotes."""
  # Imported here: the measuring processes run this file and import nothing they need not.
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  p, s, rt = r["parity"], r["storage"], r["runtime"]
  lines = [f"`{r['command']}`", "", f"config: {json.dumps(r['config'])}", ""]
  lines += markdown_table(["model", "top-1", "same prediction as Keras two-stage"], [
      ["flat, Keras fp32", f"{p['flat_keras_top1']:.2%}", ""],
      ["flat, int8 TFLite", f"{p['flat_int8_top1']:.2%}", ""],
      ["two-stage, Keras", f"{p['two_stage_keras_top1']:.2%}", ""],
      ["two-stage, SavedModel bundle", f"{p['saved_model_top1']:.2%}",
       f"{p['saved_model_agreement_with_keras']:.2%}"],
      ["two-stage, TFLite bundle (int8)", f"{p['tflite_top1']:.2%}",
       f"{p['agreement_with_keras']:.2%}"]])
  lines += ["", f"Storage (one fp32 network = {s['single_fp32_network_bytes']:,} bytes): TFLite "
            f"bundle {s['tflite_bundle_bytes']:,} bytes = {s['storage_ratio']:.3f} = a + b N "
            f"with a = {s['a']:.3f}, b = {s['b']:.4f} ({s['b_min']:.4f}-{s['b_max']:.4f}; "
            f"N = 10: {s['ratio_at_n10']:.2f}); separate int8 files "
            f"{s['tflite_naive_int8_bytes']:,} bytes.", ""]
  lines += markdown_table(["specialist", "skeleton bytes", "delta bytes"], [
      [name, f"{v.get('skeleton', 0):,}", f"{v.get('delta', 0):,}"]
      for name, v in sorted(s["specialists"].items())])
  lines += [""] + markdown_table(
      ["runtime", "peak RSS MB (model part)", "ms/image batch 1", "ms/image batch 32",
       "specialist rebuilds (batch 1)"],
      [[kind, f"{x['peak_rss_mb']:.1f} ({x['model_rss_mb']:.1f})",
        f"{x['batch_1']['ms_per_image']:.3f}", f"{x['batch_32']['ms_per_image']:.3f}",
        x["batch_1"]["specialist_rebuilds"]]
       for kind, x in ((k, rt[k]) for k in ("flat", "two_stage", "two_stage_cache_all"))])
  for kind in ("two_stage", "two_stage_cache_all"):
    v = rt[kind]["vs_flat"]
    lines.append(f"\n{kind} vs flat: peak RSS {v['peak_rss']:.2f}x, latency batch 1 "
                 f"{v['latency_batch_1']:.2f}x, batch 32 {v['latency_batch_32']:.2f}x")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
