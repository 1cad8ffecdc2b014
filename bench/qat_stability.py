r"""Benchmark: do QAT specialists at 224 px train without diverging? Counts divergences over
many short seeded runs.

  .venv/bin/python bench/qat_stability.py --seeds=0-9 --trunks=frozen,trainable \
      --work_dir=/work/qat_stability --out=bench/results/qat_stability

The setting that diverged (super-sub-train --backbone=mobilenet_v2 --image_size=224 --epochs=1
--batch_size=16 --qat --freeze_stages=3, MobileNetV2 from random weights): on an ImageNet-shaped
tree made offline (bench/imagenet_shaped.py; one JPEG per class of the superclassed_imagenet
hierarchy, built by the real builder), per trunk setting
  frozen     --freeze_stages=3 (stem and stages 1-3 shared with the generalist)
  trainable  --freeze_stages=0
the flat network, generalist and QAT generalist are trained once (seed 0), then for every seed
the sign specialists (--qat's default form) of small superclasses (--superclasses, default
the three smallest with a specialist and at least 3 steps an epoch) are trained from them, each
seed in its own run folder. A run whose specialist stops with NonFiniteError counts as a
divergence (its stage, step and message are kept); every other specialist's final loss is
reported. --deterministic runs every stage bit-reproducibly, so a divergence can be replayed
by the command the result names. Goal: 0 divergences in at least 20 runs.
Writes <out>.json and <out>.md.
"""

import os
import platform
import shutil
import sys
import time

from absl import app
from absl import flags
import numpy as np

from _common import copy_stages
from _common import write_results
from imagenet_shaped import make_tree
from super_sub.analysis.tables import markdown_table
from super_sub import runs
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import guards

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/qat_stability",
                                "The ILSVRC2012 tree, TFDS data and run folders (reused).")
_SEEDS = flags.DEFINE_string("seeds", "0-9", "Specialist seeds: a range a-b or a list.")
_TRUNKS = flags.DEFINE_list("trunks", ["frozen", "trainable"], "Trunk settings (docstring).")
_SUPERCLASSES = flags.DEFINE_list("superclasses", [], "Superclass indices whose specialists "
                                  "train; default: the three smallest with a specialist.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size of every stage.")
_DETERMINISTIC = flags.DEFINE_boolean("deterministic", True, "Bit-reproducible stages.")
_MIXED = flags.DEFINE_boolean("mixed_precision", False, "Every stage in mixed precision.")
_JIT = flags.DEFINE_boolean("jit_compile", False, "Every stage's step XLA-compiled.")
_OUT = flags.DEFINE_string("out", "bench/results/qat_stability", "Results path, no suffix.")

TRUNKS = {"frozen": 3, "trainable": 0}


def parse_seeds(text: str) -> list[int]:
  if "-" in text:
    first, last = text.split("-")
    return list(range(int(first), int(last) + 1))
  return [int(s) for s in text.split(",")]


def config(model_dir: str, trunk: str, seed: int, **overrides) -> config_lib.TrainConfig:
  root = _WORK_DIR.value
  return config_lib.TrainConfig(
      model_dir=model_dir, dataset="superclassed_imagenet",
      manual_dir=os.path.join(root, "ILSVRC2012"), data_dir=os.path.join(root, "tfds"),
      backbone="mobilenet_v2", image_size=224, epochs=1, batch_size=_BATCH.value, qat=True,
      freeze_stages=TRUNKS[trunk], seed=seed, deterministic=_DETERMINISTIC.value,
      mixed_precision=_MIXED.value, jit_compile=_JIT.value, **overrides)


def smallest_superclasses(builder, batch_size: int, count: int = 3) -> list[int]:
  """The `count` superclasses with a specialist (>= 2 subclasses) and the fewest images among
  those of at least 3 steps an epoch: the divergence needs two Adam updates before a third
  step (bench/results/qat_divergence.md)."""
  h = builder.hierarchy
  images = pipeline.superclass_counts(builder, "train")
  long_enough = [k for k in h.specialist_superclasses() if images[k] > 2 * batch_size]
  return sorted(long_enough, key=lambda k: (images[k], k))[:count]


