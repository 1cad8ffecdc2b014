"""The input pipeline on ImageNet-shaped data, on this machine.

  .venv/bin/python bench/imagenet_pipeline.py --work_dir=/tmp/imagenet_shaped \
      --out=bench/results/imagenet_pipeline

1. Makes an ImageNet-shaped ILSVRC2012 tree offline (the extracted layout): `--train_images`
   JPEGs of 500x375 and 375x500 pixels (quality 90, smooth random pictures plus grain, ~60-110
   kB like ImageNet's), spread evenly over the superclassed_imagenet hierarchy's 289 classes,
   plus `--validation_images` validation files numbered as ILSVRC2012 numbers them; then builds
   superclassed_imagenet/full from it with the real builder.
2. Measures, in one process, one after the other:
   - raw decode: `tf.io.decode_jpeg` of the stored JPEGs, bytes already in memory, parallel
     over all cores: what any pipeline that decodes whole images is limited by;
   - the training pipeline (flat, random_resized_crop at 224 px, cache off) over full epochs,
     and the same with whole-image decoding (framing "resize") for comparison;
   - a specialist's pipeline, seconds per delivered image against the flat one's, for the
     smallest superclass; and the old order (decode every image, then keep the superclass);
   - resident memory over a full epoch with the cache off, against the RSS after the first
     100 steps (and, for contrast, with the cache on).
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import threading
import time

from absl import app
from absl import flags
import numpy as np
import psutil
import tensorflow as tf
import tensorflow_datasets as tfds

from imagenet_shaped import make_tree
from super_sub.analysis.tables import markdown_table
from super_sub.data import pipeline
from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder as sib

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/imagenet_shaped", "Where the fake "
                                "ILSVRC2012 tree and the TFDS data go (reused if present).")
_OUT = flags.DEFINE_string("out", "bench/results/imagenet_pipeline", "Results path prefix.")
_TRAIN_IMAGES = flags.DEFINE_integer("train_images", 4000, "Training JPEGs to make.")
_VALIDATION_IMAGES = flags.DEFINE_integer("validation_images", 400, "Validation JPEGs.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size of the measured pipelines.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed epochs per pipeline (after an untimed one); "
                               "the median counts.")
_IMAGE_SIZE = 224


class _RssSampler:
  """Samples this process's resident memory every 50 ms in a thread."""

  def __init__(self):
    self._process, self.samples, self._stop = psutil.Process(), [], threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.samples.append(self._process.memory_info().rss)
      time.sleep(0.05)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def one_epoch(ds: tf.data.Dataset) -> tuple[float, int]:
  """(seconds, images) of one pass over `ds`."""
  count, start = 0, time.perf_counter()
  for batch in ds:
    count += int(tf.shape(batch[0])[0])
  return time.perf_counter() - start, count


def images_per_second(pipelines: dict[str, tf.data.Dataset], rounds: int) -> dict[str, float]:
  """Images/s of each pipeline: the median over `rounds` epochs, the pipelines taking turns
  epoch by epoch so that a slow spell of this shared machine hits them alike; one untimed
  epoch each first (tracing, page cache, autotuning)."""
  for ds in pipelines.values():
    one_epoch(ds)
  times = {name: [] for name in pipelines}
  for _ in range(rounds):
    for name, ds in pipelines.items():
      seconds, count = one_epoch(ds)
      times[name].append(count / seconds)
  return {name: float(np.median(rates)) for name, rates in times.items()}


