"""Real data on a CPU: superclassed_fashion_mnist (Fashion-MNIST's 10 classes in 5 superclasses,
two of them with specialists) with the 0.3M-parameter small_resnet at 28 px, 2 epochs per
network: the setting of bench/fashion_mnist.py and the README's gain table (~50 min on 2 cores).
"""

from __future__ import annotations

from typing import Any


def flat_vs_super_sub(smoke: bool = False) -> dict[str, Any]:
  """Flat network against Super-Sub on Fashion-MNIST (Debian's copy, no download):

    apt-get install dataset-fashion-mnist
    super-sub-train --config=fashion_mnist --model_dir=runs/fmnist \\
        --manual_dir=/usr/share/datasets/fashion-mnist
    super-sub-eval --model_dir=runs/fmnist
  """
  config = dict(dataset="superclassed_fashion_mnist", backbone="small_resnet", stage="all",
                epochs=2, specialist_epochs=2, batch_size=64)
  if smoke:
    config.update(epochs=1, specialist_epochs=1, steps_per_epoch=2)
  return config
