"""The report's static index.html: numbers and pictures, relative links only, no scripts.

It opens from the file system (no server, nothing fetched from the web) and stays usable
with 1000 classes: the per-subclass tables sit in one collapsed section per superclass.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any, Mapping, Sequence

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.6em; }
.headline { font-size: 1.15em; background: #eef4fb; padding: .6em .9em; border-radius: 6px; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; }
td:first-child, th:first-child, td.name { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.pair { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.pair a { flex: 1 1 480px; }
details { margin: .4em 0; border: 1px solid #ddd; border-radius: 6px; padding: .3em .8em; }
summary { cursor: pointer; font-weight: 600; }
.within { color: #3b75af; } .across { color: #e1812c; } .outside { color: #777; }
.muted { color: #777; }
"""


def _e(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.2f}%"


def _img(path: str, alt: str) -> str:
  src = urllib.parse.quote(path)
  return f'<a href="{src}"><img src="{src}" alt="{_e(alt)}" loading="lazy"></a>'


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
  head = ("" if header is None else
          "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>")
  body = "\n".join("<tr>" + "".join(c if isinstance(c, _Raw) else f"<td>{_e(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
  return f"<table>{head}<tbody>\n{body}\n</tbody></table>"


class _Raw(str):
  """A table cell that is already HTML."""


def _kind(kind: str, text: Any) -> _Raw:
  return _Raw(f'<td class="name {kind}">{_e(text)}</td>')


def render(report: Mapping[str, Any], pictures: Mapping[str, Any], title: str,
           data_files: Sequence[str]) -> str:
  """The page's HTML.

  Args:
    report: the report.json content.
    pictures: {"subclass_confusion", "superclass_confusion", "errors_per_superclass":
      relative path, "superclasses": {name: {"confusion": path or None, "mistakes":
      path or None}}}.
    title: the page title.
    data_files: relative paths of the machine-readable files, linked at the end.
  """
  r, errors = report, report["errors"]
  share = r["within_superclass_share"]
  headline = ("No errors." if not errors["total"] else
              f"<b>{_pct(share)}</b> of the {errors['total']:,} errors stay inside the true "
              f"superclass ({_pct(r['within_superclass_share_chance'])} would if each mistake "
              f"picked a wrong class at random); {errors['across_superclass']:,} cross to "
              f"another superclass" + (f" and {errors['outside_hierarchy']:,} leave the "
                                       f"hierarchy" if r["outside"] is not None else "") + ".")
  summary = [("examples", f"{r['num_examples']:,}"), ("top-1", _pct(r["top1"]))]
  if r["top5"] is not None:
    summary.append(("top-5", _pct(r["top5"])))
  summary += [("superclass top-1", _pct(r["superclass_top1"])),
              ("errors within / across superclass",
               f"{errors['within_superclass']:,} / {errors['across_superclass']:,}")]
  if r["outside"] is not None:
    summary.append(("predictions outside the hierarchy", f"{errors['outside_hierarchy']:,}"))
  if r["num_skipped"]:
    summary.append(("examples skipped (label outside the hierarchy)", f"{r['num_skipped']:,}"))
  if r["multilabel"] is not None:
    ml = r["multilabel"]
    summary += [("multi-label top-1 (labeled examples)", _pct(ml["top1"])),
                ("errors that are acceptable labels", f"{ml['errors_now_correct']['total']:,}")]
  if r["mistake_severity"] is not None:
    sev = r["mistake_severity"]["mean_lca_height"]
    summary.append(("mistake severity (mean LCA height)", "–" if sev is None else f"{sev:.2f}"))
  out = [f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
         f"<meta name=viewport content='width=device-width, initial-scale=1'>"
         f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{_e(title)}</h1>",
         f"<p class=muted>{_e(r['source'])} · hierarchy {_e(r['hierarchy'])}: "
         f"{r['num_superclasses']} superclasses, {r['num_subclasses']} subclasses · "
         f"label space {_e(r['label_space'])}</p>",
         f"<p class=headline>{headline}</p>",
         _table(None, summary),
         "<h2>Subclass confusion, ordered by superclass</h2>",
         "<p>Rows are true classes, columns predictions; the red squares are the superclasses. "
         "Mistakes that stay inside a square are confusions between sibling subclasses.</p>",
         _img(pictures["subclass_confusion"], "subclass confusion matrix"),
         "<h2>Superclasses</h2><div class=pair>",
         _img(pictures["superclass_confusion"], "superclass confusion matrix"),
         _img(pictures["errors_per_superclass"], "errors per superclass"), "</div>",
         _superclass_table(r), "<h2>Most frequent confusions</h2>", _confusions(r)]
  out += _details(r)
  out += _sections(r, pictures)
  out.append("<h2>Files</h2><ul>" + "".join(
      f'<li><a href="{urllib.parse.quote(f)}">{_e(f)}</a></li>' for f in data_files)
      + "</ul></body></html>\n")
  return "\n".join(out)


def _superclass_table(r) -> str:
  ml = r["multilabel"] is not None
  rows = []
  for k, (name, s) in enumerate(r["per_superclass"].items()):
    row = [_Raw(f'<td class=name><a href="#sup{k}">{_e(name)}</a></td>'), s["num_subclasses"],
           f"{s['count']:,}", _pct(s["top1"]), _pct(s["superclass_top1"]),
           s["errors_within"], s["errors_across"]]
    if r["outside"] is not None:
      row.append(s["errors_outside"])
    if ml:
      row.append(_pct(s.get("multilabel_top1")))
    rows.append(row)
  header = ["superclass", "subclasses", "examples", "top-1", "superclass top-1",
            "errors within", "errors across"] + (
                ["errors outside"] if r["outside"] is not None else []) + (
                    ["multi-label top-1"] if ml else [])
  return _table(header, rows)


def _confusions(r) -> str:
  if not r["top_confusions"]:
    return "<p>No mistakes.</p>"
  rows = [[_kind(c["kind"], c["true_name"]), _kind(c["kind"], c["predicted_name"]),
           c["count"], _pct(c["share_of_true"]), c["true_superclass"],
           c["predicted_superclass"], c["kind"]] for c in r["top_confusions"]]
  return _table(["true", "predicted", "count", "of the true class", "true superclass",
                 "predicted superclass", "kind"], rows)


def _details(r) -> list[str]:
  out = []
  if r["outside"] is not None and r["outside"]["count"]:
    out += ["<h2>Predictions outside the hierarchy</h2>",
            f"<p>{r['outside']['count']:,} predictions name a source class that the hierarchy "
            "does not contain. Most frequent:</p>",
            _table(["source label", "name", "count"],
                   [[t["source_label"], "unknown" if t["name"] is None else t["name"],
                     t["count"]] for t in r["outside"]["top_source_predictions"]])]
  if r["multilabel"] is not None:
    ml, now = r["multilabel"], r["multilabel"]["errors_now_correct"]
    out += ["<h2>Multi-labels</h2>",
            f"<p>Over the {ml['labeled_examples']:,} labeled examples ({ml['unlabeled_examples']:,}"
            f" unlabeled), top-1 is {_pct(ml['top1_original'])} with the original labels and "
            f"{_pct(ml['top1'])} when any acceptable label counts. {now['total']:,} errors are "
            f"acceptable labels: {now['within_superclass']:,} within the superclass, "
            f"{now['across_superclass']:,} across, {now['outside_hierarchy']:,} outside. "
            f"{ml['correct_now_wrong']:,} original-label hits are not acceptable.</p>"]
  if r["mistake_severity"] is not None:
    s = r["mistake_severity"]

    def num(x):
      return "–" if x is None else f"{x:.2f}"
    out += ["<h2>Mistake severity</h2>",
            f"<p>Mean height of the lowest common WordNet ancestor of true and predicted class "
            f"over {s['mistakes']:,} mistakes: <b>{num(s['mean_lca_height'])}</b> (within the "
            f"superclass {num(s['within_superclass'])}, across {num(s['across_superclass'])})."
            f"</p>", _table(["LCA height", "mistakes"], list(s["histogram"].items()))]
  return out


def _sections(r, pictures) -> list[str]:
  out = ["<h2>Each superclass</h2>"]
  if pictures.get("note"):
    out.append(f"<p class=muted>{_e(pictures['note'])}</p>")
  subs_of: dict[str, list] = {}
  for s in r["per_subclass"]:
    subs_of.setdefault(s["superclass"], []).append(s)
  opened = " open" if r["num_subclasses"] <= 60 else ""  # small: no need to click
  outside = r["outside"] is not None
  for k, (name, s) in enumerate(r["per_superclass"].items()):
    pics = pictures["superclasses"].get(name, {})
    out.append(f"<details id=sup{k}{opened}><summary>{_e(name)} — {s['num_subclasses']} "
               f"subclasses, top-1 {_pct(s['top1'])}, errors {s['errors_within']} within / "
               f"{s['errors_across']} across</summary>")
    for key, alt in (("confusion", "confusions in the superclass"),
                     ("mistakes", "most frequent mistakes")):
      if pics.get(key):
        out.append(_img(pics[key], f"{name}: {alt}"))
    rows = [[_Raw(f"<td class=name>{_e(c['name'])}</td>"), f"{c['count']:,}", _pct(c["top1"]),
             c["errors_within"], c["errors_across"]] + [c["errors_outside"]] * outside + [
                 "" if c["most_confused_with"] is None else
                 f"{c['most_confused_with']['name']} ({c['most_confused_with']['count']})"]
            for c in subs_of.get(name, [])]
    out.append(_table(["subclass", "examples", "top-1", "errors within", "errors across"]
                      + ["errors outside"] * outside + ["most confused with"], rows))
    out.append("</details>")
  return out
