"""The paper's findings, reproduced from evaluated runs: one page with its numbers and plots.

  from super_sub.analysis import findings
  findings.write_findings("findings/", ["runs/fmnist_seed0", "runs/fmnist_seed1", "runs/demo"])

Each run is a model_dir that `super-sub-eval` has evaluated (eval.json, predictions/). Runs of
one dataset are seeds of one experiment; the page reports their mean and standard deviation:

  (i) misclassifications rarely cross superclasses: the flat network's share of errors that
      stay within the true superclass, against the share if its mistakes fell uniformly on
      the other subclasses (chance);
  (ii) a network trained only on one superclass's subclasses beats one trained on all: each
      superclass's oracle specialist (true superclass given) against the flat network;
  and the headline, Super-Sub against the flat network: hard and soft routing by every router
  (super_sub.routing.core.ROUTERS), the gain with its spread, the relative error reduction,
  the routing loss, and the storage of the deployed bundle as a + b N fp32 networks where the
  run has been exported (model_dir/export, from super-sub-export), else (1 + N) networks;
  and where routing loses: the images the oracle specialists get right and hard routing does
  not, by true and answering superclass, with the share that belongs to one-subclass
  superclasses (whose oracle answer is right by construction) and the flat network's top-1 on
  them (how hard they are for a network that never routes).

Writes index.md, index.html, findings.json and the PNGs into the folder (replaced only if it
is an earlier findings page). The page names runs by their folder's name, never by a path of
the machine that made it, and `rerender` writes it again from findings.json alone (no run
folders needed). Needs numpy, matplotlib and markdown (Python-Markdown), not TensorFlow.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Sequence

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub import runs
from super_sub._internal import files
from super_sub.analysis import loading
from super_sub.analysis import report as report_lib
from super_sub.analysis import stats as stats_lib
from super_sub.analysis import tables
from super_sub.errors import SuperSubError

MARKER = "findings.json"


class FindingsError(SuperSubError, ValueError):
  """No runs to report, or a findings.json that cannot be read back; the message says which."""


def run_names(model_dirs: Sequence[str]) -> list[str]:
  """How the page names runs: each by the shortest end of its path that no other run's path
  ends with (runs/fmnist_s0 -> fmnist_s0; a/seed0/supersub and a/seed1/supersub ->
  seed0/supersub and seed1/supersub), never by a path of the machine that made them."""
  parts = [os.path.normpath(d).replace(os.sep, "/").strip("/").split("/") for d in model_dirs]
  names = []
  for i, mine in enumerate(parts):
    for depth in range(1, len(mine) + 1):
      if all(other[-depth:] != mine[-depth:] for j, other in enumerate(parts) if j != i):
        break
    names.append("/".join(mine[-depth:]))
  return names


def default_command(run_names: Sequence[str]) -> str:
  """The command line the page shows: the runs by name, no path of this machine."""
  return "super-sub-findings --runs=" + ",".join(run_names)


def collect(model_dir: str, run_name: str | None = None) -> dict[str, Any]:
  """One evaluated run's numbers for the findings; `run_name` is how the page names it
  (default: its folder's name).

  Raises:
    FileNotFoundError: the folder is not an evaluated run (no config.json or eval.json).
  """
  for path in (runs.config_path(model_dir), runs.eval_path(model_dir)):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist: {model_dir} is not a run evaluated by "
                              "super-sub-eval (it needs config.json and eval.json)")
  with open(runs.config_path(model_dir), encoding="utf-8") as f:
    config = json.load(f)
  result = runs.read_eval(model_dir)
  h = _hierarchy(result, runs.eval_path(model_dir))
  flat_predictions = loading.read_predictions(runs.predictions_path(model_dir, "flat"))
  flat = report_lib.analyze(flat_predictions, h)
  num_specialists = len(h.specialist_superclasses())
  manifest = os.path.join(runs.export_dir(model_dir), "manifest.json")
  if os.path.exists(manifest):
    from super_sub.bundles import storage  # pylint: disable=import-outside-toplevel
    with open(manifest, encoding="utf-8") as f:
      fit = storage.storage_fit(json.load(f))
    cost = {"a": fit["a"], "b": fit["b"], "source": "exported TFLite bundle"}
  else:
    cost = {"a": 1.0, "b": 1.0, "source": "separate fp32 networks (not exported)"}
  two = result["two_stage"]
  predictions = {name: runs.predictions_path(model_dir, name)
                 for name in ("oracle_specialists", "two_stage_hard")}
  losses = (routing_losses(flat_predictions, loading.read_predictions(predictions[
      "oracle_specialists"]), loading.read_predictions(predictions["two_stage_hard"]), h)
            if all(os.path.exists(p) for p in predictions.values()) else None)
  return {
      "run": run_name or run_names([model_dir])[0], "dataset": result["dataset"], "split": result["split"],
      "seed": config.get("seed"), "epochs": config.get("epochs"),
      "hierarchy": h.name, "num_specialists": num_specialists,
      "flat_top1": result["flat"]["top1"],
      "within_share": flat["within_superclass_share"],
      "within_share_chance": flat["within_superclass_share_chance"],
      "superclasses": h.superclass_names,
      # A one-subclass superclass has no specialist: given its superclass, its answer is sure.
      "with_specialist": [h.superclasses[k].name for k in h.specialist_superclasses()],
      "flat_per_superclass": result["flat_per_superclass"],
      "oracle_per_superclass": result["oracle_specialists"]["per_superclass"],
      "oracle_top1": result["oracle_specialists"]["top1"],
      "generalist_superclass_top1": result["generalist"]["superclass_top1"],
      "hard_top1": two["hard"]["top1"], "soft_top1": two["soft"]["top1"],
      "router": two.get("router", "generalist"),
      "routers": result.get("routers", {}),
      "storage": {**cost, "n": num_specialists, "total": cost["a"] + cost["b"] * num_specialists},
      "where_routing_loses": losses,
  }


def _hierarchy(result: dict[str, Any], where: str) -> hierarchy_lib.Hierarchy:
  """The run's hierarchy: the tree eval.json holds, else its shipped name."""
  if "hierarchy_definition" in result:
    return hierarchy_lib.Hierarchy.from_dict(result["hierarchy_definition"], where=where)
  try:
    return hierarchy_lib.load_hierarchy(result["hierarchy"])
  except hierarchy_lib.HierarchyError:
    raise FindingsError(
        f"{where} names hierarchy {result['hierarchy']!r}, which is not shipped, and does not "
        "hold the tree (an eval.json written before it did): run super-sub-eval on the run "
        "again") from None


def routing_losses(flat: loading.Predictions, oracle: loading.Predictions,
                   hard: loading.Predictions, hierarchy: hierarchy_lib.Hierarchy
                   ) -> dict[str, Any]:
  """Where the routing loss (oracle top-1 minus hard routing's) comes from.

  A lost image is one the oracle specialists get right and hard routing gets wrong; hard
  routing then answered from another superclass (a routed specialist only answers its own
  subclasses), which is where its answer's subclass lies.

  Returns:
    pairs: {"<true> -> <answered>": share of all images} over the pairs that lost any;
    total: the share of images lost (the routing loss as a fraction);
    one_subclass_share: the lost images' share whose true superclass has one subclass: the
      oracle's answer there is the superclass itself, right by construction (None if none
      were lost);
    flat_top1_on_lost: the flat network's top-1 on the lost images (None if none).

  Raises:
    ValueError: the three files do not hold the same examples in the same order.
  """
  for other in (oracle, hard):
    if len(other) != len(flat) or not np.array_equal(other.labels, flat.labels):
      raise ValueError(f"{other.source} and {flat.source} do not hold the same examples in "
                       "the same order (their labels differ)")
  h, labels = hierarchy, flat.labels
  lost = (oracle.predictions == labels) & (hard.predictions != labels)
  true, answered = h.superclass_of[labels[lost]], h.superclass_of[hard.predictions[lost]]
  names = h.superclass_names
  counts = collections.Counter(f"{names[t]} -> {names[a]}" for t, a in zip(true, answered))
  pairs = {key: n / len(labels) for key, n in counts.most_common()}
  one_subclass = np.diff(h.superclass_offsets)[true] == 1
  return {"pairs": pairs, "total": float(lost.mean()) if len(labels) else 0.0,
          "one_subclass_share": float(one_subclass.mean()) if lost.any() else None,
          "flat_top1_on_lost": (float(np.mean(flat.predictions[lost] == labels[lost]))
                                if lost.any() else None)}


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
  """`stats.seed_stats` as findings.json has always kept it: without the values (the runs are
  saved beside them), and with mean and std None where no run has a value (the page and its
  plots read them)."""
  s = stats_lib.seed_stats(values)
  return ({"mean": None, "std": None, "n": 0} if s is None
          else {key: s[key] for key in ("mean", "std", "n")})


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Means and spreads over the runs of one dataset (`collect` results)."""
  first = runs[0]
  gains = [r["hard_top1"] - r["flat_top1"] for r in runs]
  out = {
      "dataset": first["dataset"], "num_runs": len(runs), "seeds": [r["seed"] for r in runs],
      "epochs": sorted({r["epochs"] for r in runs}),
      "finding_i": {"within_share": _stats([r["within_share"] for r in runs]),
                    "chance": _stats([r["within_share_chance"] for r in runs])},
      "finding_ii": {name: {"flat": _stats([r["flat_per_superclass"][name] for r in runs]),
                            "specialist": _stats([r["oracle_per_superclass"][name]
                                                  for r in runs])}
                     for name in first["with_specialist"]},
      "without_specialist": [n for n in first["superclasses"]
                             if n not in first["with_specialist"]],
      "flat_top1": _stats([r["flat_top1"] for r in runs]),
      "oracle_top1": _stats([r["oracle_top1"] for r in runs]),
      "hard_top1": _stats([r["hard_top1"] for r in runs]),
      "soft_top1": _stats([r["soft_top1"] for r in runs]),
      "gain_hard": _stats(gains),
      "relative_error_reduction": _stats(
          [g / (1 - r["flat_top1"]) if r["flat_top1"] < 1 else None
           for g, r in zip(gains, runs)]),
      "routing_loss": _stats([r["oracle_top1"] - r["hard_top1"] for r in runs]),
      "router": first["router"],
      "routers": {name: {key: _stats([r["routers"][name][key] for r in runs
                                      if name in r["routers"]])
                         for key in ("superclass_top1", "hard_top1", "soft_top1",
                                     "routing_loss")}
                  for name in first["routers"]},
      "storage": first["storage"],
      "where_routing_loses": _where_routing_loses(runs),
  }
  return out


def _where_routing_loses(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
  """`routing_losses` over the runs: each pair's mean share (0 in a run that lost none
  there), most first; None unless every run has its predictions."""
  losses = [r.get("where_routing_loses") for r in runs]
  if any(x is None for x in losses):
    return None
  keys = {key for x in losses for key in x["pairs"]}
  pairs = {key: _stats([x["pairs"].get(key, 0.0) for x in losses]) for key in keys}
  return {"pairs": dict(sorted(pairs.items(), key=lambda kv: (-kv[1]["mean"], kv[0]))),
          **{key: _stats([x[key] for x in losses])
             for key in ("total", "one_subclass_share", "flat_top1_on_lost")}}


def _pct(s: dict) -> str:
  return stats_lib.pct(s, missing="n/a")


def markdown(summaries: Sequence[dict[str, Any]], command: str | None = None) -> str:
  """The findings page as Markdown (index.md; index.html renders the same text)."""
  lines = ["# What can we learn from misclassified images? The findings, reproduced", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += ["Mean ± standard deviation over the runs (seeds) of each dataset; percentages.", ""]
  for s in summaries:
    i, st = s["finding_i"], s["storage"]
    lines += [f"## {s['dataset']} ({s['num_runs']} run(s), seeds {s['seeds']}, "
              f"{'/'.join(map(str, s['epochs']))} epochs per network)", "",
              "**Finding (i): misclassifications rarely cross superclasses.** Of the flat "
              f"network's errors, {_pct(i['within_share'])} % stay within the true superclass; "
              f"{_pct(i['chance'])} % would if its mistakes fell on the other subclasses at "
              "random.", "", f"![errors within superclass]({_slug(s)}_errors.png)", "",
              "**Finding (ii): a specialist beats the network trained on all subclasses.** "
              "Top-1 on each superclass's test images:", ""]
    rows = []
    for name, v in s["finding_ii"].items():
      gain = (v["specialist"]["mean"] - v["flat"]["mean"]
              if v["flat"]["mean"] is not None and v["specialist"]["mean"] is not None else None)
      rows.append([name, _pct(v["flat"]), _pct(v["specialist"]),
                   "n/a" if gain is None else f"{100 * gain:+.2f}"])
    lines += tables.markdown_table(["superclass", "flat", "oracle specialist", "gain"], rows)
    if s["without_specialist"]:
      lines += ["", f"({', '.join(s['without_specialist'])}: one subclass each, so no "
                "specialist; the generalist's superclass is the answer.)"]
    lines += ["", f"![per superclass]({_slug(s)}_superclasses.png)", "",
              "**Super-Sub against the flat network.**", ""]
    lines += tables.markdown_table(["model", "top-1"], [
        ["flat", _pct(s["flat_top1"])],
        ["Super-Sub, hard routing", _pct(s["hard_top1"])],
        ["Super-Sub, soft routing", _pct(s["soft_top1"])],
        ["oracle specialists (true superclass)", _pct(s["oracle_top1"])]])
    lines += ["", f"Gain of hard routing over flat: {_pct(s['gain_hard'])} points; relative error "
              f"reduction {_pct(s['relative_error_reduction'])} %; routing loss (oracle minus "
              f"hard) {_pct(s['routing_loss'])} points.", ""]
    if s["routers"]:
      lines += tables.markdown_table(
          ["router", "superclass top-1", "hard top-1", "soft top-1", "routing loss"],
          [[name] + [_pct(r[key]) for key in ("superclass_top1", "hard_top1", "soft_top1",
                                             "routing_loss")]
           for name, r in s["routers"].items()])
      lines.append("")
    lines += _where_routing_loses_lines(s)
    lines += [f"Storage: a + b N = {st['a']:.2f} + {st['b']:.2f} x {st['n']} = "
              f"{st['total']:.2f} fp32 networks ({st['source']}).", ""]
  return "\n".join(lines)


def _where_routing_loses_lines(s: dict, shown: int = 5) -> list[str]:
  where = s["where_routing_loses"]
  if where is None or not where["pairs"]:
    return []
  lines = ["**Where routing loses.** The images the oracle specialists get right and hard "
           f"routing ({s['router']} router) does not, by true superclass and the superclass "
           "that answered, in points of top-1:", ""]
  pairs = list(where["pairs"].items())
  rows = [[key, _pct(v)] for key, v in pairs[:shown]]
  if len(pairs) > shown:
    rest = sum(v["mean"] for _, v in pairs[shown:])
    rows.append([f"{len(pairs) - shown} other pairs", f"{100 * rest:.2f}"])
  rows.append(["all", _pct(where["total"])])
  lines += tables.markdown_table(["true superclass -> answered by", "points"], rows) + [""]
  if s["without_specialist"]:
    lines.append(f"{_pct(where['one_subclass_share'])} % of them are images of one-subclass "
                 f"superclasses ({', '.join(s['without_specialist'])}), which the oracle gets "
                 "right by construction: given the superclass, the answer is sure.")
  lines += [f"The flat network, which never routes, gets {_pct(where['flat_top1_on_lost'])} % "
            "of them right.", ""]
  return lines


def _slug(summary: dict) -> str:
  return files.safe_name(summary["dataset"])


def _plots(folder: str, s: dict) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  def bars(ax, labels, stats, color):
    means = [100 * (x["mean"] or 0) for x in stats]
    errs = [100 * (x["std"] or 0) for x in stats]
    ax.bar(labels, means, yerr=errs, color=color, capsize=4)

  fig, ax = plt.subplots(figsize=(4, 3))
  i = s["finding_i"]
  bars(ax, ["flat network", "chance"], [i["within_share"], i["chance"]], ["#4c72b0", "#bbbbbb"])
  ax.set_ylabel("errors within the true superclass (%)")
  ax.set_ylim(0, 100)
  ax.set_title(s["dataset"], fontsize=9)
  fig.tight_layout()
  fig.savefig(os.path.join(folder, f"{_slug(s)}_errors.png"), dpi=110)
  plt.close(fig)

  names = list(s["finding_ii"])
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 1.5), 3.2))
  for offset, key, color in ((-0.2, "flat", "#bbbbbb"), (0.2, "specialist", "#dd8452")):
    st = [s["finding_ii"][n][key] for n in names]
    ax.bar(x + offset, [100 * (v["mean"] or 0) for v in st], 0.4,
           yerr=[100 * (v["std"] or 0) for v in st], capsize=3, color=color,
           label="flat" if key == "flat" else "oracle specialist")
  ax.set_xticks(x, [n[:14] for n in names], rotation=30, ha="right", fontsize=8)
  lows = [100 * (s["finding_ii"][n][k]["mean"] or 0) for n in names for k in ("flat", "specialist")]
  ax.set_ylim(max(0, min(lows) - 5), 100)
  ax.set_ylabel("top-1 on the superclass (%)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(folder, f"{_slug(s)}_superclasses.png"), dpi=110)
  plt.close(fig)


def write_findings(out_dir: str, model_dirs: Sequence[str], command: str | None = None,
                   overwrite: bool = False) -> list[dict[str, Any]]:
  """Collects the runs, groups them by dataset and writes the page (see the module docstring).

  Args:
    out_dir: the page's folder.
    model_dirs: evaluated runs.
    command: the command line the page shows (default: `default_command` of the runs).
    overwrite: replace out_dir even when it is not an earlier findings page.

  Raises:
    FindingsError: no runs given.
    FileNotFoundError: a folder that is not an evaluated run.
    files.OutputDirError: out_dir exists and is not an earlier findings page.
  """
  if not model_dirs:
    raise FindingsError("give at least one evaluated run (a model_dir with eval.json)")
  files.check_replaceable(out_dir, "findings", MARKER, overwrite=overwrite)
  groups: dict[str, list[dict]] = {}
  for model_dir, name in zip(model_dirs, run_names(model_dirs)):
    run = collect(model_dir, name)
    groups.setdefault(run["dataset"], []).append(run)
  summaries = [summarize(runs) for runs in groups.values()]
  runs = [r for runs in groups.values() for r in runs]
  if command is None:
    command = default_command([r["run"] for r in runs])
  _write_page(out_dir, summaries, runs, command, overwrite)
  return summaries


def rerender(out_dir: str, findings_json: str, overwrite: bool = False
             ) -> list[dict[str, Any]]:
  """Writes the page again from a saved findings.json (or the page folder holding one),
  without the runs' folders: after a change of the page's layout, or on another machine.
  Runs are named by their folder's name, also where an older findings.json kept paths.

  Raises:
    FileNotFoundError: no findings.json there.
    FindingsError: the file is not a findings.json that super-sub wrote.
    files.OutputDirError: out_dir exists and is not an earlier findings page.
  """
  path = (os.path.join(findings_json, MARKER) if os.path.isdir(findings_json)
          else findings_json)
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
    raise FindingsError(f"{path} is not valid UTF-8 JSON ({e})") from None
  if (not isinstance(saved, dict) or not isinstance(saved.get("datasets"), list)
      or not saved["datasets"] or not isinstance(saved.get("runs", []), list)
      or not all(isinstance(r, dict) for r in saved.get("runs", []))):
    raise FindingsError(f"{path} is not a findings.json written by super-sub-findings (it "
                        "needs a non-empty 'datasets' list)")
  files.check_replaceable(out_dir, "findings", MARKER, overwrite=overwrite)
  runs = [dict(r) for r in saved.get("runs", [])]
  # findings.json files written before runs were named kept each run's path instead.
  located = [r for r in runs if "model_dir" in r]
  for r, name in zip(located, run_names([str(r["model_dir"]) for r in located])):
    r["run"] = r.get("run", name)
    del r["model_dir"]
  summaries = saved["datasets"]
  try:
    _write_page(out_dir, summaries, runs, default_command([r.get("run", "?") for r in runs]),
                overwrite)
  except (KeyError, TypeError, ValueError) as e:
    raise FindingsError(f"{path}: a summary lacks what the page shows ({type(e).__name__}: "
                        f"{e})") from None
  return summaries


def _write_page(out_dir: str, summaries: Sequence[dict[str, Any]],
                runs: Sequence[dict[str, Any]], command: str | None, overwrite: bool) -> None:
  """index.md, index.html, the PNGs and findings.json, written into out_dir at once."""
  text = markdown(summaries, command)
  with files.atomic_dir(out_dir, "findings", MARKER, overwrite=overwrite) as folder:
    for s in summaries:
      _plots(folder, s)
    with open(os.path.join(folder, "index.md"), "w", encoding="utf-8") as f:
      f.write(text)
    with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as f:
      f.write(_html(text))
    files.write_json(os.path.join(folder, MARKER),
                     {"command": command, "datasets": list(summaries), "runs": list(runs)})


def _html(markdown_text: str) -> str:
  """The page's Markdown as one HTML page (Python-Markdown, with its tables extension)."""
  import markdown as markdown_lib  # pylint: disable=import-outside-toplevel
  body = markdown_lib.markdown(markdown_text, extensions=["tables"])
  style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
           "td,th{border:1px solid #ccc;padding:2px 8px}table{border-collapse:collapse}")
  return ("<!doctype html><html><head><meta charset='utf-8'><title>super-sub findings</title>"
          f"<style>{style}</style></head><body>\n" + body + "\n</body></html>\n")
