"""manifest.json of a `tflite/` bundle: its name, version and keys, and the checks that any
reader applies before trusting one (docs/bundle_format.md).

Needs only the standard library and super_sub.data.images: no TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

from super_sub._internal import files
from super_sub.data import images as images_lib
from super_sub.formats.errors import BundleError

FORMAT = "super-sub-tflite"
VERSION = 1
MANIFEST = "manifest.json"
_KEYS = ("format", "version", "input", "generalist", "specialists", "hierarchy", "labels", "files")


def check_input(info: Any, where: str
                ) -> tuple[tuple[int, int, int], tuple[float, float], str]:
  """The manifest's `input`: ((H, W, C), (lo, hi), framing), checked.

  Raises:
    BundleError: `where` and the field that is wrong.
  """
  shape = info.get("shape") if isinstance(info, dict) else None
  if (not isinstance(shape, (list, tuple)) or len(shape) != 3
      or not all(_is_int(d) and d > 0 for d in shape) or shape[2] not in (1, 3)):
    raise BundleError(f"{where}: 'shape' must be [H, W, C] with positive ints and C 1 or 3; "
                      f"got {shape!r}")
  lo_hi = info.get("range", [0, 1])
  if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2
      or not all(_is_int(v) or isinstance(v, float) for v in lo_hi) or not lo_hi[0] < lo_hi[1]):
    raise BundleError(f"{where}: 'range' must be [lo, hi] with lo < hi; got {lo_hi!r}")
  framing = info.get("framing", "resize")
  if framing not in images_lib.FRAMINGS:
    raise BundleError(f"{where}: 'framing' must be one of {list(images_lib.FRAMINGS)}; got "
                      f"{framing!r:.80}")
  return tuple(shape), (float(lo_hi[0]), float(lo_hi[1])), framing


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def read_manifest(path: str) -> dict[str, Any]:
  """`path`/manifest.json, parsed and checked: format, version, keys, and every file it names
  listed with a size and sha256 under a plain relative path.

  Raises:
    BundleError: naming the file and what is wrong.
  """
  where = os.path.join(path, MANIFEST)
  manifest = files.read_json(
      where, BundleError, expect_object=True, invalid="does not parse as JSON",
      not_found=f"{where} not found: {path} is not a super-sub TFLite bundle")
  missing = [k for k in _KEYS if k not in manifest]
  if missing:
    raise BundleError(f"{where}: missing key(s) {missing}; a bundle manifest has {list(_KEYS)}")
  if manifest["format"] != FORMAT or manifest["version"] != VERSION:
    raise BundleError(f"{where}: format {manifest['format']!r} version {manifest['version']!r}; "
                      f"this runtime reads {FORMAT!r} version {VERSION}")
  listed = manifest["files"]
  if not isinstance(listed, dict):
    raise BundleError(f"{where}: 'files' must map relative paths to {{bytes, sha256}}")
  for rel in listed:
    norm = os.path.normpath(rel).replace(os.sep, "/")
    if os.path.isabs(rel) or norm != rel or rel.startswith("../") or rel == MANIFEST:
      raise BundleError(f"{where}: files entry {rel!r} is not a plain relative path inside the "
                        f"bundle")
  specs = manifest["specialists"]
  if not isinstance(specs, dict) or not all(isinstance(e, dict) and {
      "skeleton", "delta", "superclass"} <= set(e) for e in specs.values()):
    raise BundleError(f"{where}: 'specialists' must map superclass indices to "
                      f"{{skeleton, delta, superclass}}")
  refs = [manifest["generalist"], manifest["hierarchy"], manifest["labels"]]
  refs += [manifest[key] for key in ("trunk", "router_head") if manifest.get(key) is not None]
  refs += [e[key] for e in specs.values() for key in ("skeleton", "delta")]
  for ref in refs:
    if not isinstance(ref, str) or ref not in listed:
      raise BundleError(f"{where}: refers to {ref!r} but does not list its size and sha256 under "
                        f"'files'; refusing to use an unverified file")
  shared = sorted({ref for ref in refs if refs.count(ref) > 1})
  if shared:
    raise BundleError(f"{where}: names {shared} for more than one role; every model, delta, "
                      f"skeleton, hierarchy and label file of a bundle is its own file")
  return manifest
