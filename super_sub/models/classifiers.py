"""The three classifier roles on one backbone: flat (all subclasses), generalist (superclasses)
and specialist (one superclass's subclasses, started from the generalist).

A classifier is a backbone (super_sub.models.backbones) plus a Dense logits head named
`head`, as one flat functional graph; `ClassifierSpec` rebuilds it exactly, so a model can be
rebuilt from its spec and a checkpoint restored into it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from super_sub._internal.compat import keras
from super_sub.models import backbones
from super_sub.models.backbones import BACKBONES, HEAD_NAME, build_backbone

layers = keras.layers

ROLES = ("flat", "generalist", "specialist")


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
  """What `build_classifier` needs to rebuild a model exactly; kept on the model as `super_sub_spec`."""
  backbone: str
  image_shape: tuple[int, int, int]
  num_classes: int
  role: str
  name: str

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready form; `build_classifier(**spec.to_dict())` rebuilds the model."""
    return {**dataclasses.asdict(self), "image_shape": list(self.image_shape)}


def build_classifier(backbone: str | keras.Model, image_shape: Sequence[int], num_classes: int,
                     role: str, name: str, weights: str | None = None) -> keras.Model:
  """Backbone + Dense(num_classes) logits head named "head", as one flat functional model.

  The result depends only on the arguments (layer names included), so a model can be rebuilt
  from its `super_sub_spec` and a checkpoint restored into it.

  Args:
    backbone: one of BACKBONES, or a model from `build_backbone` (whose layers then become the
      classifier's: give each backbone model to one classifier only).
    image_shape: (height, width, channels) of the [0, 1] float input images.
    num_classes: width of the logits (>= 2).
    role: "flat" (all subclasses), "generalist" (superclasses) or "specialist" (the subclasses
      of one superclass); recorded, it does not change the graph.
    name: the Keras model name, e.g. "generalist" or "specialist_3" (it ends up in TFLite files).
    weights: as in `build_backbone` when `backbone` is a name (None when it is a model); the
      head is always freshly initialised.

  Returns:
    The model, with a `ClassifierSpec` as its `super_sub_spec` attribute.

  Raises:
    ValueError: on an unknown role, fewer than 2 classes, an empty name, a backbone model not
      from `build_backbone` or not of `image_shape`, or as `build_backbone`.
  """
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"a {role} classifier needs num_classes >= 2; got {num_classes!r}")
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a non-empty string; got {name!r}")
  if isinstance(backbone, keras.Model):
    base = backbone
    if getattr(base, "super_sub_backbone", None) not in BACKBONES:
      raise ValueError(f"backbone model {base.name!r} was not built by build_backbone")
    if weights is not None:
      raise ValueError("weights go to build_backbone; this backbone model is already built")
    if tuple(base.input.shape[1:]) != tuple(image_shape):
      raise ValueError(f"backbone model {base.name!r} takes images of shape "
                       f"{tuple(base.input.shape[1:])}, not {tuple(image_shape)}")
  else:
    base = build_backbone(backbone, image_shape, weights)
  # float32 whatever the global policy: under mixed precision the loss gets float32 logits.
  logits = layers.Dense(int(num_classes), name=HEAD_NAME, dtype="float32")(base.output)
  model = keras.Model(base.input, logits, name=name)
  model.super_sub_spec = ClassifierSpec(base.super_sub_backbone, tuple(base.input.shape[1:]),
                                        int(num_classes), role, name)
  return model


def spec_of(model: keras.Model) -> ClassifierSpec:
  """The `ClassifierSpec` that `build_classifier` attached to `model`.

  Raises:
    ValueError: if the model was not built by `build_classifier`.
  """
  spec = getattr(model, "super_sub_spec", None)
  if not isinstance(spec, ClassifierSpec):
    raise ValueError(f"model {model.name!r} was not built by super_sub.models.classifiers.build_classifier "
                     f"(no super_sub_spec); build it that way and restore its checkpoint")
  return spec


def copy_backbone_weights(source: keras.Model, target: keras.Model,
                          num_layers: int | None = None) -> None:
  """Copies every weight except the head's (the last layer) from source to target, or only
  those of the first `num_layers` layers (e.g. a shared trunk's).

  Layers are matched by position, not name (names may differ, e.g. by `_1` suffixes, and
  tfmot numbers its input layer per model).

  Raises:
    ValueError: if the two models' backbones differ in layer count, layer type or weight shapes.
  """
  stop = -1 if num_layers is None else num_layers
  src, dst = source.layers[:stop], target.layers[:stop]
  if len(src) != len(dst):
    raise ValueError(f"backbones differ: {source.name!r} has {len(src)} layers before its head, "
                     f"{target.name!r} {len(dst)}")
  for i, (a, b) in enumerate(zip(src, dst)):
    values = a.get_weights()
    if type(a) is not type(b) or [v.shape for v in values] != [w.shape for w in b.weights]:
      raise ValueError(f"backbones differ at layer {i}: {a.name!r} ({type(a).__name__}) in "
                       f"{source.name!r} vs {b.name!r} ({type(b).__name__}) in {target.name!r}")
    if values:
      b.set_weights(values)


def inbound_node(model: keras.Model, layer: keras.layers.Layer):
  """The node through which `layer` takes part in `model`'s graph.

  A layer that also serves another model (super_sub.trunk's tails call the same layers)
  has one inbound node per call; only one belongs to `model`.
  """
  nodes = layer._inbound_nodes  # pylint: disable=protected-access
  for i, node in enumerate(nodes):
    if f"{layer.name}_ib-{i}" in model._network_nodes:  # pylint: disable=protected-access
      return node
  raise ValueError(f"layer {layer.name!r} is not part of model {model.name!r}")


def make_specialist(generalist: keras.Model, num_subclasses: int, name: str,
                    freeze_stages: int = 0,
                    head_init: tuple[np.ndarray, np.ndarray] | None = None) -> keras.Model:
  """A specialist: the generalist's backbone (architecture and weights) with a fresh head.

  Args:
    generalist: a model from `build_classifier` (any role); its head is not used.
    num_subclasses: width of the new head (the superclass's subclass count, >= 2).
    name: the specialist's model name, e.g. "specialist_3".
    freeze_stages: as `backbones.freeze_stages(model, k)`, applied to the specialist.
    head_init: optional (kernel [features, num_subclasses], bias [num_subclasses]) for the head,
      e.g. the columns of a flat model's head for this superclass's subclasses.

  Returns:
    The specialist, built by `build_classifier(..., role="specialist", name=name)`.

  Raises:
    ValueError: on a generalist not built by `build_classifier`, or a mis-shaped head_init.
  """
  spec = spec_of(generalist)
  specialist = build_classifier(spec.backbone, spec.image_shape, num_subclasses, "specialist",
                                name)
  copy_backbone_weights(generalist, specialist)
  if head_init is not None:
    head = specialist.layers[-1]
    kernel, bias = (np.asarray(v, np.float32) for v in head_init)
    want = [tuple(w.shape) for w in head.weights]
    if [kernel.shape, bias.shape] != want:
      raise ValueError(f"head_init shapes {kernel.shape}, {bias.shape} do not fit the head of "
                       f"{name!r}: expected {want[0]}, {want[1]}")
    head.set_weights([kernel, bias])
  backbones.freeze_stages(specialist, freeze_stages)
  return specialist


