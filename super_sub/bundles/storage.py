"""What a bundle costs: its files' sizes and checksums, and its storage as a + b N."""

from __future__ import annotations

import hashlib
import os

import numpy as np


def storage_fit(manifest: dict) -> dict:
  """The TFLite bundle as a + b * N in units of one fp32 network (the paper's N + 1 unit).

  a: what every bundle holds once (generalist = base, trunk, hierarchy, labels, manifest);
  b: the mean cost of one specialist (skeleton + delta), with the cheapest and dearest.
  Exact for this bundle: a + b * N == storage_ratio.
  """
  unit = manifest["bytes"]["single_fp32_network"]
  per_specialist: dict[str, dict[str, int]] = {}
  shared = 0
  for path, entry in manifest["files"].items():
    if not path.startswith("tflite/"):
      continue
    if path.startswith("tflite/specialists/"):
      name, kind = os.path.basename(path).split(".", 1)
      per_specialist.setdefault(name, {})[kind.split(".")[0]] = entry["bytes"]
    else:
      shared += entry["bytes"]
  costs = [sum(v.values()) / unit for v in per_specialist.values()] or [0.0]
  a, b = shared / unit, float(np.mean(costs))
  return {"single_fp32_network_bytes": unit,
          "tflite_bundle_bytes": manifest["bytes"]["tflite_bundle"],
          "tflite_naive_int8_bytes": manifest["bytes"]["tflite_naive_int8"],
          "storage_ratio": manifest["storage_ratio"], "shared_bytes": shared,
          "specialists": dict(sorted(per_specialist.items())),
          "a": a, "b": b, "b_min": min(costs), "b_max": max(costs),
          "ratio_at_n10": a + 10 * b}


def listing(folder: str) -> dict[str, dict[str, int | str]]:
  """Relative path -> {bytes, sha256} of every file under `folder`, sorted."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in sorted(names):
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        data = f.read()
      out[os.path.relpath(path, folder).replace(os.sep, "/")] = {
          "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  return dict(sorted(out.items()))
