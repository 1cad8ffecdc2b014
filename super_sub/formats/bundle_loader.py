"""Reads a `tflite/` bundle, verifying every file's size and sha256 before anything parses it.

`load_bundle` keeps the trunk, router head, hierarchy and labels in memory, and the generalist
where it routes; the skeletons and deltas (most of the bytes at 224 px), and the generalist of a
bundle with a router head (then only the deltas' base), stay on disk and are read, and checked
again, when a specialist is rebuilt. So an interpreter only ever sees verified bytes.
Needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import gzip
import hashlib
import io
import os
import zlib
from typing import Any, Mapping

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub._internal import files
from super_sub.formats import delta as delta_lib
from super_sub.formats import delta_arrays
from super_sub.formats.errors import BundleError
from super_sub.formats.fast_rebuild import FastRebuild
from super_sub.formats.manifest import FORMAT, MANIFEST, check_input, read_manifest


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A loaded, verified bundle. Every byte it hands out passed its manifest checksum.

  Attributes:
    path: the bundle folder.
    manifest: the parsed manifest.json.
    hierarchy: the bundle's hierarchy.
    input_shape: (H, W, C) of the images the models take.
    input_range: (lo, hi): images in [0, 1] are mapped linearly onto it before the models.
    input_framing: how an image file becomes input_shape, as the models were evaluated:
      "resize" or "center_crop" (`super_sub.data.images.load_images`; "resize" when the
      manifest does not say).
    models: "generalist", and "trunk" and "router_head" where the bundle has them -> .tflite
      bytes: a dict in memory where the generalist routes, else (with a router head)
      `VerifiedFiles` read from disk and verified again at each use. The generalist then only
      serves rebuilds (ResNet-50 k4: 15 MB), and the runtime reads the trunk and the router
      head once, to build one interpreter of both (super_sub.runtime.fusion), which holds them.
    trunk: the shared trunk's .tflite bytes (images in, features out), or None when the
      generalist and the specialists take images themselves.
    generalist: the generalist's .tflite bytes (the base of every specialist).
    router_head: the router head's .tflite bytes (trunk features in, superclass logits out),
      which routes in place of the generalist; None when the generalist routes.
    skeletons: superclass index -> specialist skeleton .tflite bytes (decompressed), read
      from disk and verified again when asked for (`VerifiedFiles`).
    deltas: superclass index -> delta .npz bytes, likewise: they stay on disk between
      rebuilds (a dense delta is about as large as the network it rebuilds).
  """
  path: str
  manifest: dict[str, Any]
  hierarchy: hierarchy_lib.Hierarchy
  input_shape: tuple[int, int, int]
  input_range: tuple[float, float]
  models: Mapping[str, bytes]
  skeletons: Mapping[int, bytes]
  deltas: Mapping[int, bytes]
  input_framing: str = "resize"
  _fast: dict[int, FastRebuild] = dataclasses.field(
      default_factory=dict, init=False, repr=False, compare=False)

  @property
  def generalist(self) -> bytes:
    """The generalist's verified .tflite bytes (see `models`)."""
    return self.models["generalist"]

  @property
  def trunk(self) -> bytes | None:
    """The trunk's verified .tflite bytes, or None (see `models`)."""
    return self.models["trunk"] if "trunk" in self.models else None

  @property
  def router_head(self) -> bytes | None:
    """The router head's verified .tflite bytes, or None (see `models`)."""
    return self.models["router_head"] if "router_head" in self.models else None

  def specialist(self, k: int) -> bytes:
    """Rebuilds superclass k's specialist .tflite bytes (bit-exact) from the base and its delta.

    The first rebuild of each specialist goes through the skeleton (12-16 ms for a 300k-parameter
    network) and leaves a `FastRebuild` of about the skeleton's size behind; later ones copy
    bytes (see bench/deployment.py for the times at 224 px).
    """
    try:
      generalist = self.generalist  # read once per rebuild where it stays on disk
      with np.load(io.BytesIO(self.deltas[k]), allow_pickle=False) as npz:
        if k in self._fast:
          # A loaded bundle verified the delta against the manifest as it was read, and the
          # base when it loaded or was read: the same inputs as the first rebuild, whose
          # result was checked. Deltas from anywhere else are checked again.
          return self._fast[k].apply(generalist, npz,
                                     verify=not isinstance(self.deltas, VerifiedFiles))
        model = delta_lib.apply_delta(generalist, self.skeletons[k], npz)
        self._fast[k] = FastRebuild.from_rebuilt(generalist, model, npz)
        return model
    except ValueError as e:  # a DeltaError (also for an array that would need unpickling)
      raise BundleError(f"{self.path}: specialist {k} "
                        f"({self.hierarchy.superclasses[k].name!r}): {e}") from None

  def specialist_sha256(self, k: int) -> bytes:
    """The sha256 of superclass k's rebuilt specialist, as its verified delta records it."""
    try:
      with np.load(io.BytesIO(self.deltas[k]), allow_pickle=False) as npz:
        return delta_arrays.specialist_sha256(npz)
    except ValueError as e:
      raise BundleError(f"{self.path}: specialist {k} "
                        f"({self.hierarchy.superclasses[k].name!r}): {e}") from None


