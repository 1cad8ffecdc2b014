r"""Routing levers without training, on finished runs: does any of them shrink the routing loss?

  runs=/work/bench_fmnist/seed0/e20/supersub,/work/bench_fmnist/seed1/e20/supersub
  .venv/bin/python bench/routing_levers.py --runs=$runs,/work/bench_fmnist/seed2/e20/supersub \
      --out=bench/results/routing_levers_fmnist_e20

Each run's flat network, generalist and specialists score the evaluation split once, on the
images as they are and mirrored left-right; every setting then routes those logits through
super_sub.routing.core (the code every router runs), so the settings differ only in what they
are meant to:
  temperature T  soft routing (k=2) on the generalist's logits / T (T = 1 is the default). The
                 runs have no held-out split (every training image trained them), so T is
                 reported for each value, and the best one is chosen on the test images: an
                 upper bound on what calibration could buy.
  flip           test-time augmentation: every network's probabilities averaged over the image
                 and its mirror, the flat network's too, so the gain is paired fairly.
Writes <out>.json and <out>.md: mean ± standard deviation over the runs (seeds), gains over
the flat network paired by run, superclass top-1 and routing loss (oracle minus hard).
"""

import platform
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from _common import write_results
from super_sub.analysis.stats import pct
from super_sub.analysis.stats import seed_stats
from super_sub.analysis.tables import markdown_table
from super_sub.data import pipeline
from super_sub.routing import core
from super_sub.training import run as run_lib

_RUNS = flags.DEFINE_list("runs", None, "Evaluated Super-Sub model dirs (seeds of one "
                          "experiment).", required=True)
_TEMPERATURES = flags.DEFINE_list("temperatures", ["1", "1.5", "2", "3"],
                                  "Generalist temperatures for soft routing.")
_OUT = flags.DEFINE_string("out", "bench/results/routing_levers", "Output path without suffix.")


