"""The report's pictures (PNG): block confusion matrices, errors per superclass, mistake grids.

Figures are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure`, never
pyplot, so a report changes no global backend and leaks no figures. Confusion colours are
the share of the true class's examples on a log scale: the diagonal and the rare mistakes
are both visible, and zero is white.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib
from matplotlib import colors
from matplotlib import patches
from matplotlib.figure import Figure
import numpy as np

from super_sub import hierarchy as hierarchy_lib

NAMED_LIMIT = 60    # up to this many classes a matrix shows every class name
MAX_CELLS = 300     # larger matrices are binned to at most about this many rows
KIND_COLOURS = {"within": "#3b75af", "across": "#e1812c", "outside": "#8c8c8c"}
DPI = 110


def _cmap():
  return matplotlib.colormaps["viridis"].with_extremes(bad="white")


def _rates(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
  """Counts / row totals, with zeros masked (drawn white)."""
  rates = counts / np.maximum(totals, 1)[:, None]
  return np.ma.masked_where(counts == 0, rates)


def _norm(rates: np.ma.MaskedArray) -> colors.LogNorm:
  low = rates.min() if rates.count() else 1e-3
  return colors.LogNorm(vmin=min(max(float(low), 1e-4), 0.5), vmax=1.0)


def _save(fig: Figure, path: str, tight: bool = True) -> None:
  """Writes a PNG; `tight` crops to the drawn content (one more draw: for small figures)."""
  fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight" if tight else None,
              pad_inches=0.15, pil_kwargs={"compress_level": 3})


def _text_width(labels: Sequence[str], font: float) -> float:
  """Inches taken by the longest label: an estimate, so no layout pass (a full draw) is needed."""
  return max((len(x) for x in labels), default=0) * font * 0.62 / 72


def _matrix(rates: np.ma.MaskedArray, *, row_labels: Sequence[str] | None,
            col_labels: Sequence[str] | None, font: float, cell: float, title: str,
            xlabel: str, ylabel: str, bar_label: str):
  """A figure with a log-coloured matrix laid out in absolute inches, and its colour bar.

  Returns (figure, axes, norm). Margins come from the label lengths, so saving needs no
  bbox_inches="tight" (which costs a second draw: ~0.3 s per picture).
  """
  rows, cols = rates.shape
  width = min(9.0, max(3.0, cols * cell))
  height = min(9.0, max(3.0, rows * cell))
  left = 0.55 + (_text_width(row_labels, font) if row_labels else 0.35)
  bottom = 0.55 + (_text_width(col_labels, font) if col_labels else 0.35)
  top = 0.55 + 0.2 * (title.count("\n") + 1)
  right = 1.5
  fw, fh = left + width + right, bottom + height + top
  fig = Figure(figsize=(fw, fh))
  ax = fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))
  norm = _norm(rates)
  image = ax.imshow(rates, cmap=_cmap(), norm=norm, interpolation="nearest", aspect="auto")
  cax = fig.add_axes(((left + width + 0.15) / fw, bottom / fh, 0.18 / fw, height / fh))
  decades = [10.0 ** -e for e in range(5)]
  steps = decades if norm.vmin < 0.005 else [d * f for d in decades for f in (1, 0.5, 0.2)]
  ticks = [t for t in steps if t >= norm.vmin * 0.999] or [1.0]
  bar = fig.colorbar(image, cax=cax, ticks=ticks)
  bar.ax.minorticks_off()
  bar.ax.set_yticklabels([f"{100 * t:g}%" for t in ticks], fontsize=8)  # no slow mathtext
  bar.set_label(bar_label, fontsize=9)
  if row_labels is not None:
    ax.set_yticks(range(rows), row_labels, fontsize=font)
  if col_labels is not None:
    ax.set_xticks(range(cols), col_labels, fontsize=font, rotation=90)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=11)
  return fig, ax, norm


def _short(names: Sequence[str], width: int = 24) -> list[str]:
  return [textwrap.shorten(s, width, placeholder="…") for s in names]


def bins(hierarchy: hierarchy_lib.Hierarchy, max_cells: int = MAX_CELLS) -> np.ndarray:
  """int [n]: the display cell of each subclass; cells never straddle two superclasses."""
  sizes = np.diff(hierarchy.superclass_offsets)
  per_cell = max(1, int(np.ceil(hierarchy.num_subclasses / max_cells)))
  cells = np.maximum(1, np.ceil(sizes / per_cell)).astype(np.int64)
  first = np.concatenate([[0], np.cumsum(cells)[:-1]])
  k = hierarchy.superclass_of
  return first[k] + hierarchy.index_in_superclass * cells[k] // sizes[k]


def subclass_confusion(path: str, confusion: np.ndarray, hierarchy: hierarchy_lib.Hierarchy,
                       has_outside: bool, title: str) -> dict:
  """The whole subclass confusion matrix, ordered by superclass, superclass blocks outlined.

  More than MAX_CELLS classes are summed into cells of neighbouring subclasses of one
  superclass. Returns {"cells": number of rows drawn, "classes_per_cell": max}.
  """
  n = hierarchy.num_subclasses
  cell = bins(hierarchy)
  m = int(cell.max()) + 1
  onehot = np.zeros((m, n))
  onehot[cell, np.arange(n)] = 1
  counts = onehot @ confusion[:, :n] @ onehot.T
  if has_outside:
    counts = np.concatenate([counts, onehot @ confusion[:, n:]], axis=1)
  rates = _rates(counts, onehot @ confusion.sum(axis=1))
  edges = np.concatenate([[0], np.cumsum(np.bincount(hierarchy.superclass_of[
      np.unique(cell, return_index=True)[1]], minlength=hierarchy.num_superclasses))])
  per_cell = int(np.bincount(cell).max())
  note = "" if per_cell == 1 else f"\n(each cell sums up to {per_cell} neighbouring subclasses)"
  named = m == n and n <= NAMED_LIMIT
  names = _short(hierarchy.subclass_names) if named else None
  sup = _short(hierarchy.superclass_names, 20)
  font = 8 if (n if named else len(sup)) <= 30 else 6
  fig, ax, _ = _matrix(
      rates, row_labels=names, font=font, cell=(0.3 if n <= 30 else 0.2) if named else 9.0 / m,
      col_labels=names + ["outside"] * has_outside if named else None, title=title + note,
      xlabel="predicted class", ylabel="true class",
      bar_label="share of the true class's examples (log scale)")
  centres = (edges[:-1] + edges[1:]) / 2 - 0.5
  if named:  # superclass names above their blocks
    top = ax.secondary_xaxis("top")
    top.set_xticks(centres, sup, fontsize=font + 1, fontweight="bold")
    top.tick_params(length=0)
  else:  # superclass names at the centre of their blocks
    ax.set_xlim(-0.5, m + has_outside - 0.5)
    ax.set_yticks(centres, sup, fontsize=font)
    ax.set_xticks(list(centres) + [m] * has_outside, sup + ["outside"] * has_outside,
                  fontsize=font, rotation=90)
    ax.tick_params(length=0)
  if named:
    ax.set_title(title + note, fontsize=11, pad=22)
  _outline_blocks(ax, edges, m, has_outside)
  _save(fig, path, tight=False)
  return {"cells": m, "classes_per_cell": per_cell}


def _outline_blocks(ax, edges: np.ndarray, size: int, has_outside: bool) -> None:
  for a, b in zip(edges[:-1], edges[1:]):
    ax.add_patch(patches.Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False,
                                   edgecolor="#d62728", linewidth=1.4))
  for e in edges[1:-1]:
    ax.axhline(e - 0.5, color="#bbbbbb", linewidth=0.5)
    ax.axvline(e - 0.5, color="#bbbbbb", linewidth=0.5)
  if has_outside:
    ax.axvline(size - 0.5, color="black", linewidth=1.0)


def superclass_confusion(path: str, counts: np.ndarray, row_names: Sequence[str],
                         column_names: Sequence[str], title: str) -> None:
  """The superclass confusion matrix, with counts written in the cells when they fit."""
  k, c = counts.shape
  rates = _rates(counts, counts.sum(axis=1))
  named = c <= NAMED_LIMIT
  font = 9 if c <= 20 else 6
  fig, ax, norm = _matrix(
      rates, row_labels=_short(row_names, 20) if named else None,
      col_labels=_short(column_names, 20) if named else None, font=font,
      cell=0.55 if c <= 20 else 9.0 / c, title=title, xlabel="predicted superclass",
      ylabel="true superclass", bar_label="share of the true superclass's examples (log)")
  if c <= 20:
    for (i, j), v in np.ndenumerate(counts):
      if v:
        dark = norm(rates[i, j]) > 0.6  # viridis is light at its top end
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7 if c > 12 else 9,
                color="black" if dark else "white")
  if c > k:
    ax.axvline(k - 0.5, color="black", linewidth=1.0)
  _save(fig, path, tight=False)


def superclass_block(path: str, confusion: np.ndarray, hierarchy: hierarchy_lib.Hierarchy,
                     k: int, has_outside: bool) -> None:
  """One superclass: its subclasses against each other, plus 'other superclasses'."""
  r = hierarchy.subclass_range(k)
  n = hierarchy.num_subclasses
  block = confusion[r.start:r.stop, r.start:r.stop]
  rest = confusion[r.start:r.stop, :n].sum(axis=1) - block.sum(axis=1)
  extra = [rest[:, None]] + ([confusion[r.start:r.stop, n:]] if has_outside else [])
  counts = np.concatenate([block] + extra, axis=1)
  rates = _rates(counts, confusion[r.start:r.stop].sum(axis=1))
  size = len(r)
  tail = ["other superclasses"] + (["outside"] if has_outside else [])
  named = size <= NAMED_LIMIT
  names = _short(hierarchy.subclass_names[r.start:r.stop]) if named else None
  fig, ax, _ = _matrix(
      rates, row_labels=names, col_labels=names + tail if named else None,
      font=8 if size <= 30 else 6, cell=0.2 if named else 7.0 / size,
      title=f"{hierarchy.superclass_names[k]}: confusions among its {size} subclasses",
      xlabel="predicted subclass" + ("" if named else " (index within the superclass)"),
      ylabel="true subclass" + ("" if named else f" (index within the superclass, "
                                                  f"0..{size - 1})"),
      bar_label="share of the true class's examples (log scale)")
  if not named:
    step = int(np.ceil(size / 10 / 5) * 5)
    ax.set_yticks(range(0, size, step))
    ax.set_xticks(list(range(0, size, step)) + list(range(size, size + len(tail))),
                  [str(i) for i in range(0, size, step)] + tail, fontsize=8, rotation=90)
  ax.axvline(size - 0.5, color="black", linewidth=1.0)
  _save(fig, path, tight=False)


def error_bars(path: str, per_superclass: dict, title: str) -> None:
  """Per superclass, the share of its examples misclassified within / across / outside."""
  names = list(per_superclass)
  stats = list(per_superclass.values())
  total = np.array([max(s["count"], 1) for s in stats], dtype=float)
  parts = {"within": np.array([s["errors_within"] for s in stats]) / total,
           "across": np.array([s["errors_across"] for s in stats]) / total,
           "outside": np.array([s["errors_outside"] for s in stats]) / total}
  if not parts["outside"].any():
    del parts["outside"]
  k = len(names)
  fig = Figure(figsize=(8.0, max(2.6, 1.3 + 0.28 * k)), layout="constrained")
  ax = fig.add_subplot()
  y = np.arange(k)
  left = np.zeros(k)
  labels = {"within": "within the true superclass", "across": "in another superclass",
            "outside": "outside the hierarchy"}
  for kind, share in parts.items():
    ax.barh(y, share, left=left, color=KIND_COLOURS[kind], label=labels[kind], height=0.7)
    left += share
  for i, s in enumerate(stats):
    errors = s["errors_within"] + s["errors_across"] + s["errors_outside"]
    if errors:
      ax.text(left[i], i, f"  {errors}/{s['count']}", va="center", fontsize=7)
  ax.set_yticks(y, [textwrap.shorten(s, 28, placeholder="…") for s in names],
                fontsize=8 if k <= 40 else 6)
  ax.invert_yaxis()
  ax.set_xlim(0, max(float(left.max()) * 1.25, 0.01))
  ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
  ax.set_xlabel("share of the superclass's examples that are misclassified")
  ax.set_title(title, fontsize=11, pad=22)
  ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False,
            borderaxespad=0.2)
  ax.spines[["top", "right"]].set_visible(False)
  _save(fig, path)


def mistake_grid(path: str, title: str, rows: Sequence[dict]) -> None:
  """A grid of misclassified images: one row per confusion pair, most frequent first.

  Args:
    rows: each {"true_name", "predicted_name", "count", "kind", "images": [HxW(x3)
      uint8], "confidences": [float or None]}.
  """
  cols = max(len(r["images"]) for r in rows)
  fig = Figure(figsize=(1.9 + 1.35 * cols, 0.5 + 1.45 * len(rows)))
  fig.suptitle(title, fontsize=11, x=0.02, ha="left")
  with_p = any(c is not None for r in rows for c in r["confidences"])
  fig.text(0.02, 1 - 0.42 / (0.5 + 1.45 * len(rows)), "true → predicted, how often"
           + ("; p = the model's probability for its prediction" if with_p else ""),
           fontsize=8, color="#555555")
  height = 1.45 / (0.5 + 1.45 * len(rows))
  for i, row in enumerate(rows):
    bottom = 1 - 0.5 / (0.5 + 1.45 * len(rows)) - (i + 1) * height
    label = (f"{textwrap.shorten(row['true_name'], 26, placeholder='…')}\n→ "
             f"{textwrap.shorten(row['predicted_name'], 26, placeholder='…')}\n"
             f"×{row['count']} ({row['kind']})")
    fig.text(0.01, bottom + height * 0.5, label, fontsize=8, va="center",
             color=KIND_COLOURS[row["kind"]])
    for j, (image, conf) in enumerate(zip(row["images"], row["confidences"])):
      width = 1.25 / (1.9 + 1.35 * cols)
      ax = fig.add_axes((1.9 / (1.9 + 1.35 * cols) + j * 1.35 / (1.9 + 1.35 * cols),
                         bottom + height * 0.12, width, height * 0.78))
      ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if conf is not None:
        ax.set_xlabel(f"p={conf:.2f}", fontsize=7, labelpad=1)
  _save(fig, path)
