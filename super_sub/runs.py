"""The run folder (model_dir): its stages, the path of every file in it, and what they say.

  model_dir/config.json                 the resolved TrainConfig (identity checked on re-runs)
  model_dir/.lock                       flock'ed while a super-sub-train runs (_internal.lock)
  model_dir/<stage>/backup/             BackupAndRestore state while a stage is unfinished
  model_dir/<stage>/weights/model       final weights (TF checkpoint), written atomically
  model_dir/<stage>/metrics.json        written last: a stage with it is done
  model_dir/<stage>/history.csv, logs/  per-epoch metrics and TensorBoard logs
  model_dir/eval.json                   super-sub-eval's accuracies (every router, every stage)
  model_dir/predictions/<name>.npz      super-sub-eval's per-image predictions of each model
  model_dir/reports/<name>/             super-sub-eval's misclassification report of each model
  model_dir/export/                     super-sub-export's default export folder

with <stage> one of `flat`, `generalist`, `generalist_qat` (with --qat), `router_head` (with
--router_head) and `specialists/<k>_<superclass name>`. Stages are named by typed `Stage`
values, never by parsing strings; `Stage.key` is only what logs and metrics.json print.
The one place that knows this layout; it imports no TensorFlow (bench scripts and the
analysis read runs with it).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

from super_sub._internal import files

ROLES = ("flat", "generalist", "specialist", "router_head")
CONFIG = "config.json"
METRICS = "metrics.json"
WEIGHTS = "weights"
WEIGHTS_PREFIX = "model"
EVAL = "eval.json"
PREDICTIONS = "predictions"
REPORTS = "reports"
EXPORT = "export"
SPECIALISTS = "specialists"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One trained model of a run.

  Attributes:
    role: "flat" (all subclasses), "generalist" (superclasses), "router_head" (superclasses,
      from the generalist's trunk: super_sub.models.router_head) or "specialist".
    superclass: the specialist's superclass; None for the other roles.
    qat: the quantization-aware generalist (stage `generalist_qat`).
  """
  role: str
  superclass: int | None = None
  qat: bool = False

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f"role must be one of {ROLES}; got {self.role!r}")
    if (self.role == "specialist") != (self.superclass is not None):
      raise ValueError("a superclass is required for, and only for, a specialist stage")
    if self.qat and self.role != "generalist":
      raise ValueError("only the generalist has a separate quantization-aware stage")

  @property
  def key(self) -> str:
    """The stage's name in logs, metrics.json and Keras model names: `flat`, `generalist`,
    `generalist_qat`, `router_head` or `specialist_<k>`."""
    if self.role == "specialist":
      return f"specialist_{self.superclass}"
    return f"{self.role}_qat" if self.qat else self.role

  def __str__(self) -> str:
    return self.key


FLAT = Stage("flat")
ROUTER_HEAD = Stage("router_head")
GENERALIST = Stage("generalist")
GENERALIST_QAT = Stage("generalist", qat=True)


def specialist(superclass: int) -> Stage:
  return Stage("specialist", int(superclass))


# --- paths -----------------------------------------------------------------------------------
def config_path(model_dir: str) -> str:
  return os.path.join(model_dir, CONFIG)


def stage_dir(model_dir: str, stage: Stage, superclass_name: str | None = None) -> str:
  """The folder of `stage`; a specialist's needs its superclass's name."""
  if stage.role == "specialist":
    if superclass_name is None:
      raise ValueError(f"the folder of {stage.key} needs its superclass's name")
    return os.path.join(model_dir, SPECIALISTS,
                        f"{stage.superclass}_{files.safe_name(superclass_name)}")
  return os.path.join(model_dir, stage.key)


def specialist_dirs(model_dir: str) -> list[str]:
  """Every specialist folder of a run, finished or not, sorted by name."""
  return sorted(p for p in glob.glob(os.path.join(model_dir, SPECIALISTS, "*"))
                if os.path.isdir(p))


def weights_dir(folder: str) -> str:
  """A stage folder's final weights (a TF checkpoint, written atomically)."""
  return os.path.join(folder, WEIGHTS)


def weights_prefix(folder: str) -> str:
  """The TF checkpoint prefix of a stage folder's final weights."""
  return os.path.join(folder, WEIGHTS, WEIGHTS_PREFIX)


def metrics_path(folder: str) -> str:
  return os.path.join(folder, METRICS)


def is_done(folder: str) -> bool:
  """Whether the stage in `folder` finished: its metrics.json is written last."""
  return os.path.exists(metrics_path(folder))


def read_metrics(folder: str) -> dict[str, Any]:
  """A finished stage folder's metrics.json."""
  with open(metrics_path(folder), encoding="utf-8") as f:
    return json.load(f)


def eval_path(model_dir: str) -> str:
  return os.path.join(model_dir, EVAL)


def is_evaluated(model_dir: str) -> bool:
  return os.path.exists(eval_path(model_dir))


def read_eval(model_dir: str) -> dict[str, Any]:
  """super-sub-eval's eval.json of a run.

  Raises:
    FileNotFoundError: the run has not been evaluated.
  """
  with open(eval_path(model_dir), encoding="utf-8") as f:
    return json.load(f)


def predictions_dir(model_dir: str) -> str:
  return os.path.join(model_dir, PREDICTIONS)


def predictions_path(model_dir: str, name: str) -> str:
  """super-sub-eval's predictions of model `name` (e.g. "flat", "two_stage_hard")."""
  return os.path.join(model_dir, PREDICTIONS, f"{name}.npz")


def report_dir(model_dir: str, name: str) -> str:
  """super-sub-eval's misclassification report of model `name` (index.html in it)."""
  return os.path.join(model_dir, REPORTS, name)


def export_dir(model_dir: str) -> str:
  """Where super-sub-export writes a run's export unless told otherwise."""
  return os.path.join(model_dir, EXPORT)