def raw_decode(builder) -> tf.data.Dataset:
  """Whole-image JPEG decodes, all cores, encoded bytes already in memory."""
  encoded = [ex["image"] for ex in tfds.as_numpy(builder.as_dataset(
      split="train", decoders={"image": tfds.decode.SkipDecoding()}))]
  ds = tf.data.Dataset.from_tensor_slices(encoded).map(
      lambda b: (tf.shape(tf.io.decode_jpeg(b, channels=3)),),
      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(_BATCH.value).prefetch(tf.data.AUTOTUNE)


def decode_then_filter(builder, superclass: int) -> tf.data.Dataset:
  """The old order: every image decoded and resized, then the superclass kept."""
  ds = builder.as_dataset(split="train").map(
      lambda ex: (tf.image.resize(ex["image"], (_IMAGE_SIZE, _IMAGE_SIZE)), ex["superclass"]),
      num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.filter(lambda image, sup: tf.equal(sup, superclass))
  return ds.batch(_BATCH.value).prefetch(tf.data.AUTOTUNE)


def rss_over_epoch(builder, spec: pipeline.InputSpec) -> dict[str, float]:
  """RSS after 100 steps and the peak over the rest of one full epoch, in MiB."""
  ds = pipeline.make_dataset(builder, "train", spec, training=True)
  process = psutil.Process()
  before = process.memory_info().rss
  with _RssSampler() as sampler:
    steps = 0
    for _ in ds:
      steps += 1
      if steps == 100:
        at_100 = process.memory_info().rss
  assert steps > 100, f"an epoch of {steps} steps is too short to compare with step 100"
  peak = max(sampler.samples)
  return {"steps": steps, "rss_before_mib": before / 2**20,
          "rss_at_step_100_mib": at_100 / 2**20, "peak_rss_mib": peak / 2**20,
          "ratio": peak / at_100}


def main(argv):
  del argv
  root = os.path.join(_WORK_DIR.value, "ILSVRC2012")
  start = time.perf_counter()
  make_tree(root, _TRAIN_IMAGES.value, _VALIDATION_IMAGES.value)
  made = time.perf_counter() - start
  # The bench's own TFDS folder, rebuilt every time so that the builder's rate is measured.
  data_dir = os.path.join(_WORK_DIR.value, "bench_tfds")
  shutil.rmtree(data_dir, ignore_errors=True)
  builder = sib.Builder(data_dir=data_dir, config="full")
  start = time.perf_counter()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  prepared = time.perf_counter() - start
  train = builder.info.splits["train"]
  counts = pipeline.superclass_counts(builder, "train")
  smallest = int(np.argmin([c if c else np.inf for c in counts]))
  rounds = _ROUNDS.value
  result = {
      "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                  "tensorflow": tf.__version__},
      "dataset": {"train_images": train.num_examples, "mean_jpeg_kb": train.num_bytes
                  / train.num_examples / 1000, "sizes": ["500x375", "375x500"],
                  "tree_written_s": made, "builder_prepare_s": prepared,
                  "builder_images_per_s": (train.num_examples + builder.info.splits[
                      "validation"].num_examples) / prepared,
                  "superclass_counts": list(counts)},
      "batch_size": _BATCH.value, "image_size": _IMAGE_SIZE, "rounds": rounds,
      "specialist_epochs_per_timed_pass": int(np.ceil(train.num_examples / counts[smallest])),
  }

  def spec(**kw):
    return pipeline.InputSpec(**{"role": "flat", "batch_size": _BATCH.value,
                                 "image_size": _IMAGE_SIZE, "augment": "random_resized_crop",
                                 "framing": "center_crop", "cache_budget": 0, **kw})

  def make(s, training=True):
    return pipeline.make_dataset(builder, "train", s, training)

  # A specialist's epoch here is a few dozen images, where a new iterator's fixed start-up
  # (~0.1 s) would dominate; repeated to the flat epoch's length, its time per image is the
  # steady state an ImageNet-sized superclass (the smallest: ~9,100 images) sees.
  repeats = int(np.ceil(train.num_examples / counts[smallest]))

  specialist_key = f"specialist_{builder.hierarchy.superclasses[smallest].name}"
  print("pipelines ...")
  ips = images_per_second({
      "raw_jpeg_decode": raw_decode(builder),
      "train_random_resized_crop": make(spec()),
      "train_whole_image_resize": make(spec(augment="none", framing="resize")),
      "evaluation_center_crop": make(spec(augment="none"), training=False),
      specialist_key: make(spec(role="specialist", superclass=smallest)).repeat(repeats),
      "specialist_encoded_cache": make(spec(role="specialist", superclass=smallest,
                                            cache_budget=pipeline.DEFAULT_CACHE_BUDGET)
                                       ).repeat(repeats),
      "specialist_old_decode_then_filter": decode_then_filter(builder, smallest),
  }, rounds)
  print(json.dumps(ips, indent=1))
  flat, raw = ips["train_random_resized_crop"], ips["raw_jpeg_decode"]
  result["images_per_s"] = ips
  result["goals"] = {
      "train_pipeline_vs_raw_decode": flat / raw,  # goal >= 0.9
      "specialist_seconds_per_image_vs_flat": flat / ips[specialist_key],  # goal <= 1.2
      "specialist_encoded_cache_seconds_per_image_vs_flat": flat / ips["specialist_encoded_cache"],
      "old_specialist_seconds_per_image_vs_flat": flat / ips["specialist_old_decode_then_filter"]}
  print("memory over an epoch ...")
  result["rss_cache_off"] = rss_over_epoch(builder, spec())
  result["rss_cache_on"] = rss_over_epoch(builder, spec(augment="none", framing="resize",
                                                        cache_budget=pipeline.DEFAULT_CACHE_BUDGET))
  result["goals"]["peak_rss_vs_step_100_cache_off"] = result["rss_cache_off"]["ratio"]
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  with open(_OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write(to_markdown(result, builder.hierarchy.superclasses[smallest].name))
  print(to_markdown(result, builder.hierarchy.superclasses[smallest].name))


def to_markdown(r: dict, smallest: str) -> str:
  ips, goals, d = r["images_per_s"], r["goals"], r["dataset"]
  off, on = r["rss_cache_off"], r["rss_cache_on"]
  lines = [
      f"ImageNet-shaped data: {d['train_images']} training JPEGs ({', '.join(d['sizes'])}, "
      f"{d['mean_jpeg_kb']:.0f} kB on average), {r['machine']['cpus']} CPUs, batch "
      f"{r['batch_size']}, {r['image_size']} px. The builder prepared "
      f"{d['builder_images_per_s']:.0f} images/s (train and validation, from the extracted "
      "tree).",
      "",
  ]
  lines += markdown_table(["pipeline", "images/s", ""], [
      ["raw JPEG decode (whole images, bytes in memory, all cores)",
       f"{ips['raw_jpeg_decode']:.0f}", "the limit of whole-image decoding"],
      ["training, random-resized crop (decodes only the box)",
       f"{ips['train_random_resized_crop']:.0f}",
       f"{goals['train_pipeline_vs_raw_decode']:.2f}x raw decode (goal >= 0.9)"],
      ["training, whole image resized", f"{ips['train_whole_image_resize']:.0f}", ""],
      ["evaluation, center crop", f"{ips['evaluation_center_crop']:.0f}", ""],
      [f"specialist '{smallest}' ({min(c for c in d['superclass_counts'] if c)} of "
       f"{d['train_images']} images), filter before decode",
       f"{ips['specialist_' + smallest]:.0f}",
       f"{goals['specialist_seconds_per_image_vs_flat']:.2f}x the flat pipeline's time per "
       "image (goal <= 1.2)"],
      ["the same, its still-encoded images cached in memory (they fit the default budget)",
       f"{ips['specialist_encoded_cache']:.0f}",
       f"{goals['specialist_encoded_cache_seconds_per_image_vs_flat']:.2f}x"],
      ["the same, old order (decode all, then filter)",
       f"{ips['specialist_old_decode_then_filter']:.0f}",
       f"{goals['old_specialist_seconds_per_image_vs_flat']:.2f}x"]])
  lines += [""] + markdown_table(
      ["memory over one epoch", "RSS before (MiB)", "after 100 steps", "peak", "peak / step 100"],
      [[f"cache off (streaming, {off['steps']} steps)", f"{off['rss_before_mib']:.0f}",
        f"{off['rss_at_step_100_mib']:.0f}", f"{off['peak_rss_mib']:.0f}",
        f"{off['ratio']:.2f} (goal <= 1.1)"],
       ["decoded images cached, for contrast", f"{on['rss_before_mib']:.0f}",
        f"{on['rss_at_step_100_mib']:.0f}", f"{on['peak_rss_mib']:.0f}", f"{on['ratio']:.2f}"]])
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
