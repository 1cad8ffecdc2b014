"""TFLite conversion: int8 models, calibrated on representative images."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub._internal.compat import keras
from super_sub.data import images as images_lib
from super_sub.data import pipeline
from super_sub.training import run as run_lib


def representative_images(run: run_lib.Run, count: int = 256) -> np.ndarray:
  """The first `count` training images as the models see them (float32 in [0, 1])."""
  spec = run.evaluation_input(min(count, 256))
  ds = pipeline.make_dataset(run.builder, "train", spec, training=False)
  images = np.concatenate([x for x, _ in tfds.as_numpy(ds.take(-(-count // spec.batch_size)))])
  return images[:count]


def load_representative(path: str, shape: tuple[int, int, int] | None = None) -> np.ndarray:
  """Images from an .npy/.npz file (key "images"), uint8 or float in [0, 1], as the models take
  them (super_sub.data.images); `shape` (H, W, C), when given, is checked."""
  try:
    with np.load(path, allow_pickle=False) as data:
      images = data["images"] if isinstance(data, np.lib.npyio.NpzFile) else np.asarray(data)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"--representative_dataset {path}: expected an .npy array or an .npz "
                     f"with an 'images' array of shape [N, H, W, C] ({e})") from None
  try:
    return images_lib.to_model_input(images, shape or (None, None, None))
  except (TypeError, ValueError) as e:
    raise ValueError(f"--representative_dataset {path}: {e}") from None


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
