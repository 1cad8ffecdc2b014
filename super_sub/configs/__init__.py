"""Named experiments as code: each a function returning TrainConfig fields, its command in its
docstring (Model Garden's and big_vision's experiment configs, as plain Python).

  super-sub-train --config=imagenet_resnet50 --model_dir=runs/r50 --manual_dir=/data/ILSVRC2012
  super-sub-train --config=fashion_mnist --model_dir=runs/fmnist --epochs=5

A flag given on the command line overrides that one field; the resolved config is saved in
model_dir/config.json as for any run. Every recipe has a smoke variant, NAME.smoke: the same
recipe shrunk to run in seconds on a CPU (the tests train them).

  imagenet_resnet50      the paper's setting: superclassed_imagenet at 224 px, ResNet-50
  imagenet_mobilenet_v2  the same with MobileNetV2 (the edge backbone)
  fashion_mnist          real data on a CPU: the README's and bench/fashion_mnist.py's run
  synthetic_demo         the embedded synthetic data: what super-sub-demo trains
"""

from __future__ import annotations

from typing import Any, Callable

from super_sub.configs import fashion_mnist
from super_sub.configs import imagenet
from super_sub.configs import synthetic
from super_sub.errors import SuperSubError

SMOKE = ".smoke"
RECIPES: dict[str, Callable[..., dict[str, Any]]] = {
    "imagenet_resnet50": imagenet.resnet50,
    "imagenet_mobilenet_v2": imagenet.mobilenet_v2,
    "fashion_mnist": fashion_mnist.flat_vs_super_sub,
    "synthetic_demo": synthetic.demo,
}


class UnknownConfigError(SuperSubError, ValueError):
  """A config name that is not a recipe; the message lists the recipes."""


def names() -> list[str]:
  """Every recipe name, each followed by its smoke variant."""
  return [n for name in RECIPES for n in (name, name + SMOKE)]


def get(name: str) -> dict[str, Any]:
  """The TrainConfig fields of recipe `name` (all but model_dir).

  Raises:
    UnknownConfigError: `name` is neither a recipe nor a recipe's smoke variant.
  """
  base = name[:-len(SMOKE)] if name.endswith(SMOKE) else name
  if base not in RECIPES:
    raise UnknownConfigError(f"unknown config {name!r}; the configs are: {', '.join(names())}")
  return RECIPES[base](smoke=name.endswith(SMOKE))
