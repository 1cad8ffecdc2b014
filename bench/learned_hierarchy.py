r"""Benchmark: a hierarchy learned from a flat network's confusions against the hand-made one.

  apt-get install dataset-fashion-mnist
  .venv/bin/python bench/learned_hierarchy.py --epochs=2 --seeds=0,1,2 --ks=3,4,5 \
      --image_dir=/work/fmnist_flat_png --work_dir=/work/bench_learned \
      --out=bench/results/learned_hierarchy_e2
  # the same at --epochs=20, one seed an invocation (about 190 minutes a seed on a shared 2-core
  # machine; an interrupted one resumes: finished stages are skipped),
  # --out=/work/e20_results/learned_hierarchy_e20_seed<seed>, copied to bench/results, then
  .venv/bin/python bench/learned_hierarchy.py --out=bench/results/learned_hierarchy_e20 \
      --combine=bench/results/learned_hierarchy_e20_seed0.json,...seed1.json,...seed2.json

The "your own images" route a user without a taxonomy takes, on Fashion-MNIST:
1. The four IDX files written as class folders, <image_dir>/<split>/<class>/<index>.png
   (train and test; no hierarchy, so `folder:` holds 10% of train out as validation, seeded).
2. Per seed, the flat network alone (`--stage=flat`, one superclass), evaluated on the
   validation split; a hierarchy of K superclasses learned from its validation confusions
   for each K (super_sub.hierarchy.learned, HD-CNN's recipe). The test split is never looked at
   until step 4.
3. Super-Sub (generalist from the flat network, one specialist per superclass of >= 2 classes)
   under each learned hierarchy and under the hand-made `fashion_mnist` hierarchy (class names
   made folder-safe: "T-shirt/top" -> "T-shirt_top"). Every Super-Sub run of a seed starts from
   that seed's one flat network (--flat_from: the same network, its outputs reordered to the
   run's class order), so the gains are paired on one flat network and differ only by the
   hierarchy (checked: each run's flat test top-1 is equal, and each run's validation images
   are the flat network's: the folder's hold-out does not depend on the hierarchy).
4. Each run evaluated on the test split: flat and two-stage (hard, generalist router) top-1,
   Super-Sub's gain over flat, the routing loss (oracle specialists - hard) and the share of
   the flat network's test errors that stay inside the true superclass of that hierarchy.

Learned hierarchies are stored under <work_dir>/hierarchies by content, so seeds that learn the
same groups share one prepared dataset. A finished stage is never trained again: re-running
adds seeds or K. Writes <out>.json and <out>.md. Seeds run in separate invocations (or
sessions) become one table with --combine=<out1>.json,<out2>.json,... --out=<out>.
"""

import hashlib
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

from _common import folder_name
from _common import write_fashion_mnist_pngs
from _common import write_results
import super_sub
from super_sub import evaluation
from super_sub.analysis.stats import pct
from super_sub.analysis.stats import seed_stats
from super_sub.analysis.tables import markdown_table
from super_sub.hierarchy import learned
from super_sub.hierarchy import tree
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

_MANUAL_DIR = flags.DEFINE_string("manual_dir", "/usr/share/datasets/fashion-mnist",
                                  "Folder of the four Fashion-MNIST IDX files.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", "/tmp/fmnist_flat_png",
                                 "Where the class folders go (reused if present).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/bench_learned", "Model dirs go here.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per network.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; one flat network and its runs each.")
_KS = flags.DEFINE_list("ks", ["3", "4", "5"], "Superclass counts of the learned hierarchies.")
_OUT = flags.DEFINE_string("out", "bench/results/learned_hierarchy",
                           "Results: <out>.json and <out>.md.")
_COMBINE = flags.DEFINE_list(
    "combine", [], "Results files (<out>.json) of separate invocations with the same epochs and "
    "hierarchies, one seed or more each: written as one table over all their seeds, without "
    "evaluating anything again.")

HAND_MADE = "hand-made"


def store_hierarchy(h: super_sub.Hierarchy, folder: str, stem: str) -> str:
  """Writes `h` as <folder>/<stem>_<digest of its content>.json (once) and returns the path:
  equal hierarchies share a file, and so one prepared dataset."""
  text = json.dumps(h.to_dict(), sort_keys=True)
  path = os.path.join(folder, f"{stem}_{hashlib.sha1(text.encode()).hexdigest()[:10]}.json")
  if not os.path.exists(path):
    os.makedirs(folder, exist_ok=True)
    h.to_json(path)
  return path


