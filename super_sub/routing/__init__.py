"""Two-stage inference: a generalist routes each image to its superclass's specialist.

  core        the algorithm in numpy (hard and soft top-k routing, grouping a batch by routed
              superclass, the output arrays); every router runs it
  two_stage   `TwoStage`: the core over Keras models (evaluation, research)

The SavedModel's graph mirror lives in `super_sub.bundles.saved_model`, the LiteRT twin in
`super_sub.runtime`. Importing this package loads no TensorFlow (`TwoStage` is loaded lazily).
"""

from super_sub.routing.core import MODES, softmax

__all__ = ["MODES", "TwoStage", "softmax"]


def __getattr__(name):
  if name == "TwoStage":
    from super_sub.routing.two_stage import TwoStage  # pylint: disable=import-outside-toplevel
    return TwoStage
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
