"""Parity: an exported bundle, run by the edge runtime, against the Keras two-stage predictions it
was made from."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from super_sub import runs
from super_sub.data import pipeline
from super_sub.runtime import predictor
from super_sub.training import run as run_lib


def tflite_parity(run: run_lib.Run, export_dir: str, split: str | None = None,
                  log: Callable[[str], None] = print) -> dict[str, float | int]:
  """Top-1 of the TFLite bundle (hard routing) and its agreement with the Keras two-stage.

  Compares with `model_dir/predictions/two_stage_hard.npz` from super-sub-eval, example by
  example (matched by file name), so run the evaluation first.
  """
  lite = predictor.TwoStageLite(os.path.join(export_dir, "tflite"))
  result = compare_with_keras(run, lambda x: lite.predict(x, mode="hard")["label"], split)
  result = {"num_examples": result["num_examples"], "tflite_top1": result["top1"],
            "keras_top1": result["keras_top1"],
            "agreement_with_keras": result["agreement_with_keras"]}
  log(f"TFLite bundle: top-1 {result['tflite_top1']:.2%} (Keras two-stage "
      f"{result['keras_top1']:.2%}); same prediction as Keras for "
      f"{result['agreement_with_keras']:.2%} of {result['num_examples']} images")
  return result


def compare_with_keras(run: run_lib.Run,
                       predict: Callable[[np.ndarray], np.ndarray],
                       split: str | None = None) -> dict[str, float | int]:
  """Top-1 of `predict` (float images [N, H, W, C] in [0, 1] -> global subclass indices) on
  the evaluation split, and how often it predicts what the Keras two-stage model predicted
  (`model_dir/predictions/two_stage_hard.npz` from super-sub-eval, matched by file name).

  Raises:
    FileNotFoundError: the run has not been evaluated.
  """
  config = run.config
  split = split or run.evaluation_split
  path = runs.predictions_path(config.model_dir, "two_stage_hard")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: run super-sub-eval --model_dir="
                            f"{config.model_dir} first")
  with np.load(path, allow_pickle=False) as keras_run:
    keras_pred = dict(zip(keras_run["file_names"].tolist(), keras_run["predictions"].tolist()))
    keras_top1 = float(np.mean(keras_run["predictions"] == keras_run["labels"]))
  spec = run.evaluation_input(256)
  ds = pipeline.make_dataset(run.builder, split, spec, training=False, with_metadata=True)
  correct = agree = total = 0
  for images, labels, meta in tfds.as_numpy(ds):
    predicted = np.asarray(predict(images))
    names = [n.decode("utf-8") for n in meta["file_name"]]
    correct += int(np.sum(predicted == labels))
    agree += int(sum(int(p) == keras_pred[n] for p, n in zip(predicted, names)))
    total += len(labels)
  return {"num_examples": total, "top1": correct / total, "keras_top1": keras_top1,
          "agreement_with_keras": agree / total}
