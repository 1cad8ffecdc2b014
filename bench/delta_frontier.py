r"""The compression frontier: two-stage top-1 against b, the cost of one specialist, for every
way of describing a specialist, over one shared base.

  .venv/bin/python bench/delta_frontier.py --dataset=superclassed_fashion_mnist \
      --manual_dir=/usr/share/datasets/fashion-mnist --epochs=20 --specialist_epochs=5 \
      --settings=dense,affine,keep5,keep2,keep1,keep2+bn,affine+distill \
      --work_dir=/work/frontier_fmnist --out=bench/results/delta_frontier_fmnist

The base (flat network, generalist initialised from it, and with --qat the QAT generalist) is
trained once in <work_dir>/base (or the first two copied from --base_from, a finished run of
the same recipe); every setting copies its finished stages into
<work_dir>/<setting> and trains only the specialists, all with the same epochs and seed, then is
evaluated (super-sub-eval) and exported (super-sub-export), so b comes from the real bundle
(super_sub.bundles.storage.storage_fit). A finished step is never done again: the script can be
re-run to add settings. A setting is parts joined by "+":
  dense     plain fine-tuning of every kernel, BatchNorm free: the accuracy to match
  affine    --specialist_form=affine: BatchNorm's per-channel scale and shift and the head
  sign      --specialist_form=sign (needs --qat): every kernel weight moves by +-k int8 steps of
            its channel (about one bit per weight), BatchNorm free
  signP     sign with --delta_keep=P/100: only the output channels that move most, P percent
            of the kernel weights, move (e.g. sign60); the rest store no sign bits
  rankR     --specialist_form=lowrank --delta_rank=R (needs --qat): each kernel's int8 delta is
            a rank-R integer product (e.g. rank8), BatchNorm free
  keepP     --delta_keep=P/100 --freeze_bn: a sparse kernel delta (P in percent, e.g. keep2)
  bn        with keepP: BatchNorm free (the sparse delta plus the affine part)
  nobn      with dense, sign or rankR: --freeze_bn (BatchNorm stays the generalist's, so the
            per-channel scales and biases stay the base's too)
  trunkK    with any form: --freeze_stages=K (the stem and the first K-1 stages stay the
            generalist's, stored once as the shared trunk; the specialist stores only the rest,
            e.g. sign+trunk3 for small_resnet stores sign bits for stage 3 alone)
  grow      with dense or keepP and --qat: --delta_ranges=grow (weight quantizer ranges widen
            where changed weights outgrew them, instead of clipping them)
  distill   --distill_from=flat: the specialists also learn the flat network's soft targets
  teach     --distill_from=<work_dir>/dense: they learn the dense specialists' soft targets
            (list dense before it)
Writes <out>.json, <out>.md and <out>.png (top-1 against b, with the dense setting's accuracy
minus --tolerance and b = --b_goal marked).
"""

import os
import platform
import re
import time

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=wrong-import-position

from _common import copy_stages  # pylint: disable=wrong-import-position
from _common import tradeoff_row  # pylint: disable=wrong-import-position
from _common import tradeoff_table  # pylint: disable=wrong-import-position
from _common import write_json  # pylint: disable=wrong-import-position
from super_sub import evaluation  # pylint: disable=wrong-import-position
from super_sub import runs  # pylint: disable=wrong-import-position
from super_sub.bundles import export as export_lib  # pylint: disable=wrong-import-position
from super_sub.training import config as config_lib  # pylint: disable=wrong-import-position
from super_sub.training import fit  # pylint: disable=wrong-import-position
from super_sub.training import run as run_lib  # pylint: disable=wrong-import-position

_DATASET = flags.DEFINE_string("dataset", "superclassed_fashion_mnist", "TFDS dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Manually downloaded source files "
                                  "(Fashion-MNIST: /usr/share/datasets/fashion-mnist).")
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Epochs of the flat network and the generalist.")
_SPECIALIST_EPOCHS = flags.DEFINE_integer("specialist_epochs", 5, "Epochs of every specialist.")
_QAT = flags.DEFINE_boolean("qat", True, "Quantization-aware generalist and specialists.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every training.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", None, "Cap the steps of an epoch (smoke runs).")
_BASE_FROM = flags.DEFINE_string(
    "base_from", None, "A finished run of this dataset and --epochs (e.g. bench/fashion_mnist.py's "
    "supersub run) whose flat network and generalist (initialised from it) become the base "
    "instead of training them again; the QAT generalist is trained here.")
_SETTINGS = flags.DEFINE_list("settings", ["dense", "affine", "keep5", "keep2", "keep1"],
                              "Settings to train and compare (see the docstring).")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.003, "Accuracy a setting may lose against the "
                                "dense one and still count as matching it.")
