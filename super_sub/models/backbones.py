"""Backbones and the three classifier roles (flat, generalist, specialist) as flat tf_keras graphs.

Every model takes float32 images with values in [0, 1] and outputs logits. Graphs are flat
functional models (no nested Models, Lambda, Rescaling or subclassed layers) so that tfmot's
`quantize_model` accepts them. Layer names carry their stage -- `stem_*` is stage 0, then
`stage1_*`, `stage2_*`, ... -- so "freeze the first K stages" means the same for every backbone;
the input layer is `image`, the global average pooling `pool` and the logits layer `head`.
All names are explicit, hence identical however many models a process builds.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Sequence

import numpy as np

from super_sub._internal.compat import keras
from super_sub.models import BACKBONES  # the names, defined where no TensorFlow is needed

layers = keras.layers

INPUT_NAME = "image"
POOL_NAME = "pool"
HEAD_NAME = "head"
# A fixed 1x1 convolution mapping [0, 1] RGB to what the Keras ImageNet weights expect. It exists
# only in the backbones that have such weights, always (whatever `weights` is), so checkpoints
# are interchangeable, and is never trainable.
INPUT_NORM_NAME = "stem_input_norm"
PRETRAINED = {"resnet50": "ResNet50", "mobilenet_v2": "MobileNetV2"}  # keras.applications names
_MIN_SIZE = {"small_resnet": 8, "small_resnet_wide": 8, "resnet18": 32, "resnet50": 32, "mobilenet_v2": 32}
_STAGE_RE = re.compile(r"^(?:quant_)?(?:stem|stage(\d+))_")  # tfmot wraps layers as quant_<name>


# --- stages --------------------------------------------------------------------------------------
def stage_of(layer_name: str) -> int | None:
  """Stage of a backbone layer: 0 for `stem_*`, N for `stageN_*` (also under tfmot's `quant_`).

  Returns:
    The stage, or None for layers outside the stages (`image`, `pool`, `head`).
  """
  match = _STAGE_RE.match(layer_name)
  if not match:
    return None
  return int(match.group(1)) if match.group(1) else 0


def num_stages(model: keras.Model) -> int:
  """Number of stages after the stem (3 for small_resnet, 4 for the ImageNet backbones)."""
  return max(s for s in (stage_of(l.name) for l in model.layers) if s is not None)


def freeze_stages(model: keras.Model, k: int) -> None:
  """Freezes the stem and stages 1..k-1, makes the other stages trainable; in place.

  k=0 freezes nothing, k=1 the stem, k=2 the stem and stage 1, ..., k=num_stages+1 the whole
  backbone. The head, `pool` and the fixed input normalisation are never changed. Frozen
  BatchNormalization layers run in inference mode even in training (Keras 2 semantics of
  `trainable=False`). Recompile a compiled model afterwards. On a tfmot-quantized model note
  that `QuantizeWrapperV2.trainable_weights` ignores `.trainable` (tensorflow/model-optimization#1067).

  Raises:
    ValueError: if k is not in [0, num_stages + 1].
  """
  top = num_stages(model)
  if not (isinstance(k, (int, np.integer)) and 0 <= k <= top + 1):
    raise ValueError(f"freeze_stages must be an integer in [0, {top + 1}] for model "
                     f"{model.name!r} (stem + {top} stages); got {k!r}")
  for layer in model.layers:
    stage = stage_of(layer.name)
    if stage is not None and not layer.name.endswith(INPUT_NORM_NAME):
      layer.trainable = stage >= k


# --- backbones -----------------------------------------------------------------------------------
def build_backbone(name: str, image_shape: Sequence[int], weights: str | None = None
                   ) -> keras.Model:
  """Builds a backbone: images in [0, 1] -> globally average-pooled features.

  Args:
    name: one of BACKBONES. "small_resnet" (~0.3M parameters, for 28-64 px CPU work: stem conv +
      one basic block per stage at 32/64/128 channels), "small_resnet_wide" (the same at
      56/112/224 channels, ~0.94M parameters), "resnet18" and "resnet50" (ImageNet
      ResNets; resnet50 mirrors keras.applications.ResNet50 layer for layer), "mobilenet_v2"
      (the keras.applications graph itself, renamed by stage).
    image_shape: (height, width, channels).
    weights: None (random init), "imagenet" (downloads through keras.applications, resnet50 and
      mobilenet_v2 only) or the path of an .h5 file of the matching keras.applications model
      with include_top=False (the offline route to the same loading code).

  Returns:
    A flat functional model named "<name>_backbone" whose output is the `pool` layer.

  Raises:
    ValueError: unknown backbone, unusable weights value, or an image shape the backbone
      cannot take (too small, or not 3 channels for the ImageNet backbones).
  """
  image_shape = _check_shape(name, image_shape)
  _check_weights(name, weights)
  image = keras.Input(image_shape, name=INPUT_NAME)
  features = _BUILDERS[name](image)
  pooled = layers.GlobalAveragePooling2D(name=POOL_NAME)(features)
  model = keras.Model(image, pooled, name=f"{name}_backbone")
  if name == "mobilenet_v2":
    # Rebuild from config so that variables are named after the renamed layers, as in any
    # model built later from this one (e.g. by clone_model).
    model = keras.Model.from_config(model.get_config())
  if weights is not None:
    _load_pretrained(model, name, image_shape, weights)
  model.super_sub_backbone = name
  return model


def _check_shape(name: str, image_shape: Sequence[int]) -> tuple[int, int, int]:
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
  shape = tuple(image_shape)
  if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
    raise ValueError(f"image_shape must be (height, width, channels) of positive integers; "
                     f"got {image_shape!r}")
  if min(shape[:2]) < _MIN_SIZE[name]:
    raise ValueError(f"backbone {name!r} needs images of at least {_MIN_SIZE[name]}x"
                     f"{_MIN_SIZE[name]} pixels; got {shape[0]}x{shape[1]}")
  if name in PRETRAINED and shape[2] != 3:
    raise ValueError(f"backbone {name!r} takes RGB images (3 channels, as its ImageNet weights "
                     f"do); got {shape[2]} channels. Tile grayscale images to 3 channels.")
  return tuple(int(d) for d in shape)


def _check_weights(name: str, weights: str | None) -> None:
  if weights is None:
    return
  if name not in PRETRAINED:
    raise ValueError(f"backbone {name!r} has no pretrained weights (Keras offers them for "
                     f"{', '.join(PRETRAINED)} only); use weights=None")
  if not isinstance(weights, (str, os.PathLike)) or (
      weights != "imagenet" and not os.path.isfile(weights)):
    raise ValueError(f"weights must be None, 'imagenet' or the path of an existing .h5 file of "
                     f"keras.applications.{PRETRAINED[name]}(include_top=False); got {weights!r}")


def _input_norm(x, scale: np.ndarray, bias: np.ndarray, order: Sequence[int] = (0, 1, 2)):
  """out[c] = scale[c] * x[order[c]] + bias[c], as a fixed 1x1 Conv2D (quantizable, exact)."""
  kernel = np.zeros((1, 1, 3, 3), np.float32)
  kernel[0, 0, list(order), [0, 1, 2]] = scale
  return layers.Conv2D(
      3, 1, name=INPUT_NORM_NAME, trainable=False,
      kernel_initializer=keras.initializers.Constant(kernel.tolist()),
      bias_initializer=keras.initializers.Constant(np.asarray(bias, np.float32).tolist()))(x)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True,
             padding: str = "same", use_bias: bool = False, epsilon: float = 1e-3):
  x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias,
                    kernel_initializer="he_normal", name=f"{name}_conv")(x)
  x = layers.BatchNormalization(epsilon=epsilon, name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str):
  """Two 3x3 convolutions + identity (or 1x1 projection when the shape changes)."""
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, filters, 1, stride, f"{name}_0", relu=False)
  y = _conv_bn(x, filters, 3, stride, f"{name}_1")
  y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
  y = layers.Add(name=f"{name}_add")([shortcut, y])
  return layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(x, filters: int, stride: int, name: str):
  """keras.applications' ResNet50 `block1` (stride in the first 1x1 conv, biases, eps 1.001e-5)."""
  kw = dict(use_bias=True, epsilon=1.001e-5)
  shortcut = x
  if stride != 1 or x.shape[-1] != 4 * filters:
    shortcut = _conv_bn(x, 4 * filters, 1, stride, f"{name}_0", relu=False, **kw)
  y = _conv_bn(x, filters, 1, stride, f"{name}_1", **kw)
  y = _conv_bn(y, filters, 3, 1, f"{name}_2", **kw)
  y = _conv_bn(y, 4 * filters, 1, 1, f"{name}_3", relu=False, **kw)
  y = layers.Add(name=f"{name}_add")([shortcut, y])
  return layers.ReLU(name=f"{name}_out")(y)


def _small_resnet(x, widths=(32, 64, 128)):
  x = _conv_bn(x, widths[0], 3, 1, "stem")
  for stage, (filters, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
    x = _basic_block(x, filters, stride, f"stage{stage}_block1")
  return x


def _imagenet_stem(x, conv: str, pool: str, **kw):
  """7x7/2 conv + 3x3/2 max pool, zero-padded explicitly as keras.applications' ResNets do."""
  x = layers.ZeroPadding2D(3, name=f"{conv}_pad")(x)
  x = _conv_bn(x, 64, 7, 2, conv, padding="valid", **kw)
  x = layers.ZeroPadding2D(1, name=f"{pool}_pad")(x)
  return layers.MaxPooling2D(3, strides=2, name=f"{pool}_pool")(x)


def _resnet18(x):
  x = _imagenet_stem(x, "stem", "stem_pool")
  for stage, (filters, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
    for block in (1, 2):
      x = _basic_block(x, filters, stride if block == 1 else 1, f"stage{stage}_block{block}")
  return x


def _resnet50(x):
  # caffe preprocessing: BGR in 0..255 minus the ImageNet mean (keras resnet50.preprocess_input).
  x = _input_norm(x, np.full(3, 255.0), -np.array([103.939, 116.779, 123.68]), order=(2, 1, 0))
  x = _imagenet_stem(x, "stem_conv1", "stem_pool1", use_bias=True, epsilon=1.001e-5)
  for stage, (filters, blocks, stride) in enumerate(
      [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
    for block in range(1, blocks + 1):
      x = _bottleneck_block(x, filters, stride if block == 1 else 1, f"stage{stage}_block{block}")
  return x


def _resnet50_name(keras_name: str) -> str:
  """keras.applications.ResNet50 layer name -> ours: conv1_* -> stem_conv1_*, convN_* -> stageN-1_*."""
  match = re.match(r"conv([2-5])_(block.*)$", keras_name)
  return f"stage{int(match.group(1)) - 1}_{match.group(2)}" if match else f"stem_{keras_name}"


# MobileNetV2 stages follow the output stride, as ResNet's do: stem /2 (Conv1 + block 0),
# stage1 /4, stage2 /8, stage3 /16, stage4 /32 (with the final 1x1 Conv_1).
_MOBILENET_BLOCK_STAGE = {**{b: 1 for b in (1, 2)}, **{b: 2 for b in (3, 4, 5)},
                          **{b: 3 for b in range(6, 13)}, **{b: 4 for b in range(13, 17)}}


def _mobilenet_name(keras_name: str) -> str:
  """keras.applications.MobileNetV2 layer name -> ours (the same, prefixed with its stage)."""
  if keras_name in ("Conv1", "bn_Conv1", "Conv1_relu") or keras_name.startswith("expanded_conv_"):
    return f"stem_{keras_name}"
  match = re.match(r"block_(\d+)_", keras_name)
  if match:
    return f"stage{_MOBILENET_BLOCK_STAGE[int(match.group(1))]}_{keras_name}"
  if keras_name in ("Conv_1", "Conv_1_bn", "out_relu"):
    return f"stage4_{keras_name}"
  raise ValueError(f"unexpected MobileNetV2 layer {keras_name!r}: keras.applications changed?")


def _mobilenet_v2(x):
  # keras mobilenet_v2.preprocess_input: [0, 255] -> [-1, 1]; ours starts from [0, 1].
  x = _input_norm(x, np.full(3, 2.0), np.full(3, -1.0))
  # The keras.applications graph itself, grown on our tensors (not nested): its layers become
  # ours, and only its output tensor is used.
  base = keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None)
  for layer in base.layers:
    if layer.name not in (INPUT_NAME, INPUT_NORM_NAME):
      layer._name = _mobilenet_name(layer.name)  # pylint: disable=protected-access
  return base.output


_BUILDERS = {"small_resnet": _small_resnet,
             # 1.75x the channels, ~3x the parameters: a flat network as big as a generalist
             # plus two specialists (the paper's "just make the network bigger" baseline).
             "small_resnet_wide": functools.partial(_small_resnet, widths=(56, 112, 224)),
             "resnet18": _resnet18, "resnet50": _resnet50,
             "mobilenet_v2": _mobilenet_v2}


def _load_pretrained(model: keras.Model, name: str, image_shape: tuple[int, int, int],
                     weights: str) -> None:
  """Copies the weights of keras.applications' model into ours, layer by (mapped) name."""
  app = getattr(keras.applications, PRETRAINED[name])
  reference = app(include_top=False, weights=os.fspath(weights), input_shape=image_shape)
  to_ours = _resnet50_name if name == "resnet50" else _mobilenet_name
  copied = set()
  for layer in reference.layers:
    if layer.weights:
      target = model.get_layer(to_ours(layer.name))
      target.set_weights(layer.get_weights())
      copied.add(target.name)
  missed = [l.name for l in model.layers
            if l.weights and l.name not in copied and l.name != INPUT_NORM_NAME]
  if missed:
    raise RuntimeError(f"pretrained {name}: no weights for layers {missed}")


