"""Exports a trained run for deployment, with the base weights stored once per bundle.

`export(config, export_dir)` writes, atomically (temporary folder, then rename):
  export_dir/saved_model/   for servers (super_sub.saved_model_lib): base + sparse deltas,
                            hard two-stage routing in `serving_default`
  export_dir/tflite/        the edge bundle (super_sub.runtime.bundle): the int8 generalist,
                            which is also the base, and each specialist as a delta over it;
                            with --freeze_stages=K, the first K stages once as a shared trunk
                            (super_sub.trunk) and the generalist and specialists as tails
  export_dir/manifest.json  sizes against the paper's unit (one fp32 network) and checksums
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub import files
from super_sub import input_pipeline
from super_sub import models
from super_sub import saved_model_lib
from super_sub import trunk as trunk_lib
from super_sub import training
from super_sub.compat import keras
from super_sub.runtime import bundle as bundle_lib


def representative_images(config: training.TrainConfig, builder: tfds.core.DatasetBuilder,
                          count: int = 256) -> np.ndarray:
  """The first `count` training images as the models see them (float32 in [0, 1])."""
  spec = input_pipeline.InputSpec(role="flat", batch_size=min(count, 256),
                                  image_size=config.image_size, augment="none", cache=False)
  ds = input_pipeline.make_dataset(builder, "train", spec, training=False)
  images = np.concatenate([x for x, _ in tfds.as_numpy(ds.take(-(-count // spec.batch_size)))])
  return images[:count]


def load_representative(path: str) -> np.ndarray:
  """Images from an .npy/.npz file (key "images"), float in [0, 1] or uint8 (divided by 255)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      images = data["images"] if isinstance(data, np.lib.npyio.NpzFile) else np.asarray(data)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"--representative_dataset {path}: expected an .npy array or an .npz "
                     f"with an 'images' array of shape [N, H, W, C] ({e})") from None
  images = np.asarray(images)
  return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(
      np.float32)


def to_tflite(model: keras.Model, representative: np.ndarray | None) -> bytes:
  """Converts to TFLite with int8 weights and, where possible, int8 activations.

  A quantization-aware model carries its own ranges; a float model needs representative
  images for full-integer conversion.

  Raises:
    ValueError: a float model without representative images, or images of the wrong shape.
  """
  shape = tuple(model.input_shape[1:])
  is_qat = any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
  if representative is None and not is_qat:
    raise ValueError(f"model {model.name!r} is not quantization-aware: full-integer conversion "
                     "needs representative images (--representative_dataset)")
  if representative is not None and tuple(representative.shape[1:]) != shape:
    raise ValueError(f"representative images have shape {tuple(representative.shape[1:])}, "
                     f"model {model.name!r} takes {shape}")
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if representative is not None:
    def batches():
      for image in representative:
        yield [image[None].astype(np.float32)]
    converter.representative_dataset = batches
  return converter.convert()


def export(config: training.TrainConfig, export_dir: str,
           representative: np.ndarray | None = None,
           log: Callable[[str], None] = print) -> dict:
  """Writes export_dir/tflite and export_dir/manifest.json for a trained run.

  Args:
    config: the run (as saved in model_dir/config.json).
    export_dir: the output folder; replaced as a whole only once everything is written.
    representative: images for full-integer calibration; default 256 training images.
  Returns:
    The top-level manifest.
  Raises:
    FileNotFoundError: a stage the bundle needs has not finished training.
  """
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  h = builder.hierarchy
  keys = {k: f"specialist_{k}" for k in models.specialist_superclasses(h)}
  generalist = training.load_model(config, builder, training.generalist_key(config))
  specialists = {k: training.load_model(config, builder, key) for k, key in keys.items()}
  if representative is None:
    representative = representative_images(config, builder)

  shared = config.freeze_stages
  log(f"converting the generalist and {len(specialists)} specialists to int8 TFLite"
      + (f", the first {shared} stages as a shared trunk" if shared else ""))
  trunk_tflite = None
  if shared:
    for m in specialists.values():
      trunk_lib.check_shared(generalist, m, shared)
    trunk, generalist_tail = trunk_lib.split(generalist, shared)
    trunk_tflite = to_tflite(trunk, representative)
    features = trunk.predict(representative, batch_size=64, verbose=0)
    generalist_tflite = to_tflite(generalist_tail, features)
    specialist_tflite = {k: to_tflite(trunk_lib.split(m, shared)[1], features)
                         for k, m in specialists.items()}
  else:
    generalist_tflite = to_tflite(generalist, representative)
    specialist_tflite = {k: to_tflite(m, representative) for k, m in specialists.items()}
  # N + 1 separate int8 networks; with a trunk, each would carry its own copy of it.
  naive_int8 = len(generalist_tflite) + sum(len(b) for b in specialist_tflite.values()) + (
      (len(specialists) + 1) * len(trunk_tflite) if trunk_tflite else 0)
  fp32_network = 4 * training.build_model(config, builder, "generalist").count_params()
  with files.atomic_dir(export_dir) as tmp:
    saved_model_lib.export_saved_model(os.path.join(tmp, "saved_model"), generalist,
                                       specialists, h)
    bundle_lib.write_tflite_bundle(
        os.path.join(tmp, "tflite"), h, generalist_tflite, specialist_tflite,
        {"shape": list(generalist.input_shape[1:]), "dtype": "float32", "range": [0.0, 1.0]},
        trunk=trunk_tflite)
    listing = _listing(tmp)
    tflite_bytes = sum(v["bytes"] for p, v in listing.items() if p.startswith("tflite/"))
    saved_model_bytes = sum(v["bytes"] for p, v in listing.items()
                            if p.startswith("saved_model/"))
    manifest = {
        "num_superclasses": h.num_superclasses, "num_specialists": len(specialists),
        "hierarchy": h.to_dict(),
        "bytes": {
            "single_fp32_network": fp32_network,
            "naive_fp32_bundle": 4 * (generalist.count_params() + sum(
                m.count_params() for m in specialists.values())),
            "saved_model": saved_model_bytes,
            "tflite_bundle": tflite_bytes,
            "tflite_naive_int8": naive_int8,
        },
        "storage_ratio": tflite_bytes / fp32_network,
        "files": listing,
    }
    files.write_json(os.path.join(tmp, "manifest.json"), manifest)
  log(f"wrote {export_dir}: TFLite bundle {tflite_bytes:,} bytes = "
      f"{manifest['storage_ratio']:.3f} x one fp32 network ({fp32_network:,} bytes); "
      f"{len(specialists) + 1} separate int8 files would take "
      f"{manifest['bytes']['tflite_naive_int8']:,}")
  return manifest