def find_bundle(path: str | os.PathLike) -> str:
  """The bundle folder a user most likely means by `path`, checked to hold a manifest.json.

  Accepts the `tflite/` bundle folder itself, its manifest.json, or the export folder that
  holds it (super-sub-export writes EXPORT_DIR/tflite/ beside the export's own manifest.json).
  Nothing is verified yet: `load_bundle` does that.

  Raises:
    BundleError: one line naming `path` and what was expected instead.
  """
  path = os.fspath(path)
  expected = (f"expected a {FORMAT} bundle: a folder holding {MANIFEST} (super-sub-export "
              f"writes it as EXPORT_DIR/tflite), that {MANIFEST}, or the export folder")
  if os.path.isfile(path):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) != MANIFEST:
      hint = (f"; {os.path.dirname(path) or '.'} is the bundle it lies in"
              if os.path.isfile(os.path.join(folder, MANIFEST)) else "")
      raise BundleError(f"{path} is a file; {expected}{hint}")
    path = os.path.dirname(path) or "."
  elif not os.path.isdir(path):
    raise BundleError(f"{path}: no such file or folder; {expected}")
  inner = os.path.join(path, "tflite")
  if os.path.isfile(os.path.join(inner, MANIFEST)):
    return inner  # an export folder: its own manifest.json describes the export, not the bundle
  if not os.path.isfile(os.path.join(path, MANIFEST)):
    raise BundleError(f"{path} holds no {MANIFEST} and no tflite/{MANIFEST}; {expected}")
  return path


