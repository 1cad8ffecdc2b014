"""A router head: a small network on the shared trunk that routes in place of the generalist's tail.

With a shared trunk (`--freeze_stages=K`), two-stage inference runs the trunk once and then two
tails: the generalist's, to pick the superclass, and the routed specialist's. At 224 px the
generalist's tail is most of a network's work (ResNet-50 k4: 0.16-0.17x the whole network), so
two-stage costs well over one network even with every specialist in memory. A router head
reads the trunk's features like every tail does, but is one strided 3x3 convolution, BatchNorm,
ReLU, a global average and a linear layer: 0.026-0.028x ResNet-50 at width 256, and on
Fashion-MNIST it routes as well as the generalist's tail (bench/router_head.py).

The generalist stays the specialists' base: they start from it in training and are stored as
deltas over it. It only stops routing.

The router head model takes images, like every other model of a run: the generalist's first
K stages (copied, and kept bit for bit: `super_sub.training.router_head`) and then the head, so
`trunk.split(router, K)` cuts it into the same trunk as the generalist and a tail that takes
the trunk's features, and the bundles store only that tail.
"""

from __future__ import annotations

import numpy as np

from super_sub._internal.compat import keras
from super_sub.models import backbones
from super_sub.models import classifiers
from super_sub.models import trunk as trunk_lib

layers = keras.layers

# The head's layers; stage_of() gives None for each, so they lie outside every stage.
LAYER_NAMES = ("router_conv", "router_bn", "router_relu", "router_pool", backbones.HEAD_NAME)


def build_router_head(generalist: keras.Model, frozen_stages: int, width: int,
                      name: str = "router_head") -> keras.Model:
  """Images -> superclass logits: the generalist's first `frozen_stages` stages (with its
  weights, frozen) and a head of `width` channels.

  Args:
    generalist: a float `build_classifier` model whose output is the superclass logits.
    frozen_stages: K >= 1: the head reads the output of stage K-1 (the stem is stage 0), the
      shared trunk's output with `--freeze_stages=K`.
    width: channels of the head's convolution (>= 1).
    name: the Keras model name.

  Returns:
    The model, with the generalist's `ClassifierSpec` (role "generalist", this name) as its
    `super_sub_spec`, so that tfmot's QAT version (super_sub.training.qat) can be made from it.

  Raises:
    ValueError: a bad width, or frozen_stages outside [1, stages] (stages + 1 would leave no
      features to read: the trunk would end at the pooled vector).
  """
  if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 1:
    raise ValueError(f"a router head needs a width >= 1; got {width!r}")
  spec = classifiers.spec_of(generalist)
  top = backbones.num_stages(generalist)
  if not isinstance(frozen_stages, (int, np.integer)) or not 1 <= frozen_stages <= top:
    raise ValueError(f"a router head reads the output of a shared trunk of K stages, "
                     f"1 <= K <= {top} for {generalist.name!r} (--freeze_stages=K); got "
                     f"{frozen_stages!r}")
  backbone = backbones.build_backbone(spec.backbone, spec.image_shape)
  cut = trunk_lib.cut_index(backbone, frozen_stages)
  x = backbone.layers[cut].output
  conv, bn, relu, pool, head = LAYER_NAMES
  x = layers.Conv2D(int(width), 3, strides=2, padding="same", use_bias=False, name=conv)(x)
  x = layers.BatchNormalization(name=bn)(x)
  x = layers.ReLU(name=relu)(x)
  x = layers.GlobalAveragePooling2D(name=pool)(x)
  logits = layers.Dense(spec.num_classes, name=head, dtype="float32")(x)
  model = keras.Model(backbone.input, logits, name=name)
  model.super_sub_spec = classifiers.ClassifierSpec(spec.backbone, spec.image_shape,
                                                    spec.num_classes, spec.role, name)
  copy_trunk(generalist, model, frozen_stages)
  backbones.freeze_stages(model, frozen_stages)
  return model


def copy_trunk(source: keras.Model, router: keras.Model, frozen_stages: int) -> None:
  """Copies the first `frozen_stages` stages' weights of `source` (the generalist, or its QAT
  version for a QAT router) into `router`, layer by layer in order (tfmot wrappers included).

  Raises:
    ValueError: the two trunks differ in layer count, layer types or weight shapes.
  """
  cut = trunk_lib.cut_index(router, frozen_stages)
  if trunk_lib.cut_index(source, frozen_stages) != cut:
    raise ValueError(f"the first {frozen_stages} stages of {source.name!r} and {router.name!r} "
                     f"hold different layers")
  classifiers.copy_backbone_weights(source, router, num_layers=cut + 1)