def storage_fit(manifest: dict) -> dict:
  """The TFLite bundle as a + b * N in units of one fp32 network (the paper's N + 1 unit).

  a: what every bundle holds once (generalist = base, trunk, hierarchy, labels, manifest);
  b: the mean cost of one specialist (skeleton + delta), with the cheapest and dearest.
  Exact for this bundle: a + b * N == storage_ratio.
  """
  unit = manifest["bytes"]["single_fp32_network"]
  per_specialist: dict[str, dict[str, int]] = {}
  shared = 0
  for path, entry in manifest["files"].items():
    if not path.startswith("tflite/"):
      continue
    if path.startswith("tflite/specialists/"):
      name, kind = os.path.basename(path).split(".", 1)
      per_specialist.setdefault(name, {})[kind.split(".")[0]] = entry["bytes"]
    else:
      shared += entry["bytes"]
  costs = [sum(v.values()) / unit for v in per_specialist.values()] or [0.0]
  a, b = shared / unit, float(np.mean(costs))
  return {"single_fp32_network_bytes": unit,
          "tflite_bundle_bytes": manifest["bytes"]["tflite_bundle"],
          "tflite_naive_int8_bytes": manifest["bytes"]["tflite_naive_int8"],
          "storage_ratio": manifest["storage_ratio"], "shared_bytes": shared,
          "specialists": dict(sorted(per_specialist.items())),
          "a": a, "b": b, "b_min": min(costs), "b_max": max(costs),
          "ratio_at_n10": a + 10 * b}


def tflite_parity(config: training.TrainConfig, export_dir: str, split: str | None = None,
                  log: Callable[[str], None] = print) -> dict[str, float | int]:
  """Top-1 of the TFLite bundle (hard routing) and its agreement with the Keras two-stage.

  Compares with `model_dir/predictions/two_stage_hard.npz` from super-sub-eval, example by
  example (matched by file name), so run the evaluation first.
  """
  from super_sub.runtime import predictor  # pylint: disable=import-outside-toplevel
  lite = predictor.TwoStageLite(os.path.join(export_dir, "tflite"))
  result = compare_with_keras(config, lambda x: lite.predict(x, mode="hard")["label"], split)
  result = {"num_examples": result["num_examples"], "tflite_top1": result["top1"],
            "keras_top1": result["keras_top1"],
            "agreement_with_keras": result["agreement_with_keras"]}
  log(f"TFLite bundle: top-1 {result['tflite_top1']:.2%} (Keras two-stage "
      f"{result['keras_top1']:.2%}); same prediction as Keras for "
      f"{result['agreement_with_keras']:.2%} of {result['num_examples']} images")
  return result


def compare_with_keras(config: training.TrainConfig,
                       predict: Callable[[np.ndarray], np.ndarray],
                       split: str | None = None) -> dict[str, float | int]:
  """Top-1 of `predict` (float images [N, H, W, C] in [0, 1] -> global subclass indices) on
  the evaluation split, and how often it predicts what the Keras two-stage model predicted
  (`model_dir/predictions/two_stage_hard.npz` from super-sub-eval, matched by file name).

  Raises:
    FileNotFoundError: the run has not been evaluated.
  """
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  split = split or training.evaluation_split(builder)
  path = os.path.join(config.model_dir, "predictions", "two_stage_hard.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: run super-sub-eval --model_dir="
                            f"{config.model_dir} first")
  with np.load(path, allow_pickle=False) as keras_run:
    keras_pred = dict(zip(keras_run["file_names"].tolist(), keras_run["predictions"].tolist()))
    keras_top1 = float(np.mean(keras_run["predictions"] == keras_run["labels"]))
  spec = input_pipeline.InputSpec(role="flat", batch_size=256, image_size=config.image_size,
                                  augment="none", cache=False)
  ds = input_pipeline.make_dataset(builder, split, spec, training=False, with_metadata=True)
  correct = agree = total = 0
  for images, labels, meta in tfds.as_numpy(ds):
    predicted = np.asarray(predict(images))
    names = [n.decode("utf-8") for n in meta["file_name"]]
    correct += int(np.sum(predicted == labels))
    agree += int(sum(int(p) == keras_pred[n] for p, n in zip(predicted, names)))
    total += len(labels)
  return {"num_examples": total, "top1": correct / total, "keras_top1": keras_top1,
          "agreement_with_keras": agree / total}


def _listing(folder: str) -> dict[str, dict[str, int | str]]:
  out = {}
  for root, _, names in os.walk(folder):
    for name in sorted(names):
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        data = f.read()
      out[os.path.relpath(path, folder).replace(os.sep, "/")] = {
          "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  return dict(sorted(out.items()))