def one_seed(base_dir: str, trunk: str, seed: int, superclasses: list[int]) -> dict:
  """Trains the specialists of `superclasses` with `seed` on a copy of the base run."""
  model_dir = os.path.join(_WORK_DIR.value, trunk, f"seed{seed}")
  copy_stages(base_dir, model_dir, ["flat", "generalist", "generalist_qat"])
  cfg = config(model_dir, trunk, seed, stage="specialists", specialists=tuple(superclasses))
  start = time.perf_counter()
  try:
    fit.train(cfg, log=lambda _: None)
    outcome = {"diverged": False}
  except guards.NonFiniteError as e:
    outcome = {"diverged": True, "error": str(e).splitlines()[0]}
  outcome["wall_s"] = round(time.perf_counter() - start, 1)
  outcome["final_loss"] = {
      os.path.basename(folder): runs.read_metrics(folder)["final"].get("loss")
      for folder in runs.specialist_dirs(model_dir) if runs.is_done(folder)}
  outcome.update(seed=seed, model_dir=model_dir)
  return outcome


def markdown(result: dict) -> str:
  lines = ["# QAT sign specialists at 224 px: divergences over seeded runs", "",
           f"Command: `{result['command']}`  ", f"Machine: {result['machine']}", "",
           f"MobileNetV2 from random weights, 1 epoch per stage, batch {result['batch_size']}, "
           f"deterministic {result['deterministic']}, mixed precision "
           f"{result['mixed_precision']}, XLA {result['jit_compile']}; specialists of superclasses "
           f"{result['superclasses']} (images: {result['superclass_images']}).", ""]
  rows = []
  for trunk, r in result["trunks"].items():
    losses = [v for s in r["seeds"] for v in s["final_loss"].values() if v is not None]
    rows.append([trunk, len(r["seeds"]), sum(s["diverged"] for s in r["seeds"]),
                 f"{min(losses):.3f}-{max(losses):.3f}" if losses else "",
                 f"{np.median([s['wall_s'] for s in r['seeds']]):.0f}"])
  lines += markdown_table(["trunk", "runs", "diverged", "specialists' final loss",
                           "median s a run"], rows)
  for trunk, r in result["trunks"].items():
    for s in r["seeds"]:
      if s["diverged"]:
        lines.append(f"- {trunk}, seed {s['seed']}: {s['error']}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  root = _WORK_DIR.value
  make_tree(os.path.join(root, "ILSVRC2012"), train_images=289, validation_images=289)
  seeds = parse_seeds(_SEEDS.value)
  builder = prepare.prepare_dataset("superclassed_imagenet", data_dir=os.path.join(root, "tfds"),
                            manual_dir=os.path.join(root, "ILSVRC2012"))
  superclasses = ([int(k) for k in _SUPERCLASSES.value] if _SUPERCLASSES.value
                  else smallest_superclasses(builder, _BATCH.value))
  images = pipeline.superclass_counts(builder, "train")
  result = {"command": "python bench/qat_stability.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
            "batch_size": _BATCH.value, "deterministic": _DETERMINISTIC.value,
            "mixed_precision": _MIXED.value, "jit_compile": _JIT.value,
            "superclasses": superclasses,
            "superclass_images": [int(images[k]) for k in superclasses], "trunks": {}}
  for trunk in _TRUNKS.value:
    base_dir = os.path.join(root, trunk, "base")
    for stage in ("flat", "generalist"):  # with --qat, "generalist" adds generalist_qat
      fit.train(config(base_dir, trunk, 0, stage=stage), log=lambda _: None)
    seeds_out = []
    for seed in seeds:
      outcome = one_seed(base_dir, trunk, seed, superclasses)
      print(f"{trunk} seed {seed}: {'DIVERGED ' + outcome['error'] if outcome['diverged'] else 'ok'}"
            f" ({outcome['wall_s']} s)", flush=True)
      seeds_out.append(outcome)
      if not outcome["diverged"]:
        shutil.rmtree(outcome["model_dir"])  # a run that finished is not needed again
    result["trunks"][trunk] = {"freeze_stages": TRUNKS[trunk], "seeds": seeds_out}
  write_results(_OUT.value, result, markdown(result))


if __name__ == "__main__":
  app.run(main)
