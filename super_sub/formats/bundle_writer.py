"""Writes a `tflite/` bundle: a generalist, its specialists as deltas over it, the hierarchy, a
manifest listing every file's byte count and sha256 (the layout: docs/bundle_format.md).

Needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow, so the exporter and
the runtime share one definition of the format.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from super_sub._internal import files
from super_sub import hierarchy as hierarchy_lib
from super_sub.formats import delta as delta_lib
from super_sub.formats.errors import BundleError
from super_sub.formats.flatbuffer import parse_model
from super_sub.formats.manifest import FORMAT, MANIFEST, VERSION, check_input


def write_tflite_bundle(out_dir: str | os.PathLike, hierarchy: hierarchy_lib.Hierarchy,
                        generalist: bytes, specialists: Mapping[int, bytes],
                        input_info: Mapping[str, Any],
                        trunk: bytes | None = None, overwrite: bool = False,
                        compress_deltas: bool = True,
                        factors: Mapping[int, Sequence] | None = None,
                        router_head: bytes | None = None) -> dict[str, Any]:
  """Writes a bundle atomically (a temporary folder renamed to `out_dir` once complete).

  Args:
    out_dir: the bundle folder; an earlier bundle there is replaced, anything else only with
      `overwrite` (super_sub._internal.files.atomic_dir).
    hierarchy: the hierarchy the models were trained on.
    generalist: the generalist's .tflite bytes; every specialist is stored as a delta over them.
    specialists: superclass index -> .tflite bytes, for exactly the superclasses with >= 2
      subclasses, each converted from a model fine-tuned from the generalist.
    input_info: {"shape": [H, W, C], "dtype": "float32", "range": [lo, hi], "framing": ...}:
      what the models take; the runtime maps images in [0, 1] linearly onto `range` and frames
      image files as `framing` says ("resize", the default, or "center_crop").
    trunk: optional .tflite bytes of stages shared by every model (super_sub.trunk): it takes
      the images, and the generalist and the specialists take its output.
    compress_deltas: deflate the delta arrays (np.savez_compressed; smallest bundle) or store
      them as they are (np.savez): dense fine-tuning differences are noise-like, and
      inflating them is most of a later rebuild's time at 224 px (bench/deployment.py).
    factors: superclass index -> the (left, right, scales) low-rank factors its training
      stored (`--specialist_form=lowrank`): that delta is stored factored
      (`super_sub.formats.delta.make_delta`).
    router_head: optional .tflite bytes of a router head (super_sub.models.router_head): it
      takes the trunk's output like the other tails and routes instead of the generalist.
      Needs a trunk.

  Returns:
    The manifest written to manifest.json.

  Raises:
    BundleError: specialists missing or extra, bad input_info, a router head without a
      trunk, or a subclass name with a newline.
    DeltaError: a model that cannot be stored as a bit-exact delta.
  """
  h = hierarchy
  specialists = {int(k): v for k, v in specialists.items()}
  expected = h.specialist_superclasses()
  if sorted(specialists) != expected:
    raise BundleError(f"specialists must be given for exactly the superclasses with >= 2 "
                      f"subclasses {expected}; got {sorted(specialists)}")
  shape, lo_hi, framing = check_input(dict(input_info), "input_info")
  if router_head is not None and trunk is None:
    raise BundleError("a router head takes the trunk's output; a bundle without a trunk "
                      "cannot hold one")
  if any("\n" in n or "\r" in n for n in h.subclass_names):
    raise BundleError("subclass names must not contain line breaks (labels.txt is one per line)")
  manifest: dict[str, Any] = {
      "format": FORMAT, "version": VERSION,
      "input": {**dict(input_info), "shape": list(shape), "range": list(lo_hi),
                "framing": framing},
      "trunk": "trunk.tflite" if trunk is not None else None,
      "generalist": "generalist.tflite",
      "router_head": "router_head.tflite" if router_head is not None else None,
      "specialists": {},
      "hierarchy": "hierarchy.json", "labels": "labels.txt", "files": {}}
  parse_model(generalist, "generalist")
  if trunk is not None:
    parse_model(trunk, "trunk")
  if router_head is not None:
    parse_model(router_head, "router head")
  with files.atomic_dir(out_dir, "TFLite bundle", MANIFEST, FORMAT, overwrite) as tmp:
    if trunk is not None:
      _write(tmp, "trunk.tflite", bytes(trunk))
    if router_head is not None:
      _write(tmp, "router_head.tflite", bytes(router_head))
    _write(tmp, "generalist.tflite", bytes(generalist))
    for k, model in sorted(specialists.items()):
      skeleton, arrays = delta_lib.make_delta(generalist, model,
                                              factors=(factors or {}).get(k, ()))
      stem = f"specialists/{k}_{files.safe_name(h.superclasses[k].name)}"
      _write(tmp, f"{stem}.skeleton.tflite.gz", gzip.compress(skeleton, 9, mtime=0))
      buf = io.BytesIO()
      (np.savez_compressed if compress_deltas else np.savez)(buf, **arrays)
      _write(tmp, f"{stem}.delta.npz", buf.getvalue())
      manifest["specialists"][str(k)] = {"skeleton": f"{stem}.skeleton.tflite.gz",
                                         "delta": f"{stem}.delta.npz",
                                         "superclass": h.superclasses[k].name}
    files.write_json(os.path.join(tmp, "hierarchy.json"), h.to_dict())
    _write(tmp, "labels.txt", "".join(n + "\n" for n in h.subclass_names).encode("utf-8"))
    for root, _, names in os.walk(tmp):
      for name in names:
        rel = os.path.relpath(os.path.join(root, name), tmp).replace(os.sep, "/")
        with open(os.path.join(tmp, rel), "rb") as f:
          data = f.read()
        manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    files.write_json(os.path.join(tmp, MANIFEST), manifest)
  return manifest


def _write(folder: str, rel: str, data: bytes) -> None:
  target = os.path.join(folder, rel)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with open(target, "wb") as f:
    f.write(data)