def hand_made_hierarchy(folder: str) -> str:
  """The shipped fashion_mnist hierarchy with folder-safe class names, stored."""
  shipped = super_sub.load_hierarchy("fashion_mnist")
  groups = [(sup.name, [(folder_name(s.name), s.source_label) for s in sup.subclasses])
            for sup in shipped.superclasses]
  h = tree.from_groups("fashion_mnist_folders", groups)
  return store_hierarchy(h, folder, "fashion_mnist_folders")


def config(model_dir: str, seed: int, **overrides) -> config_lib.TrainConfig:
  return config_lib.TrainConfig(model_dir=model_dir, dataset=f"folder:{_IMAGE_DIR.value}",
                                data_dir=_DATA_DIR.value, epochs=_EPOCHS.value, seed=seed,
                                **overrides)


def score(model_dir: str) -> dict:
  """Test-split accuracies of a finished Super-Sub run."""
  result = evaluation.evaluate(run_lib.Run.open(model_dir), split="test", log=lambda _: None)
  errors = result["flat"]["errors"]
  return {"flat_top1": result["flat"]["top1"],
          "hard_top1": result["two_stage"]["hard"]["top1"],
          "oracle_top1": result["oracle_specialists"]["top1"],
          "superclass_top1": result["generalist"]["superclass_top1"],
          "gain": result["two_stage"]["hard"]["top1"] - result["flat"]["top1"],
          "routing_loss": (result["oracle_specialists"]["top1"]
                           - result["two_stage"]["hard"]["top1"]),
          "errors_within_superclass": errors["within_superclass"] / errors["total"]}


def run_dir(work: str, name: str) -> str:
  """The model_dir of the Super-Sub run under hierarchy `name`."""
  return os.path.join(work, name.replace(" ", "_").replace("=", ""))


