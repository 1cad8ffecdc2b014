"""Models whose routing and answers are known, so that parity tests serve every specialist.

An untrained or smoke-trained network routes noise or near-chance images to one or two
superclasses, so a parity test on it may never run most specialists. Here a model's head (its
last Dense layer, plain or tfmot-wrapped) is replaced by one that splits the given images into
equal, known groups: the images are ordered along the first principal direction of the head's
input features, and class k wins on the k-th of K equal slices of that order. The head is
linear, so the Keras model, the SavedModel and the int8 TFLite model all compute it; images on
either side of a slice boundary are the near-ties that int8 noise may flip.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from super_sub._internal.compat import keras

# Logit slope a unit of the normalised feature direction: neighbouring classes' logits differ
# by SLOPE x the image's distance to the boundary between them. Steeper makes more images
# decisive but widens the logits' range, and with it the int8 step of the quantized logits
# (8 made a QAT trunk's split and whole int8 models differ by 0.07 in a probability).
SLOPE = 4.0


def slice_head(features: np.ndarray, num_classes: int,
               slope: float = SLOPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(kernel [D, K], bias [K], assignment [N]) of a linear head that gives class k to the k-th
  of `num_classes` equal slices of `features` [N, D] ordered along their principal direction.

  Class k's logit is slope * (k - (K - 1) / 2) * t + b_k on the normalised projection t, so it
  is the largest on (q_{k-1}, q_k), the boundaries q_k half-way between neighbouring images,
  and an image's margin is `slope` x its distance to the nearest boundary. Slopes centred on 0
  keep the logits' range small. (An exact least-squares fit of the slices to all D features
  gives every image the same margin, but its ill-conditioned kernel amplifies int8 noise
  threefold.)
  """
  features = features.astype(np.float64)
  mean = features.mean(axis=0)
  centred = features - mean
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  t = centred @ vt[0]
  scale = t.std() or 1.0
  t = t / scale
  order = np.argsort(t, kind="stable")
  assignment = np.empty(len(t), np.int64)
  assignment[order] = np.arange(len(t)) * num_classes // len(t)
  ranked = t[order]
  cuts = [(len(t) * k + num_classes - 1) // num_classes for k in range(1, num_classes)]
  bias = np.zeros(num_classes)
  for k, c in enumerate(cuts):
    bias[k + 1] = bias[k] - slope * (ranked[c - 1] + ranked[c]) / 2
  slopes = slope * (np.arange(num_classes) - (num_classes - 1) / 2)
  kernel = np.outer(vt[0] / scale, slopes)
  return kernel.astype(np.float32), (bias - mean @ kernel).astype(np.float32), assignment


def set_head(model: keras.Model, images: np.ndarray, slope: float = SLOPE) -> np.ndarray:
  """Replaces `model`'s last layer's kernel and bias by `slice_head` of its input features on
  `images`; returns the class each image now gets, as the model itself computes it. Every
  class gets at least half its share of the images (asserted).

  A tfmot-wrapped head also gets quantizer ranges that hold the new kernel and logits (the
  ranges QAT learnt for the old head would clip them).
  """
  head = model.layers[-1]
  features = keras.Model(model.input, head.input).predict(images, verbose=0)
  num_classes = int(model.output_shape[-1])
  kernel, bias, assignment = slice_head(features, num_classes, slope)
  by_name = {w.name.split("/")[-1].split(":")[0]: w for w in head.weights}
  by_name["kernel"].assign(kernel)
  by_name["bias"].assign(bias)
  if "kernel_min" in by_name:
    extent = float(np.abs(kernel).max())
    by_name["kernel_min"].assign(-extent)
    by_name["kernel_max"].assign(extent)
    logits = features @ kernel + bias
    by_name["post_activation_min"].assign(min(float(logits.min()), 0.0))
    by_name["post_activation_max"].assign(max(float(logits.max()), 0.0))
  got = np.argmax(model.predict(images, verbose=0), axis=1)
  # Float models give exactly the slices; a tfmot-wrapped head fake-quantizes its kernel and
  # logits, which moves a few images next to a boundary into the next slice.
  counts = np.bincount(got, minlength=num_classes)
  assert counts.min() >= len(images) // (2 * num_classes), (
      f"the slice head leaves a class with too few images: {counts.tolist()} (slices of "
      f"{len(images) / num_classes:.1f})")
  return got


def make_routing_known(run) -> dict[int, int]:
  """Gives the trained `run`'s router (its router head if it has one, else its generalist) and
  every specialist slice heads on the run's evaluation images, saved as the stages' weights:
  the router sends an equal share of the images to each superclass, and each specialist
  spreads the images it receives over its subclasses (a smoke specialist near chance would
  leave ~10% of its answers decisive). Returns {superclass: images routed}.

  Evaluate the run afterwards: its predictions/ then hold the known routing.
  """
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  import conftest  # pylint: disable=import-outside-toplevel
  images = np.concatenate([x for x, _, _ in conftest._evaluation_batches(run)])  # pylint: disable=protected-access
  router_stage = run_lib.ROUTER_HEAD if run.config.router_head else run.generalist
  router = run.load_model(router_stage)
  routed = set_head(router, images)
  _save(run, router_stage, router)
  for k, stage in run.specialists().items():
    specialist = run.load_model(stage)
    mine = images[routed == k]
    assert len(mine) >= 2 * specialist.output_shape[-1], f"superclass {k}: too few images"
    set_head(specialist, mine)
    _save(run, stage, specialist)
  return {int(k): int(n) for k, n in enumerate(np.bincount(routed,
                                                           minlength=run.hierarchy.num_superclasses))}


def _save(run, stage, model) -> None:
  model.save_weights(os.path.join(run.stage_dir(stage), "weights", "model"))


def train_with_known_routing(config):
  """The smoke run of `config`, trained bit-reproducibly (`--deterministic`), given known
  routing (`make_routing_known`) and evaluated: its predictions/ hold the known routing.

  Deterministic because the parity checks' outcome depends on the trained specialists (where
  int8 noise lands): without it, CPU training here gives different weights for one seed, and a
  bound that held in every seeded run failed once in CI on a draw no one could replay."""
  from super_sub import evaluation  # pylint: disable=import-outside-toplevel
  import conftest  # pylint: disable=import-outside-toplevel
  run = conftest.train_run(dataclasses.replace(config, deterministic=True))
  make_routing_known(run)
  evaluation.evaluate(run, log=lambda _: None)
  return run
