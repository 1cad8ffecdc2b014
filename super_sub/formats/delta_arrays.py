"""A delta's .npz members: their names, dtypes and versions, read and checked before use.

The members are described in docs/bundle_format.md ("The delta arrays"). Plain numpy arrays, so
`np.load(allow_pickle=False)` reads them. Needs only numpy: no TensorFlow.
"""

from __future__ import annotations

import hashlib

import numpy as np

from super_sub.formats.errors import DeltaError

FORMAT_VERSION = 1  # dense or sparse deltas
SIGNED_VERSION = 2  # signed or factored deltas, which version-1 readers cannot decode
COMMON = ("version", "sha256", "buffers", "quant")
SIGNED = ("runs", "magnitudes", "signs")
FACTORED = ("factored", "left", "right", "scales")
_DTYPES = {**{name: "uint8" for name in ("sha256", "gaps", "values", "diff", "magnitudes",
                                         "signs")},
           "left": "int8", "right": "int8", "scales": "float32"}


def digest(data: bytes) -> np.ndarray:
  """The sha256 of `data` as uint8 [32], as a delta's `sha256` rows hold it."""
  return np.frombuffer(hashlib.sha256(data).digest(), np.uint8).copy()


def specialist_sha256(arrays) -> bytes:
  """The sha256 (32 bytes) of the specialist a delta rebuilds, as recorded in it.

  Raises:
    DeltaError: no readable uint8 `sha256` array of shape (2, 32).
  """
  if not hasattr(arrays, "keys") or "sha256" not in arrays.keys():
    raise DeltaError("delta arrays lack 'sha256' (the base's and the specialist's digests)")
  digests = read_member(arrays, "sha256")
  if digests.shape != (2, 32):
    raise DeltaError(f"delta array 'sha256' has shape {digests.shape}; expected (2, 32)")
  return bytes(digests[1])



def read_arrays(arrays) -> dict[str, np.ndarray]:
  """The delta arrays, checked: present, readable, integer dtypes, shapes and index ranges.

  `buffers` and `quant` come back as int64 arrays of values in [0, 2**32), the byte arrays
  (sha256, gaps, values, diff) as uint8.
  """
  names = set(arrays.keys()) if hasattr(arrays, "keys") else set()
  encoding = ("diff",) if "diff" in names else (
      ("gaps", "values") + (SIGNED if "runs" in names else ())
      + (FACTORED if "factored" in names else ()))
  missing = [n for n in COMMON + encoding if n not in names]
  if missing:
    raise DeltaError(f"delta arrays lack {missing}; expected {list(COMMON)} plus either 'diff' "
                     f"(dense), 'gaps' and 'values' (sparse), or those and {list(SIGNED)} "
                     f"(signed) and/or {list(FACTORED)} (factored); got {sorted(names)}")
  out = {name: read_member(arrays, name) for name in COMMON + encoding}
  extended = "runs" in encoding or "factored" in encoding
  if out["version"].shape != () or int(out["version"]) != (
      SIGNED_VERSION if extended else FORMAT_VERSION):
    what = "signed or factored" if extended else "dense or sparse"
    raise DeltaError(f"delta version {out['version']} with {what} arrays is not supported "
                     f"(this runtime reads version {FORMAT_VERSION} with dense or sparse "
                     f"arrays, {SIGNED_VERSION} with signed or factored)")
  if (out["sha256"].shape != (2, 32) or out["buffers"].ndim != 2 or out["buffers"].shape[1] != 3
      or out["quant"].ndim != 2 or out["quant"].shape[1] != 3):
    raise DeltaError(f"delta arrays have the wrong shapes: sha256 {out['sha256'].shape} (want "
                     f"(2, 32)), buffers {out['buffers'].shape} (want (B, 3)), quant "
                     f"{out['quant'].shape} (want (Q, 3))")
  for name in ("buffers", "quant", "runs", "factored"):
    if name in out:
      out[name] = as_indices(out[name], name)
  for name in ("runs", "factored"):
    if name in out and (out[name].ndim != 2 or out[name].shape[1] != 4):
      raise DeltaError(f"delta array {name!r} has shape {out[name].shape}; expected (R, 4)")
  return out


def read_member(arrays, name: str) -> np.ndarray:
  """One delta array, read and checked for an integer dtype (uint8 for the byte arrays)."""
  try:  # an .npz member is decompressed (and its CRC checked) here
    value = np.asarray(arrays[name])
  except Exception as e:  # zipfile, its decompressors and numpy raise assorted types
    raise DeltaError(f"delta array {name!r} cannot be read ({e!r})") from None
  want = _DTYPES.get(name, "integer")
  if (value.dtype.kind not in "iu" if want == "integer" else value.dtype != np.dtype(want)):
    raise DeltaError(f"delta array {name!r} has dtype {value.dtype}; expected {want}")
  return value


def as_indices(values: np.ndarray, name: str) -> np.ndarray:
  """Indices and lengths (uint32 as written) as int64, refused outside [0, 2**32)."""
  if values.size and (values.min() < 0 or values.max() >= 2**32):
    raise DeltaError(f"delta array {name!r} holds {values.min()}..{values.max()}; indices "
                     f"and lengths lie in [0, 2**32)")
  return values.astype(np.int64)