def validation_files(model_dir: str) -> list[bytes]:
  """The file names of a run's validation split, sorted."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = run_lib.Run.open(model_dir).builder
  ds = builder.as_dataset(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
  return sorted(name for name in tfds.as_numpy(ds.map(lambda ex: ex["file_name"])))


def run_seed(seed: int, hierarchies: str) -> dict:
  """The flat network of `seed`, the hierarchies learned from it, and every Super-Sub run."""
  work = os.path.join(_WORK_DIR.value, f"seed{seed}", f"e{_EPOCHS.value}")
  flat_dir = os.path.join(work, "flat_only")
  fit.train(config(flat_dir, seed, stage="flat"))
  flat_run = run_lib.Run.open(flat_dir)
  evaluation.evaluate(flat_run, log=lambda _: None)  # validation: predictions/flat.npz
  out = {"seed": seed, "learned": {}, "runs": {}}
  paths = {HAND_MADE: hand_made_hierarchy(hierarchies)}
  for k in map(int, _KS.value):
    found = learned.from_run(flat_dir, k, name=f"fashion_mnist_learned_k{k}")
    paths[f"learned K={k}"] = store_hierarchy(found.hierarchy, hierarchies, f"learned_k{k}")
    out["learned"][str(k)] = {
        "groups": [[s.name for s in sup.subclasses] for sup in found.hierarchy.superclasses],
        "validation_confusion_within": found.within, "chance": found.chance,
        "validation_errors": found.errors, "hierarchy": paths[f"learned K={k}"]}
  for name, path in paths.items():
    model_dir = run_dir(work, name)
    cfg = config(model_dir, seed, hierarchy=path, flat_from=flat_dir)
    start = time.perf_counter()
    fit.train(cfg)
    out["runs"][name] = {**score(model_dir), "hierarchy": path,
                         # A resumed run counts only what it trained now: each stage's own
                         # time is its metrics.json's wall_time_s_this_run.
                         "wall_s_this_invocation": round(time.perf_counter() - start, 1)}
  flats = {round(r["flat_top1"], 6) for r in out["runs"].values()}
  if len(flats) != 1:
    raise RuntimeError(f"seed {seed}: the copied flat networks disagree on test: {flats}")
  held = validation_files(flat_dir)
  for name in paths:
    if validation_files(run_dir(work, name)) != held:
      raise RuntimeError(f"seed {seed}, {name}: its validation images are not the flat "
                         "network's")
  out["validation_images_shared"] = len(held)
  return out


def summarize(seed_runs: list[dict]) -> dict:
  names = list(seed_runs[0]["runs"])
  keys = ("flat_top1", "hard_top1", "oracle_top1", "superclass_top1", "gain", "routing_loss",
          "errors_within_superclass")
  return {name: {key: seed_stats([r["runs"][name][key] for r in seed_runs]) for key in keys}
          for name in names}


def markdown(result: dict) -> str:
  lines = [f"# A hierarchy learned from confusions against the hand-made one "
           f"(Fashion-MNIST, {result['epochs']} epochs per network)", "",
           f"Command: `{result['command']}`  ", f"Machine: {result['machine']}", ""]
  if "combined_from" in result:
    lines += [f"- seeds {c['seeds']} from `{c['command']}`" for c in result["combined_from"]]
    lines.append("")
  lines += [f"Seeds {result['seeds']}; mean ± standard deviation over them, test split "
            "(10,000 images), percent. Every run of a seed starts from the same flat network.",
            ""]
  lines += markdown_table(
      ["hierarchy", "flat top-1", "Super-Sub top-1 (hard)", "gain over flat",
       "superclass top-1", "routing loss (oracle - hard)", "flat errors inside the superclass"],
      [[name, pct(s["flat_top1"]), pct(s["hard_top1"]), pct(s["gain"], True),
        pct(s["superclass_top1"]), pct(s["routing_loss"]), pct(s["errors_within_superclass"])]
       for name, s in result["summary"].items()])
  lines += ["", "Learned groups (validation confusion inside the groups; random groups of the "
            "same sizes):", ""]
  for r in result["seed_runs"]:
    for k, g in r["learned"].items():
      groups = " | ".join(", ".join(group) for group in g["groups"])
      lines.append(f"- seed {r['seed']}, K={k}: {groups} "
                   f"({100 * g['validation_confusion_within']:.1f} % inside; "
                   f"{100 * g['chance']:.1f} % by chance)")
  return "\n".join(lines) + "\n"


def combine(paths: list[str]) -> dict:
  """One result over the seeds of several results files (e.g. seeds trained in separate
  sessions): their seed runs side by side, summarized again."""
  parts = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        part = json.load(f)
    except (OSError, ValueError) as e:
      raise SystemExit(f"--combine: cannot read {path} ({e}); give the .json files this script "
                       "wrote") from None
    if not isinstance(part, dict) or not {"epochs", "seeds", "seed_runs"} <= part.keys():
      raise SystemExit(f"--combine: {path} is not a results file of this script (it needs "
                       "epochs, seeds and seed_runs)")
    parts.append(part)
  if len({p["epochs"] for p in parts}) != 1:
    raise SystemExit(f"--combine: the files were trained for different epochs: "
                     f"{[p['epochs'] for p in parts]}")
  seed_runs = sorted((r for p in parts for r in p["seed_runs"]), key=lambda r: r["seed"])
  seeds = [r["seed"] for r in seed_runs]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"--combine: a seed appears twice among the files: {seeds}")
  names = {tuple(r["runs"]) for r in seed_runs}
  if len(names) != 1:
    raise SystemExit(f"--combine: the seeds were run under different hierarchies: {names}")
  return {"command": "python bench/learned_hierarchy.py " + " ".join(sys.argv[1:]),
          "machine": "; ".join(sorted({p["machine"] for p in parts})),
          "epochs": parts[0]["epochs"], "seeds": seeds,
          "combined_from": [{"file": path, "command": p["command"], "seeds": p["seeds"]}
                            for path, p in zip(paths, parts)],
          "summary": summarize(seed_runs), "seed_runs": seed_runs}


def main(argv):
  del argv
  if _COMBINE.value:
    result = combine(_COMBINE.value)
    write_results(_OUT.value, result, markdown(result))
    return
  start = time.perf_counter()
  written = write_fashion_mnist_pngs(_MANUAL_DIR.value, _IMAGE_DIR.value, superclass_folders=False)
  hierarchies = os.path.join(_WORK_DIR.value, "hierarchies")
  seed_runs = [run_seed(int(s), hierarchies) for s in _SEEDS.value]
  result = {"command": "python bench/learned_hierarchy.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
            "epochs": _EPOCHS.value, "seeds": [int(s) for s in _SEEDS.value],
            "images_written": written, "wall_s": round(time.perf_counter() - start, 1),
            "summary": summarize(seed_runs), "seed_runs": seed_runs}
  write_results(_OUT.value, result, markdown(result))


if __name__ == "__main__":
  app.run(main)
