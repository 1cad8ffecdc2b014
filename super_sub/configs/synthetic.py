"""The embedded synthetic data (procedural shapes: 5 superclasses, 21 subclasses, no download):
what super-sub-demo trains, and, as its smoke variant, what the tests train.
"""

from __future__ import annotations

from typing import Any


def demo(smoke: bool = False) -> dict[str, Any]:
  """super-sub-demo's run at 32 px (~7 min on 2 cores):

    super-sub-train --config=synthetic_demo --model_dir=runs/demo
    super-sub-eval --model_dir=runs/demo

  Smoke: superclassed_synthetic/smoke (16 px, 8 training images a class), one epoch a stage.
  """
  if smoke:
    return dict(dataset="superclassed_synthetic/smoke", stage="all", epochs=1,
                specialist_epochs=1, batch_size=16)
  return dict(dataset="superclassed_synthetic", stage="all", epochs=12, specialist_epochs=12)
