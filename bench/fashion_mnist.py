r"""Benchmark on real data: is Super-Sub's gain over a flat network larger than seed noise?

  apt-get install dataset-fashion-mnist
  .venv/bin/python bench/fashion_mnist.py --budgets=2,5,20 --seeds=0,1,2 \
      --work_dir=/work/bench_fmnist --out=bench/results/fashion_mnist_gain

For every budget E (epochs per network, the same for every network, with the warm-up + cosine
schedule) and seed, on Fashion-MNIST with the 0.3M-parameter small_resnet:
  supersub  flat network, generalist initialised from it, one specialist per superclass with
            >= 2 subclasses (tops, footwear); evaluated with every router
            (super_sub.routing.core.ROUTERS): generalist, flat, product;
  wide      the flat network widened to Super-Sub's parameter count (small_resnet_wide, 0.94M
            = generalist + 2 specialists);
  distill   the same flat network and generalist, specialists distilled from the flat
            network (--distill_from=flat, default weight and temperature);
  dustbin   the same flat network and generalist, specialists with a "not mine" class
            trained on 0.5 other-superclass images per own image (--dustbin=0.5);
  scratch   the same flat network, generalist trained from scratch (the paper's recipe),
            specialists from it.
Runs live in <work_dir>/seed<S>/e<E>/<variant>; a finished stage is never trained again, so
the script can be re-run to add budgets, seeds or variants, and each network is trained
once for all of them (distill and scratch copy the supersub run's finished flat, and
distill its generalist); --with_runs joins the runs of earlier reports whose model dirs are
gone (e.g. `--notrain --with_runs=bench/results/fashion_mnist_gain.json`). Writes <out>.json
and <out>.md: mean ± standard deviation over the seeds, each gain paired by seed, and whether
it exceeds the seed-to-seed spread.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from _common import copy_stages
from _common import write_results
from super_sub import evaluation
from super_sub import runs
from super_sub.analysis.stats import pct
from super_sub.analysis.stats import seed_stats
from super_sub.analysis.tables import markdown_table
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.routing import core
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

_BUDGETS = flags.DEFINE_list("budgets", ["2"], "Epochs per network, one experiment each.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; one set of runs each.")
_VARIANTS = flags.DEFINE_list("variants", ["supersub", "wide", "distill", "dustbin", "scratch"],
                              "Which runs to train and evaluate (see the docstring).")
_TRAIN = flags.DEFINE_boolean("train", True, "Train what is missing; with --notrain, report "
                              "only the runs already finished.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/bench_fmnist", "Model dirs go here.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "/usr/share/datasets/fashion-mnist",
                                  "The four Fashion-MNIST IDX files.")
_WITH_RUNS = flags.DEFINE_list(
    "with_runs", [], "Earlier reports of this script (JSON) whose runs join this one's, paired "
    "by seed and budget, so a report can combine runs whose model dirs are gone. Only their "
    "runs of --budgets, --seeds and --variants count; a variant evaluated now replaces theirs.")
_OUT = flags.DEFINE_string("out", "bench/results/fashion_mnist_gain",
                           "Output path without suffix.")

DATASET = "superclassed_fashion_mnist"
VARIANTS = ("supersub", "wide", "distill", "dustbin", "scratch")


def _config(model_dir, epochs, seed, **overrides):
  return config_lib.TrainConfig(model_dir=model_dir, dataset=DATASET, data_dir=_DATA_DIR.value,
                                manual_dir=_MANUAL_DIR.value, epochs=epochs, seed=seed,
                                **overrides)


def _done(model_dir, stages):
  return all(runs.is_done(os.path.join(model_dir, s)) for s in stages)


def _specialists_done(model_dir):
  return (_done(model_dir, ["flat", "generalist"])
          and os.path.isdir(os.path.join(model_dir, runs.SPECIALISTS))
          and all(runs.is_done(folder) for folder in runs.specialist_dirs(model_dir)))


def _flat_top1(run, split):
  """Top-1 of a flat-only run (its model_dir has no generalist)."""
  model = run.load_model(run_lib.FLAT)
  spec = run.evaluation_input(512)
  ds = pipeline.make_dataset(run.builder, split, spec, training=False)
  labels = np.concatenate([y for _, y in tfds.as_numpy(ds)])
  return {"top1": float(np.mean(labels == model.predict(ds, verbose=0).argmax(axis=1))),
          "num_params": int(model.count_params())}


def _two_stage(model_dir):
  run = run_lib.Run.open(model_dir)
  result = evaluation.evaluate(run, log=lambda _: None)
  return {"flat": result["flat"]["top1"], "oracle": result["oracle_specialists"]["top1"],
          "routers": result["routers"],
          "flat_errors": result["flat"]["errors"],
          "num_params": {s.key: run.metrics(s)["num_params"]
                         for s in [run_lib.FLAT, run.generalist, *run.specialists().values()]}}


def run_one(seed, epochs):
  """Trains (unless --notrain) and evaluates the variants of one seed and budget."""
  work = os.path.join(_WORK_DIR.value, f"seed{seed}", f"e{epochs}")
  dirs = {v: os.path.join(work, v) for v in VARIANTS}
  out = {"seed": seed, "epochs": epochs}
  variants = _VARIANTS.value
  if "supersub" in variants:
    if _TRAIN.value:
      fit.train(_config(dirs["supersub"], epochs, seed, generalist_init="flat"))
    if _specialists_done(dirs["supersub"]):
      out["supersub"] = _two_stage(dirs["supersub"])
  if "wide" in variants:
    if _TRAIN.value:
      fit.train(_config(dirs["wide"], epochs, seed, stage="flat",
                        backbone="small_resnet_wide"))
    if _done(dirs["wide"], ["flat"]):
      wide = run_lib.Run.open(dirs["wide"])
      out["wide"] = _flat_top1(wide, wide.evaluation_split)
  for variant, copied, overrides in (
      ("distill", ["flat", "generalist"], dict(generalist_init="flat", stage="specialists",
                                               distill_from="flat")),
      ("dustbin", ["flat", "generalist"], dict(generalist_init="flat", stage="specialists",
                                               dustbin=0.5)),
      ("scratch", ["flat"], dict(generalist_init="scratch"))):
    if variant not in variants:
      continue
    if _TRAIN.value:
      copy_stages(dirs["supersub"], dirs[variant], copied)
      fit.train(_config(dirs[variant], epochs, seed, **overrides))
    if _specialists_done(dirs[variant]):
      out[variant] = _two_stage(dirs[variant])
  return out


def join_runs(runs, reports, budgets, seeds, variants):
  """`runs` with the variants of the same seed and budget from earlier `reports` filled in.

  Each report is a dict as this script writes it; a run evaluated now wins over a stored one.
  """
  joined = {(r["seed"], r["epochs"]): dict(r) for r in runs}
  for name, report in reports:
    for stored in report.get("runs", []):
      if "seed" not in stored or "epochs" not in stored:
        raise ValueError(f"{name}: a run without 'seed' and 'epochs' ({sorted(stored)}); "
                         "expected a report of bench/fashion_mnist.py with --budgets")
      key = (stored["seed"], stored["epochs"])
      if stored["seed"] not in seeds or stored["epochs"] not in budgets:
        continue
      run = joined.setdefault(key, {"seed": key[0], "epochs": key[1]})
      for variant in variants:
        if variant in stored and variant not in run:
          run[variant] = stored[variant]
  return sorted(joined.values(), key=lambda r: (r["epochs"], r["seed"]))


def summarize(runs):
  """Per budget: every model's top-1 over the seeds, and the gains paired by seed."""
  rows = {}  # name -> per-run getter
  rows["flat"] = lambda r: r.get("supersub", {}).get("flat")
  rows["flat, widened (small_resnet_wide)"] = lambda r: r.get("wide", {}).get("top1")
  for variant, label in (("supersub", "Super-Sub"),
                         ("distill", "Super-Sub, distilled specialists"),
                         ("dustbin", "Super-Sub, dustbin specialists"),
                         ("scratch", "Super-Sub, generalist from scratch")):
    for router in core.ROUTERS:
      for mode in ("hard", "soft"):
        rows[f"{label}, {router} router, {mode}"] = (
            lambda r, v=variant, ro=router, m=mode:
            r.get(v, {}).get("routers", {}).get(ro, {}).get(f"{m}_top1"))
    rows[f"{label}: oracle specialists"] = lambda r, v=variant: r.get(v, {}).get("oracle")
  budgets = {}
  for epochs in sorted({r["epochs"] for r in runs}):
    these = [r for r in runs if r["epochs"] == epochs]
    # The routers every Super-Sub run of the budget has (a router head only where trained).
    with_supersub = [r for r in these if "supersub" in r]
    routers = [ro for ro in core.ROUTERS
               if with_supersub and all(ro in r["supersub"]["routers"] for r in with_supersub)]
    table = {}
    for name, get in rows.items():
      stats = seed_stats([get(r) for r in these])
      if stats is None:
        continue
      for base_name in ("flat", "flat, widened (small_resnet_wide)"):
        pairs = [(get(r), rows[base_name](r)) for r in these]
        gain = seed_stats([a - b for a, b in pairs if a is not None and b is not None])
        stats[f"gain_vs_{'wide' if 'widened' in base_name else 'flat'}"] = gain
      flat_err = [1 - rows["flat"](r) for r in these if rows["flat"](r) is not None]
      if flat_err and stats.get("gain_vs_flat"):
        stats["relative_error_reduction"] = stats["gain_vs_flat"]["mean"] / np.mean(flat_err)
      table[name] = stats
    budgets[str(epochs)] = {"seeds": [r["seed"] for r in these], "models": table,
                            "routing_loss": {
                                router: seed_stats([r["supersub"]["oracle"]
                                                - r["supersub"]["routers"][router]["hard_top1"]
                                                for r in these if "supersub" in r])
                                for router in routers},
                            "superclass_top1": {
                                router: seed_stats([r["supersub"]["routers"][router]
                                                ["superclass_top1"]
                                                for r in these if "supersub" in r])
                                for router in routers}}
  return budgets