_B_GOAL = flags.DEFINE_float("b_goal", 0.03, "The cost of one specialist to reach, in fp32 "
                             "networks.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/delta_frontier", "Runs and exports go here.")
_OUT = flags.DEFINE_string("out", "bench/results/delta_frontier", "Output path without suffix.")

_BASE_STAGES = ("flat", "generalist", "generalist_qat")


def setting_overrides(setting: str) -> dict:
  """The TrainConfig fields of a setting such as "keep2+bn" (see the module docstring).

  Raises:
    ValueError: an unknown part, or parts that do not combine.
  """
  parts = setting.split("+")
  overrides: dict = {}
  keeps = [p for p in parts if re.fullmatch(r"keep\d+(\.\d+)?", p)]
  ranks = [p for p in parts if re.fullmatch(r"rank\d+", p)]
  signs = [p for p in parts if re.fullmatch(r"sign\d+(\.\d+)?", p)]
  trunks = [p for p in parts if re.fullmatch(r"trunk[1-9]\d*", p)]
  unknown = [p for p in parts
             if p not in ("dense", "affine", "sign", "bn", "nobn", "grow", "distill", "teach")
             and p not in keeps + ranks + signs + trunks]
  forms = (sum(p in ("dense", "affine", "sign") for p in parts) + len(keeps) + len(ranks)
           + len(signs))
  if unknown or len(keeps) > 1 or len(trunks) > 1 or forms != 1:
    raise ValueError(f"setting {setting!r}: expected one of dense, affine, sign, signP, rankR or "
                     "keepP (P in percent), optionally +bn (with keepP), +nobn (without), +grow, "
                     "+trunkK (K >= 1) and +distill or +teach")
  if "bn" in parts and not keeps:
    raise ValueError(f"setting {setting!r}: +bn frees BatchNorm next to a keepP budget; dense, "
                     "affine and sign train BatchNorm already")
  if "nobn" in parts:
    if keeps or "affine" in parts:
      raise ValueError(f"setting {setting!r}: keepP freezes BatchNorm already and affine "
                       "trains only BatchNorm; +nobn goes with dense, sign(P) or rankR")
    overrides["freeze_bn"] = True
  overrides["specialist_form"] = "delta"  # dense and keepP; with --qat the default is sign
  for form in ("affine", "sign"):
    if form in parts:
      overrides["specialist_form"] = form
  if ranks:
    overrides.update(specialist_form="lowrank", delta_rank=int(ranks[0][4:]))
  if signs:
    overrides.update(specialist_form="sign", delta_keep=float(signs[0][4:]) / 100)
  if keeps:
    overrides["delta_keep"] = float(keeps[0][4:]) / 100
    overrides["freeze_bn"] = "bn" not in parts
  if trunks:
    overrides["freeze_stages"] = int(trunks[0][5:])  # fit refuses K beyond the backbone
  if "grow" in parts:
    overrides["delta_ranges"] = "grow"  # TrainConfig refuses it with affine or without QAT
  if "distill" in parts and "teach" in parts:
    raise ValueError(f"setting {setting!r}: +distill and +teach name two teachers; pick one")
  if "distill" in parts:
    overrides["distill_from"] = "flat"
  if "teach" in parts:
    overrides["distill_from"] = os.path.join(_WORK_DIR.value, "dense")
  return overrides


def _config(model_dir: str, **overrides) -> config_lib.TrainConfig:
  return config_lib.TrainConfig(
      model_dir=model_dir, dataset=_DATASET.value, data_dir=_DATA_DIR.value,
      manual_dir=_MANUAL_DIR.value, epochs=_EPOCHS.value,
      specialist_epochs=_SPECIALIST_EPOCHS.value, qat=_QAT.value, seed=_SEED.value,
      steps_per_epoch=_STEPS.value, generalist_init="flat", **overrides)


def run_setting(setting: str, base_dir: str) -> dict:
  """Trains, evaluates and exports one setting over the base (each step once)."""
  overrides = setting_overrides(setting)
  model_dir = os.path.join(_WORK_DIR.value, setting)
  export_dir = os.path.join(_WORK_DIR.value, "exports", setting)
  copy_stages(base_dir, model_dir,
              [s for s in _BASE_STAGES if os.path.isdir(os.path.join(base_dir, s))])
  fit.train(_config(model_dir, stage="specialists", **overrides))
  run = run_lib.Run.open(model_dir, data_dir=_DATA_DIR.value)
  if not runs.is_evaluated(model_dir):
    evaluation.evaluate(run)
  if not os.path.exists(os.path.join(export_dir, "manifest.json")):
    export_lib.export(run, export_dir)
  row = tradeoff_row(setting, model_dir, export_dir)
  row["overrides"] = overrides
  return row