def logits_of(model_dir, batch_size=512):
  """The run's hierarchy, {(name, flip): logits [N, C]} of every network ("flat",
  "generalist", and each specialist's superclass index) on the images (flip False) and their
  mirrors (True), and the labels [N]."""
  run = run_lib.Run.open(model_dir)
  models = {"flat": run.load_model(run_lib.FLAT), "generalist": run.load_model(run.generalist),
            **{k: run.load_model(s) for k, s in run.specialists().items()}}
  ds = pipeline.make_dataset(run.builder, run.evaluation_split,
                             run.evaluation_input(batch_size), training=False)
  parts, labels = {}, []
  for images, y in tfds.as_numpy(ds):
    labels.append(y)
    for name, model in models.items():
      for flip, x in ((False, images), (True, images[:, :, ::-1])):  # NHWC: mirror the width
        parts.setdefault((name, flip), []).append(model.predict_on_batch(x))
  return run.hierarchy, {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(labels)


def _averaged(logits, name, flip):
  """Log of the probabilities, averaged with the mirror's when `flip`."""
  probs = core.softmax(logits[name, False])
  if flip:
    probs = (probs + core.softmax(logits[name, True])) / 2
  return np.log(np.maximum(probs, np.finfo(np.float32).tiny))


def evaluate(hierarchy, logits, labels, temperatures):
  """One run's top-1 of every setting."""
  index = np.arange(len(labels))[:, None]  # the "images": each row looks its logits up
  supers = hierarchy.superclass_of[labels]
  out = {}
  for flip in (False, True):
    tag = ", flip" if flip else ""
    specialist_logits = {k: _averaged(logits, k, flip) for k, f in logits
                         if isinstance(k, int) and not f}
    specialists = lambda sup, idx, s=specialist_logits: s[sup][idx[:, 0]]  # noqa: E731
    general = _averaged(logits, "generalist", flip)
    out[f"flat{tag}"] = float(np.mean(_averaged(logits, "flat", flip).argmax(1) == labels))
    oracle = core.oracle(index, supers, hierarchy, specialists)
    out[f"oracle{tag}"] = float(np.mean(oracle["label"] == labels))
    for t in temperatures:
      generalist = lambda idx, g=general, t=t: g[idx[:, 0]] / t  # noqa: E731
      for mode in ("hard", "soft"):
        if mode == "hard" and t != 1:
          continue  # the argmax does not depend on T
        got = core.predict(index, hierarchy, generalist, specialists, mode=mode, k=2)
        out[f"{mode}{'' if mode == 'hard' else f', T={t:g}'}{tag}"] = float(
            np.mean(got["label"] == labels))
        if mode == "hard":
          out[f"superclass top-1{tag}"] = float(np.mean(got["superclass"] == supers))
  return out


def summarize(per_run):
  """Mean ± std of every setting over the runs, gains paired with the flat network of the
  same flip setting, and routing losses."""
  rows = {}
  for key in per_run[0]:
    flat_key = "flat, flip" if key.endswith(", flip") else "flat"
    oracle_key = "oracle, flip" if key.endswith(", flip") else "oracle"
    row = seed_stats([r[key] for r in per_run])
    if not key.startswith(("flat", "superclass")):
      row["gain_vs_flat"] = seed_stats([r[key] - r[flat_key] for r in per_run])
      row["relative_error_reduction"] = row["gain_vs_flat"]["mean"] / np.mean(
          [1 - r[flat_key] for r in per_run])
    if key.startswith("hard"):
      row["routing_loss"] = seed_stats([r[oracle_key] - r[key] for r in per_run])
    rows[key] = row
  return rows


def markdown(report):
  lines = ["# Routing levers without training (temperature, flip test-time augmentation)", "",
           f"Command: `{report['command']}`  ", f"Machine: {report['machine']}", "",
           f"Runs: {', '.join(report['runs'])}", "",
           "Top-1 on the evaluation split, mean ± standard deviation over the runs (%). Gains "
           "are paired by run, against the flat network with the same flip setting.", ""]
  rows = []
  for key, s in report["settings"].items():
    if key.startswith("superclass"):
      continue
    gain = s.get("gain_vs_flat")
    rer = "" if gain is None else f"{100 * s['relative_error_reduction']:.1f} %"
    rows.append([key, pct(s), pct(gain, True) if gain else "", rer,
                 pct(s["routing_loss"]) if "routing_loss" in s else ""])
  lines += markdown_table(
      ["setting", "top-1", "gain vs flat", "relative error reduction", "routing loss"], rows)
  lines += [""] + markdown_table(
      ["flip", "generalist superclass top-1"],
      [["yes" if "flip" in key else "no", pct(report["settings"][key])]
       for key in ("superclass top-1", "superclass top-1, flip")])
  soft = {k: s for k, s in report["settings"].items() if k.startswith("soft") and "flip" not in k}
  best = max(soft, key=lambda k: soft[k]["mean"])
  lines += ["", f"Best temperature on the test images (an upper bound; no held-out split): "
            f"`{best}`, {pct(soft[best]['gain_vs_flat'], True)} points over flat, against "
            f"{pct(soft['soft, T=1']['gain_vs_flat'], True)} at T = 1.", ""]
  return "\n".join(lines)


def main(argv):
  del argv
  temperatures = [float(t) for t in _TEMPERATURES.value]
  if 1.0 not in temperatures:
    raise app.UsageError("--temperatures must include 1 (the default the others are compared "
                         "with)")
  per_run = []
  for model_dir in _RUNS.value:
    hierarchy, logits, labels = logits_of(model_dir)
    per_run.append(evaluate(hierarchy, logits, labels, temperatures))
  report = {"command": "python bench/routing_levers.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, tensorflow {tf.__version__}",
            "runs": _RUNS.value, "per_run": per_run, "settings": summarize(per_run)}
  write_results(_OUT.value, report, markdown(report))


if __name__ == "__main__":
  app.run(main)