def _beyond_spread(row, base, gain_key):
  """Whether a mean gain exceeds both arms' seed-to-seed standard deviations (needs 2 seeds)."""
  gain = row.get(gain_key)
  if not gain or base is None or row["std"] is None or base["std"] is None:
    return "n/a"
  return "yes" if gain["mean"] > max(row["std"], base["std"]) else "no"


def markdown(report):
  lines = [f"# Fashion-MNIST: is Super-Sub's gain larger than seed noise? (small_resnet, "
           f"{report['dataset']})", "", f"Command: `{report['command']}`  ",
           f"Machine: {report['machine']}", "",
           "Top-1 on the 10,000 test images, mean ± standard deviation over the seeds (%). "
           "Gains are paired by seed (same flat network and generalist where shared). "
           "'beyond spread': the mean gain exceeds the standard deviation of both arms.", ""]
  for epochs, b in report["budgets"].items():
    models = b["models"]
    flat, wide = models.get("flat"), models.get("flat, widened (small_resnet_wide)")
    lines += [f"## {epochs} epochs per network (seeds {b['seeds']})", ""]
    rows = []
    for name, s in models.items():
      rer = s.get("relative_error_reduction")
      vs_flat, vs_wide = name != "flat", "widened" not in name
      rows.append([
          name, pct(s), s["n"],
          pct(s.get("gain_vs_flat"), True) if vs_flat else "",
          _beyond_spread(s, flat, "gain_vs_flat") if vs_flat else "",
          pct(s.get("gain_vs_wide"), True) if vs_wide and wide else "",
          _beyond_spread(s, wide, "gain_vs_wide") if vs_wide and wide else "",
          "" if rer is None or not vs_flat else f"{100 * rer:.1f} %"])
    lines += markdown_table(["model", "top-1", "n", "gain vs flat", "beyond spread",
                             "gain vs widened flat", "beyond spread",
                             "relative error reduction vs flat"], rows)
    if b["superclass_top1"]:  # runs with Super-Sub in them
      lines += [""] + markdown_table(
          ["router", "superclass top-1", "routing loss (oracle - hard, points)"],
          [[router, pct(b["superclass_top1"][router]), pct(b["routing_loss"][router])]
           for router in b["superclass_top1"]])
    lines.append("")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  bad = set(_VARIANTS.value) - set(VARIANTS)
  if bad:
    raise app.UsageError(f"unknown variants {sorted(bad)}; choose from {VARIANTS}")
  prepare.prepare_dataset(DATASET, _DATA_DIR.value, _MANUAL_DIR.value)
  reports = []  # read before any training, so a bad path fails at once
  for path in _WITH_RUNS.value:
    with open(path) as f:
      reports.append((path, json.load(f)))
  start = time.perf_counter()
  budgets, seeds = [int(e) for e in _BUDGETS.value], [int(s) for s in _SEEDS.value]
  runs = [run_one(seed, epochs) for epochs in budgets for seed in seeds]
  runs = join_runs(runs, reports, budgets, seeds, _VARIANTS.value)
  report = {
      "command": (f"python bench/fashion_mnist.py --budgets={','.join(_BUDGETS.value)} "
                  f"--seeds={','.join(_SEEDS.value)} --variants={','.join(_VARIANTS.value)}"
                  + ("" if _TRAIN.value else " --notrain")
                  + (f" --with_runs={','.join(_WITH_RUNS.value)}" if _WITH_RUNS.value else "")),
      "dataset": DATASET,
      "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
                 f"tensorflow {tf.__version__}",
      "runs": runs, "budgets": summarize(runs),
      "wall_time_s_this_run": round(time.perf_counter() - start, 1),
  }
  write_results(_OUT.value, report, markdown(report))


if __name__ == "__main__":
  app.run(main)