def _check_base_from(model_dir: str) -> None:
  """Refuses a --base_from run that is not this base's recipe (dataset, epochs, seed, the
  generalist initialised from the flat network)."""
  saved = config_lib.load_config(model_dir)
  asked = {"dataset": _DATASET.value, "epochs": _EPOCHS.value, "seed": _SEED.value,
           "generalist_init": "flat"}
  clashes = config_lib.clashes(saved, asked)
  if clashes:
    raise ValueError(f"--base_from={model_dir} is another recipe ({'; '.join(clashes)})")


def _flag_text(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def plot(rows: list[dict], path: str) -> None:
  """Two-stage top-1 against b (log scale), one marker per setting."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    ax.scatter(r["b"], 100 * r["two_stage_top1"], s=30)
    ax.annotate(r["label"], (r["b"], 100 * r["two_stage_top1"]), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
  dense = [r for r in rows if r["label"] == "dense"]
  if dense:
    ax.axhline(100 * (dense[0]["two_stage_top1"] - _TOLERANCE.value), color="gray", ls="--",
               lw=0.8, label=f"dense - {100 * _TOLERANCE.value:.1f} point")
  ax.axvline(_B_GOAL.value, color="gray", ls=":", lw=0.8, label=f"b = {_B_GOAL.value}")
  ax.set_xscale("log")
  ax.set_xlabel("b: one specialist's bundle cost (fp32 networks)")
  ax.set_ylabel("two-stage top-1 (%), hard routing")
  ax.set_title(f"{_DATASET.value}: accuracy per byte of a specialist")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  for i, setting in enumerate(_SETTINGS.value):  # typos and refusals fail before training
    _config(os.path.join(_WORK_DIR.value, setting), stage="specialists",
            **setting_overrides(setting))
    if "teach" in setting.split("+") and "dense" not in _SETTINGS.value[:i]:
      raise ValueError(f"setting {setting!r} learns from the dense specialists: list dense "
                       "before it in --settings")
  start = time.perf_counter()
  base_dir = os.path.join(_WORK_DIR.value, "base")
  if _BASE_FROM.value:
    _check_base_from(_BASE_FROM.value)
    copy_stages(_BASE_FROM.value, base_dir, ["flat", "generalist"])
  fit.train(_config(base_dir, stage="flat"))
  fit.train(_config(base_dir, stage="generalist"))
  rows = [run_setting(setting, base_dir) for setting in _SETTINGS.value]
  dense = next((r for r in rows if r["label"] == "dense"), None)
  for r in rows:
    r["matches_dense"] = (None if dense is None else
                          r["two_stage_top1"] >= dense["two_stage_top1"] - _TOLERANCE.value)
    r["meets_goal"] = bool(r["matches_dense"]) and r["b"] <= _B_GOAL.value
  base = config_lib.load_config(base_dir)
  command = "python bench/delta_frontier.py " + " ".join(
      f"--{name}={_flag_text(flags.FLAGS[name].value)}" for name in (
          "dataset", "manual_dir", "epochs", "specialist_epochs", "qat", "seed",
          "steps_per_epoch", "base_from", "settings", "tolerance", "b_goal")
      if flags.FLAGS[name].present)
  out = {"command": command, "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
         "dataset": _DATASET.value, "epochs": _EPOCHS.value,
         "specialist_epochs": _SPECIALIST_EPOCHS.value, "qat": _QAT.value, "seed": _SEED.value,
         "backbone": base.backbone, "tolerance": _TOLERANCE.value, "b_goal": _B_GOAL.value,
         "runs": rows, "wall_time_s_this_run": round(time.perf_counter() - start, 1)}
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  write_json(_OUT.value + ".json", out)
  plot(rows, _OUT.value + ".png")
  lines = [f"# Compression frontier: {_DATASET.value}, {base.backbone}, {_EPOCHS.value} epochs "
           f"per base network, {_SPECIALIST_EPOCHS.value} per specialist, "
           f"{'QAT' if _QAT.value else 'float'}, seed {_SEED.value}", "",
           f"Command: `{command}`  ", f"Machine: {out['machine']}", "",
           f"The shared base: flat network top-1 {rows[0]['flat_top1']:.2%} on the evaluation "
           "split (every setting's specialists start from the same generalist).", "",
           tradeoff_table(rows),
           f"Goal: b <= {_B_GOAL.value} within {100 * _TOLERANCE.value:.1f} point of the dense "
           "specialists' two-stage top-1. Met by: "
           + (", ".join(r["label"] for r in rows if r["meets_goal"]) or "none") + ".", "",
           f"![frontier]({os.path.basename(_OUT.value)}.png)", ""]
  with open(_OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
