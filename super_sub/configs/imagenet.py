"""The paper's setting: superclassed_imagenet (10 WordNet superclasses, 289 ImageNet classes)
at 224 px, flat baseline, generalist and one specialist per superclass.

The optimiser is super-sub's (AdamW, linear warm-up, cosine decay), not the paper's SGD: the
rates below follow the common AdamW ImageNet recipes (DeiT, timm: 5e-4 per 256 images, weight
decay 0.05) and have not been tuned here: there is no ImageNet on these machines. Rates are
per 256 images of global batch (`learning_rate_base_batch`) and scale linearly with it
(Goyal et al. 2017), so the same recipe holds on 1 GPU or 64. Images: random-resized crops
and flips for training, the central 87.5% for evaluation (the default for full-size
superclassed_imagenet).
"""

from __future__ import annotations

from typing import Any


def resnet50(smoke: bool = False) -> dict[str, Any]:
  """ResNet-50 at 224 px, 8 replicas x 128 images (global batch 1024):

    super-sub-train --config=imagenet_resnet50 --model_dir=runs/imagenet_r50 \\
        --manual_dir=/data/ILSVRC2012 --strategy=mirrored --mixed_precision
  """
  return _recipe("resnet50", batch_size=128, smoke=smoke)


def mobilenet_v2(smoke: bool = False) -> dict[str, Any]:
  """MobileNetV2 at 224 px, the edge backbone of the bundles, 8 replicas x 128 images:

    super-sub-train --config=imagenet_mobilenet_v2 --model_dir=runs/imagenet_mnv2 \\
        --manual_dir=/data/ILSVRC2012 --strategy=mirrored --mixed_precision
  """
  return _recipe("mobilenet_v2", batch_size=128, smoke=smoke)


def _recipe(backbone: str, batch_size: int, smoke: bool) -> dict[str, Any]:
  config = dict(
      dataset="superclassed_imagenet", backbone=backbone, image_size=224,
      stage="all", epochs=90, specialist_epochs=30, batch_size=batch_size,
      learning_rate=5e-4, learning_rate_base_batch=256,
      # Specialists fine-tune a trained generalist: a tenth of its rate.
      specialist_learning_rate=5e-5,
      warmup_epochs=5.0, weight_decay=0.05,
      augment="random_resized_crop")
  if smoke:  # superclassed_imagenet/full on dummy_data, a few steps of each stage
    config.update(image_size=64, epochs=1, specialist_epochs=1, batch_size=2,
                  steps_per_epoch=1, warmup_epochs=0.0, specialists=(0,))
  return config
