"""A metric over the seeds of one experiment: its mean and spread, and how pages print them."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def seed_stats(values: Iterable[float | None]) -> dict | None:
  """Mean, standard deviation, count and the values themselves, over the values that are not
  None (a run that lacks the metric).

  The deviation is the sample one (ddof=1): the seeds are a sample of the runs one could train.
  It is None for a single value, where it is undefined (numpy would warn and give nan).

  Args:
    values: the metric of each run, None where a run has none.

  Returns:
    {"mean", "std", "n", "values"}, or None where no run has a value.
  """
  vals = [float(v) for v in values if v is not None]
  if not vals:
    return None
  return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1
          else None, "n": len(vals), "values": vals}


def pct(s: dict | None, signed: bool = False, missing: str = "") -> str:
  """`seed_stats` as percentage points, "mean ± std" (the mean alone for one run).

  Args:
    s: a `seed_stats` result, or one with mean None (no run had a value), or None.
    signed: print the mean with its sign (a gain).
    missing: the text where there is no value.
  """
  if s is None or s["mean"] is None:
    return missing
  text = f"{100 * s['mean']:+.2f}" if signed else f"{100 * s['mean']:.2f}"
  return text + (f" ± {100 * s['std']:.2f}" if s["std"] is not None else "")
