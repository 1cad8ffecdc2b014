"""TFLite conversion: int8 models, calibrated on representative images."""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub._internal.compat import keras
from super_sub.data import images as images_lib
from super_sub.data import pipeline
from super_sub.formats import flatbuffer
from super_sub.training import run as run_lib

# Ops whose kernels derive their arithmetic from their output's scale and zero point when they
# are prepared, so that any int8 output parameters are exact for them (not, e.g., pooling or
# reshaping, whose output must keep its input's parameters).
_ANY_OUTPUT_PARAMS = ("ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "QUANTIZE", "RELU",
                      "RELU6")


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


def to_tflite(model: keras.Model, representative: np.ndarray | None, int8_input: bool = False,
              int8_output: bool = False) -> bytes:
  """Converts to TFLite with int8 weights and, where possible, int8 activations.

  A quantization-aware model carries its own ranges; a float model needs representative
  images for full-integer conversion. The input and output are float32 (quantized and
  dequantized inside the model) unless `int8_input` / `int8_output`: a shared trunk's features
  pass between trunk and tails as int8 (`feeding`).

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
  if int8_input:
    converter.inference_input_type = tf.int8
  if int8_output:
    converter.inference_output_type = tf.int8
  with warnings.catch_warnings():
    # The converter warns of missing int8 input statistics whenever a quantized model keeps
    # float inputs, as super-sub's do unless `int8_input` (tensorflow/lite/python/convert.py
    # warns instead of raising "as it would break several models"): noise to a user.
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    return converter.convert()


def feeding(trunk: bytes, tail: bytes) -> bytes:
  """`trunk` with its int8 output quantized the way `tail` quantizes its int8 input, so the tail
  can take the trunk's features as they are.

  The features cross the boundary as int8, quantized once, with the tail's (calibrated)
  parameters. Passing float32 had made the trunk dequantize them and the tail quantize them
  again, and moved 4x the bytes: 26 MB of float32 per batch of 32 ResNet-50 features, held by
  the trunk, by Python and by each tail. Only the producing op's output parameters change, and
  _ANY_OUTPUT_PARAMS ops compute from those when they are prepared. An input's parameters could
  not change instead: a convolution's int32 bias is stored in units of input scale x weight
  scale.

  Raises:
    ValueError: either side's boundary is not int8 with one scale, the shapes differ, or the op
      producing the trunk's output needs the parameters it was converted with.
  """
  trunk_obj = flatbuffer.parse_model(trunk, "trunk")
  graph = trunk_obj.subgraphs[0]
  target = graph.tensors[graph.outputs[0]]
  _int8_one_scale(target, "trunk output")
  tail_graph = flatbuffer.parse_model(tail, "tail").subgraphs[0]
  source = tail_graph.tensors[tail_graph.inputs[0]]
  _int8_one_scale(source, "tail input")
  if list(target.shape[1:]) != list(source.shape[1:]):
    raise ValueError(f"the trunk outputs {list(target.shape)}, the tail takes "
                     f"{list(source.shape)}")
  names = {v: k for k, v in vars(flatbuffer.schema.BuiltinOperator).items() if k.isupper()}
  for op in graph.operators:
    if graph.outputs[0] in list(op.outputs):
      code = trunk_obj.operatorCodes[op.opcodeIndex]
      name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "custom")
      if name not in _ANY_OUTPUT_PARAMS:
        raise ValueError(f"the trunk's output comes from a {name} op, which needs its output's "
                         f"parameters as converted; only {_ANY_OUTPUT_PARAMS} can take the "
                         f"tail's")
  target.quantization.scale = np.array(source.quantization.scale, np.float32)
  target.quantization.zeroPoint = np.array(source.quantization.zeroPoint, np.int64)
  return flatbuffer.pack_model(trunk_obj, size_hint=len(trunk) + 1024)


def boundary_quantization(tail: bytes, what: str = "tail input") -> tuple[float, int]:
  """(scale, zero point) of a converted tail's int8 input.

  Raises:
    ValueError: the input is not int8 with one scale.
  """
  graph = flatbuffer.parse_model(tail, what).subgraphs[0]
  tensor = graph.tensors[graph.inputs[0]]
  _int8_one_scale(tensor, what)
  return float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])


def _int8_one_scale(tensor, what: str) -> None:
  q = tensor.quantization
  if (tensor.type != flatbuffer.schema.TensorType.INT8 or q is None or q.scale is None
      or len(q.scale) != 1):
    raise ValueError(f"the {what} must be int8 with one scale (to_tflite with int8_input / "
                     f"int8_output); got tensor type {tensor.type}, scales "
                     f"{None if q is None else q.scale}")
