"""Evaluates a trained run: flat vs generalist + specialists, and where the errors fall.

A run of the flat network alone (a folder without a hierarchy; the first step of learning one
from its confusions, `super-sub-hierarchy --from_run`) is evaluated alone: eval.json then holds
the flat entries only, and predictions/ only flat.npz.

Writes `<model_dir>/eval.json` and one predictions file per model under
`<model_dir>/predictions/` (NPZ, plain arrays, loadable with `np.load` and no pickle):

  labels       int64 [N]     true class (global subclass index; superclass for generalist.npz)
  predictions  int64 [N]     predicted class, same label space
  top5         int64 [N, 5]  the five most probable classes, most probable first
  probs        float32 [N, C] class probabilities (softmax of the logits; for two-stage
                             routing the combined probabilities, see super_sub.routing.core)
  file_names   str [N]       the dataset's file_name of each example
  label_space  str []        "subclass" or "superclass"
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from super_sub import analysis
from super_sub import hierarchy as hierarchy_lib
from super_sub import runs
from super_sub._internal import files
from super_sub.data import pipeline
from super_sub.routing import core
from super_sub.training import run as run_lib


def error_counts(labels: np.ndarray, predictions: np.ndarray,
                 hierarchy: hierarchy_lib.Hierarchy) -> dict[str, int]:
  """Wrong predictions, split by whether the predicted subclass is in the true superclass.

  `super_sub.analysis.error_counts` without its outside-the-hierarchy count, which is 0
  for predictions that are all subclasses.
  """
  counts = analysis.error_counts(labels, predictions, hierarchy)
  del counts["outside_hierarchy"]
  return counts


def per_superclass_accuracy(labels: np.ndarray, predictions: np.ndarray,
                            hierarchy: hierarchy_lib.Hierarchy) -> dict[str, float | None]:
  """Top-1 over the examples of each true superclass (None when it has no examples)."""
  per = analysis.report.per_superclass(labels, predictions, hierarchy)
  return {name: stats["top1"] for name, stats in per.items()}


def topk(probs: np.ndarray, k: int = 5) -> np.ndarray:
  """Indices of the k largest entries per row, largest first."""
  k = min(k, probs.shape[1])
  return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def evaluate(run: run_lib.Run, split: str | None = None, soft_k: int = 2,
             batch_size: int = 256, router: str | None = None,
             log: Callable[[str], None] = print) -> dict:
  """Runs every trained model of `config.model_dir` over `split` and writes the results.

  Args:
    run: the trained run (`Run.open(model_dir)`).
    split: dataset split; default the validation split ("test" for Fashion-MNIST).
    soft_k: how many superclasses soft routing combines.
    router: what routes the two-stage system whose predictions, reports and `two_stage`
      entry are written (super_sub.routing.core.ROUTERS); default: the run's own, "head"
      where it has a router head (`--router_head`), else "generalist". Every router the run
      has is in `routers` whichever is chosen, so they can be compared on one pass.
  Returns:
    The eval.json content.
  """
  config, builder, h = run.config, run.builder, run.hierarchy
  split = split or run.evaluation_split
  has_head = bool(config.router_head)
  router = router or ("head" if has_head else "generalist")
  # An unknown router, or a router head the run lacks, fails before any model is loaded.
  core.check_router(router, has_head=has_head)
  routers = [name for name in core.ROUTERS if name != "head" or has_head]
  flat = run.load_model(run_lib.FLAT)
  two_stage = run.load_two_stage(flat=flat) if run.is_done(run.generalist) else None
  if two_stage is None:
    log("only the flat network is trained: evaluating it alone (the two-stage results need "
        "super-sub-train --stage=all)")

  spec = run.evaluation_input(batch_size)
  ds = pipeline.make_dataset(builder, split, spec, training=False, with_metadata=True)
  parts: dict[str, list[np.ndarray]] = {}
  for images, labels, meta in tfds.as_numpy(ds):
    batch = {"labels": labels, "file_names": meta["file_name"],
             "flat": core.softmax(flat.predict_on_batch(images))}
    for key, value in batch.items():
      parts.setdefault(key, []).append(np.asarray(value))
    if two_stage is None:
      continue
    batch = {"oracle_specialists": two_stage.oracle(images, meta["superclass"])["label_probs"]}
    for name in routers:
      hard = two_stage.predict(images, mode="hard", router=name)
      soft = two_stage.predict(images, mode="soft", k=soft_k, router=name)
      batch.update({f"{name}/superclass": hard["superclass_probs"],
                    f"{name}/hard": hard["label_probs"], f"{name}/soft": soft["label_probs"]})
    batch.update({"generalist": batch["generalist/superclass"],
                  "two_stage_hard": batch[f"{router}/hard"],
                  "two_stage_soft": batch[f"{router}/soft"]})
    for key, value in batch.items():
      parts.setdefault(key, []).append(np.asarray(value))
  if not parts:
    raise ValueError(f"split {split!r} of {builder.name} is empty")
  got = {k: np.concatenate(v) for k, v in parts.items()}
  labels = got["labels"].astype(np.int64)
  supers = h.superclass_of[labels]
  file_names = np.array([f.decode("utf-8") if isinstance(f, bytes) else str(f)
                         for f in got["file_names"]])
  predictions = {k: got[k].argmax(axis=1) for k in
                 ("flat", "generalist", "two_stage_hard", "two_stage_soft",
                  "oracle_specialists") if k in got}

  def top1(key, truth=labels):
    return float(np.mean(predictions[key] == truth))

  result = {
      "dataset": builder.info.full_name, "split": split, "num_examples": int(len(labels)),
      "hierarchy": h.name,
      # The tree itself: a folder: or tfds: run's hierarchy has no shipped name to load by.
      "hierarchy_definition": h.to_dict(),
      "flat": {"top1": top1("flat"),
               "top5": float(np.mean((topk(got["flat"]) == labels[:, None]).any(axis=1))),
               "errors": error_counts(labels, predictions["flat"], h)},
      "flat_per_superclass": per_superclass_accuracy(labels, predictions["flat"], h),
  }
  if two_stage is not None:
    result.update(_two_stage_results(got, predictions, labels, supers, h, router, routers,
                                     soft_k))
  # flat.npz marks the folder as super-sub's own (every evaluated run has it).
  with files.atomic_dir(runs.predictions_dir(config.model_dir), "predictions",
                        "flat.npz") as folder:
    for key, probs in ((k, got[k]) for k in predictions):
      truth, space = (supers, "superclass") if key == "generalist" else (labels, "subclass")
      np.savez_compressed(os.path.join(folder, f"{key}.npz"), labels=truth,
                          predictions=predictions[key], top5=topk(probs),
                          probs=probs.astype(np.float32), file_names=file_names,
                          label_space=np.array(space))
  files.write_json(runs.eval_path(config.model_dir), result)
  log(format_table(result) if two_stage is not None else
      f"flat (one network, all subclasses): top-1 {result['flat']['top1']:.4f}")
  # A misclassification report per subclass-level model (super_sub.analysis; no images).
  for key in ("flat", "two_stage_hard", "two_stage_soft", "oracle_specialists"):
    if key not in predictions:
      continue
    analysis.write_report(
        runs.report_dir(config.model_dir, key),
        analysis.Predictions(labels, predictions[key], top5=topk(got[key]), probs=got[key],
                             file_names=file_names,
                             source=runs.predictions_path(config.model_dir, key)),
        h, title=f"{builder.info.full_name} / {split}: {key}")
  log(f"reports: {os.path.join(runs.report_dir(config.model_dir, '<model>'), 'index.html')}")
  return result


def _two_stage_results(got, predictions, labels, supers, h, router, routers, soft_k) -> dict:
  """eval.json's entries of the generalist, the oracle specialists, two-stage routing and
  every router."""
  def top1(key, truth=labels):
    return float(np.mean(predictions[key] == truth))

  return {
      "generalist": {"superclass_top1": top1("generalist", supers)},
      "oracle_specialists": {
          "top1": top1("oracle_specialists"),
          "per_superclass": per_superclass_accuracy(labels, predictions["oracle_specialists"],
                                                    h)},
      "two_stage": {
          "router": router,
          "hard": {"top1": top1("two_stage_hard"),
                   "errors": error_counts(labels, predictions["two_stage_hard"], h)},
          "soft": {"top1": top1("two_stage_soft"), "k": soft_k,
                   "errors": error_counts(labels, predictions["two_stage_soft"], h)}},
      # Every router on the same images. routing_loss: oracle top-1 minus hard routing's,
      # the accuracy the specialists bring that wrong routes give away.
      "routers": {name: {
          "superclass_top1": float(np.mean(got[f"{name}/superclass"].argmax(axis=1) == supers)),
          "hard_top1": float(np.mean(got[f"{name}/hard"].argmax(axis=1) == labels)),
          "soft_top1": float(np.mean(got[f"{name}/soft"].argmax(axis=1) == labels)),
          "routing_loss": top1("oracle_specialists")
                          - float(np.mean(got[f"{name}/hard"].argmax(axis=1) == labels)),
      } for name in routers},
  }


def format_table(result: dict) -> str:
  """The demo's summary: flat vs two-stage top-1, superclass accuracy, where errors fall."""
  def share(errors):
    return errors["within_superclass"] / errors["total"] if errors["total"] else 0.0
  flat, hard, soft = result["flat"], result["two_stage"]["hard"], result["two_stage"]["soft"]
  rows = [
      ("flat (one network, all subclasses)", flat["top1"], share(flat["errors"])),
      ("two-stage, hard routing", hard["top1"], share(hard["errors"])),
      (f"two-stage, soft routing (k={soft['k']})", soft["top1"], share(soft["errors"])),
      ("oracle specialists (true superclass)", result["oracle_specialists"]["top1"], None),
  ]
  lines = [f"{result['dataset']} / {result['split']}: {result['num_examples']} examples",
           f"{'model':<40}{'top-1':>8}{'errors within superclass':>27}"]
  for name, acc, within in rows:
    lines.append(f"{name:<40}{acc:>8.2%}{'' if within is None else f'{within:>27.1%}'}")
  lines.append(f"generalist superclass top-1: {result['generalist']['superclass_top1']:.2%}")
  for name, r in result.get("routers", {}).items():
    lines.append(f"router {name:<11} superclass top-1 {r['superclass_top1']:.2%}, hard "
                 f"{r['hard_top1']:.2%}, soft {r['soft_top1']:.2%}, routing loss "
                 f"{100 * r['routing_loss']:.2f} points")
  return "\n".join(lines)