def load_bundle(bundle_dir: str | os.PathLike) -> Bundle:
  """Reads and verifies a bundle: every listed file's size and sha256, before anything parses it.

  Raises:
    BundleError: naming the file, when manifest.json is missing, does not parse or lacks keys;
      a listed file is missing, truncated or changed; the manifest refers to a file it does not
      checksum; an unlisted .tflite or .npz lies in the bundle; or the parts do not fit together.
  """
  path = os.fspath(bundle_dir)
  manifest = read_manifest(path)
  listed = manifest["files"]
  # Every listed file is verified before anything parses it. The specialists' skeletons and
  # deltas are verified one at a time below, as their content is checked, and read again only
  # when used, so loading never holds the whole bundle (ResNet-50 with ten specialists:
  # 150-260 MB); the other files stay in memory.
  per_specialist = {e[key] for e in manifest["specialists"].values()
                    for key in ("skeleton", "delta")}
  models = {key: manifest[key] for key in ("generalist", "trunk", "router_head")
            if manifest.get(key) is not None}
  # Where a router head routes, the models are verified here and read again when used (see
  # Bundle.models): none of them is kept, so loading holds at most one at a time.
  on_disk = set(models.values()) if "router_head" in models else set()
  data = {}
  for rel, entry in listed.items():
    if rel not in per_specialist:
      content = _read_verified(path, rel, entry)
      if rel not in on_disk:
        data[rel] = content
  unlisted = sorted(rel for rel in _walk(path)
                    if rel not in listed and rel.endswith((".tflite", ".npz", ".gz")))
  if unlisted:
    raise BundleError(f"{path}: model files not listed in the manifest: {', '.join(unlisted)}; "
                      f"refusing a bundle that mixes unverified models in")

  # Everything below reads only verified bytes.
  where = f"{path}/{manifest['hierarchy']}"
  try:
    h = hierarchy_lib.Hierarchy.from_dict(
        files.read_json(where, BundleError, raw=data[manifest["hierarchy"]]), where=where)
  except hierarchy_lib.HierarchyError as e:
    raise BundleError(str(e)) from None
  try:
    labels = data[manifest["labels"]].decode("utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise BundleError(f"{path}/{manifest['labels']}: not UTF-8 text ({e})") from None
  if labels != h.subclass_names:
    raise BundleError(f"{path}/{manifest['labels']}: does not list the hierarchy's "
                      f"{h.num_subclasses} subclass names in order")
  specs = {}
  for key, entry in manifest["specialists"].items():
    if not (key.isascii() and key.isdigit()) or not 0 <= int(key) < h.num_superclasses:
      raise BundleError(f"{path}/{MANIFEST}: specialists key {key!r} is not a superclass index")
    specs[int(key)] = entry
  if sorted(specs) != h.specialist_superclasses():
    raise BundleError(f"{path}/{MANIFEST}: specialists {sorted(specs)} do not match the "
                      f"superclasses with >= 2 subclasses {h.specialist_superclasses()}")
  for k, entry in sorted(specs.items()):
    if entry["superclass"] != h.superclasses[k].name:
      raise BundleError(f"{path}/{MANIFEST}: specialist {k} is for {entry['superclass']!r} but "
                        f"superclass {k} is {h.superclasses[k].name!r}")
    _gunzip(_read_verified(path, entry["skeleton"], listed[entry["skeleton"]]),
            f"{path}/{entry['skeleton']}")
    try:  # lists the members only; arrays are decompressed when the specialist is rebuilt
      with np.load(io.BytesIO(_read_verified(path, entry["delta"], listed[entry["delta"]])),
                   allow_pickle=False) as npz:
        names = set(npz.files)
    except Exception as e:  # zipfile and numpy raise assorted types on a corrupt archive
      raise BundleError(f"{path}/{entry['delta']}: not an .npz archive ({e!r})") from None
    if not {"version", "sha256", "buffers"} <= names:
      raise BundleError(f"{path}/{entry['delta']}: not a super-sub delta (members: "
                        f"{sorted(names)})")
  shape, lo_hi, framing = check_input(manifest["input"], f"{path}/{MANIFEST}: input")
  if manifest.get("router_head") is not None and manifest.get("trunk") is None:
    raise BundleError(f"{path}/{MANIFEST}: names a router head but no trunk, whose output it "
                      f"would take")
  return Bundle(path=path, manifest=manifest, hierarchy=h, input_shape=shape, input_range=lo_hi,
                input_framing=framing,
                models=({key: data[rel] for key, rel in models.items()} if "router_head" not in
                        models else VerifiedFiles(path, models, listed)),
                skeletons=VerifiedFiles(path, {k: e["skeleton"] for k, e in specs.items()},
                                        listed, _gunzip),
                deltas=VerifiedFiles(path, {k: e["delta"] for k, e in specs.items()}, listed))


class VerifiedFiles(collections.abc.Mapping):
  """Key (a superclass, or a model's name) -> the bytes of one bundle file, read from disk when
  asked for and checked against the manifest's size and sha256 each time (BundleError naming
  the file).

  At 224 px the deltas are most of a bundle (ten ResNet-50 specialists: 130-240 MB), so a
  loaded bundle keeps them on disk and reads one only while its specialist is rebuilt;
  verifying it again (sha256, ~1 GB/s) costs far less than the rebuild.
  """

  def __init__(self, folder: str, files_by_key: Mapping[int | str, str],
               listed: Mapping[str, Any],
               decode=None):
    self._folder, self._rels, self._listed = folder, dict(files_by_key), listed
    self._decode = decode

  def __getitem__(self, key: int | str) -> bytes:
    rel = self._rels[key]
    data = _read_verified(self._folder, rel, self._listed[rel])
    return self._decode(data, f"{self._folder}/{rel}") if self._decode else data

  def __iter__(self):
    return iter(self._rels)

  def __len__(self) -> int:
    return len(self._rels)


# --- internals ------------------------------------------------------------------------------------
def _read_verified(folder: str, rel: str, entry: Any) -> bytes:
  """A listed file's bytes, refused unless its size and sha256 are the manifest's."""
  where = os.path.join(folder, rel)
  if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or not isinstance(
      entry.get("sha256"), str):
    raise BundleError(f"{folder}/{MANIFEST}: files[{rel!r}] must be {{'bytes': int, "
                      f"'sha256': str}}; got {entry!r}")
  try:
    with open(where, "rb") as f:
      content = f.read()
  except FileNotFoundError:
    raise BundleError(f"{where}: listed in the manifest but missing") from None
  except (OSError, ValueError) as e:  # a folder, a name too long, a NUL character
    raise BundleError(f"{where}: listed in the manifest but cannot be read ({e})") from None
  if len(content) != entry["bytes"]:
    how = "truncated" if len(content) < entry["bytes"] else "grown or replaced"
    raise BundleError(f"{where}: {len(content)} bytes, the manifest says {entry['bytes']} "
                      f"({how})")
  if hashlib.sha256(content).hexdigest() != entry["sha256"].lower():
    raise BundleError(f"{where}: sha256 differs from the manifest's (the file was changed)")
  return content


def _gunzip(data: bytes, where: str) -> bytes:
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise BundleError(f"{where}: not a gzip-compressed skeleton ({e})") from None


def _walk(path: str) -> list[str]:
  out = []
  for root, _, names in os.walk(path):
    out += [os.path.relpath(os.path.join(root, n), path).replace(os.sep, "/") for n in names]
  return out
