"""Rebuilt specialists kept on disk, so that a specialist switch maps a file instead of
rebuilding the specialist from base + delta.

At 224 px, a switch with a cache of one is a rebuild plus a new interpreter, and the rebuild is
about half of it (bench/deployment.py). With a cache folder, each specialist is rebuilt once,
written there as `<sha256>.tflite`, and every later switch hands LiteRT the file, which it maps
instead of copying. Memory stays one specialist, and the disk holds one int8 specialist for each
specialist used. The files are named by the specialist's sha256, as its delta records it, so
bundles can share one folder, and a new bundle never picks up an old bundle's specialist.

Trust: a file is used only after its sha256 matched, checked the first time this process uses
it and again whenever its size, modification time or inode changed. The file is written to a
temporary file in the folder and then renamed into place, so nobody ever sees half a file. A file
that does not match is left where it is, since super-sub may not have written it. The specialist
is then rebuilt in memory, with a warning naming the file. A folder that cannot be written to
also gets a warning, and the specialist is rebuilt in memory. Either way the predictions stay
the same.

Packed weights (`TwoStageLite(packed_weights=True)`): building an interpreter for a specialist
costs as much again as mapping it, since XNNPACK repacks every kernel for this CPU. LiteRT can
keep XNNPACK's packed weights in a file and map them on later builds (ResNet-50's stage-4 tail:
17 ms -> 2 ms; for small tails the CompiledModel API this needs costs more than it saves). That file is made on this
machine, so no digest can ship with the bundle; and LiteRT maps a stale or damaged one without
complaint, giving wrong outputs (one flipped byte, or another specialist's file: tried). So
`<sha256>.xnnpack` is written only by LiteRT into a temporary file, then its own sha256 and the
LiteRT version go into `<sha256>.xnnpack.json`, and only then is it renamed into place. A later
use checks it like the model file (first use in a process, or a changed stat). A file that does
not match its record, or has none, is left in place with a warning, and the specialist runs
without packed weights (as fast once built). A record from another LiteRT version is replaced
with the file: LiteRT rewrites packed weights it cannot read, and super-sub wrote both. The
folder is trusted as far as its files are: keep it where only you write.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import warnings
from typing import Callable

from super_sub._internal import files

SUFFIX = ".tflite"
PACKED_SUFFIX = ".xnnpack"
RECORD_SUFFIX = ".xnnpack.json"


class SpecialistFiles:
  """A folder of verified rebuilt specialists, named `<sha256 hex>.tflite`.

  Attributes:
    folder: the cache folder (created if missing).
    num_written: files this object wrote.
    num_verified: files it checked by sha256 (first use, or changed since).
    num_packed: packed-weights files this object put in place.
  """

  def __init__(self, folder: str | os.PathLike):
    """Creates `folder` (a leading `~` is the user's home) if it is missing.

    Raises:
      ValueError: `folder` exists and is not a folder, or cannot be created.
    """
    self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if os.path.exists(self.folder) and not os.path.isdir(self.folder):
      raise ValueError(f"cache_dir {self.folder} is a file; expected a folder for the rebuilt "
                       f"specialists (created if missing)")
    try:
      os.makedirs(self.folder, exist_ok=True)
    except OSError as e:
      raise ValueError(f"cache_dir {self.folder} cannot be created ({e})") from None
    self.num_written = 0
    self.num_verified = 0
    self.num_packed = 0
    self._trusted: dict[str, tuple[int, int, int, int]] = {}  # path -> stat when verified
    self._warned: set[str] = set()

  def get(self, sha256: bytes, rebuild: Callable[[], bytes]) -> str | bytes:
    """The path of a verified file holding the specialist whose digest is `sha256`, or, when no
    such file can be used or written, the specialist's bytes from `rebuild()`.

    `rebuild` must return the verified specialist (`Bundle.specialist` checks the result
    against the delta's recorded sha256); it is called only when the file is missing or bad.
    """
    path = os.path.join(self.folder, sha256.hex() + SUFFIX)
    seen = _stat(path)
    if seen is not None and self._trusted.get(path) == seen:
      return path
    if seen is not None:
      if self._matches(path, sha256):
        return path
      self._warn(path, "its sha256 does not match the specialist's; it is left in place (delete "
                       "it to let super-sub write it again) and the specialist is rebuilt in "
                       "memory")
      return rebuild()
    model = rebuild()
    try:
      files.write_bytes(path, model)
    except OSError as e:
      self._warn(path, f"cannot be written ({e}); the specialist is rebuilt in memory")
      return model
    self.num_written += 1
    self._trusted[path] = _stat(path)
    return path

  def packed_weights(self, sha256: bytes, litert_version: str) -> "PackedWeights":
    """Where LiteRT should keep the packed weights of the specialist whose digest is `sha256`.

    `path` is the verified `<sha256>.xnnpack` when there is one; else a new temporary file for
    LiteRT to write, which `commit()` records and renames into place once the interpreter is
    built (`commit(built=False)` removes it instead); or None (run without packed weights)
    when a file is there that does not match.
    """
    stem = os.path.join(self.folder, sha256.hex())
    path, record_path = stem + PACKED_SUFFIX, stem + RECORD_SUFFIX
    seen = _stat(path)
    if seen is not None and self._trusted.get(path) == seen:
      return PackedWeights(path)
    record = _read_record(record_path)
    other_litert = record is not None and record["litert"] != litert_version
    if seen is not None and not other_litert:  # replaced below when super-sub's record says so
      if record is not None and self._matches(path, bytes.fromhex(record["sha256"])):
        return PackedWeights(path)
      self._warn(path, "its sha256 does not match " + (
          f"{record_path}" if record is not None else f"a record (no readable {record_path})")
                 + "; it is left in place and the specialist runs without packed weights")
      return PackedWeights(None)
    fd, tmp = _temporary(self.folder)
    if tmp is None:
      self._warn(path, f"cannot be written ({fd}); the specialist runs without packed weights")
      return PackedWeights(None)
    os.close(fd)
    os.unlink(tmp)  # LiteRT creates it; an empty file would be read as a damaged cache

    def commit(built: bool) -> None:
      if not os.path.isfile(tmp):  # LiteRT could not write it (it says so on stderr)
        return
      if not built:  # the interpreter failed: LiteRT may not have finished the file
        os.unlink(tmp)
        return
      try:
        digest = _sha256_of(tmp).hex()
        files.write_bytes(record_path, json.dumps(
            {"sha256": digest, "litert": litert_version}).encode())
        os.replace(tmp, path)
      except OSError as e:
        self._warn(path, f"cannot be written ({e}); the specialist runs without packed weights")
        if os.path.exists(tmp):
          os.unlink(tmp)
        return
      self.num_packed += 1
      self._trusted[path] = _stat(path)

    return PackedWeights(tmp, commit)

  def _matches(self, path: str, sha256: bytes) -> bool:
    """Whether the file's bytes hash to `sha256`; trusted until its stat changes if so."""
    before = _stat(path)
    try:
      digest = _sha256_of(path)
    except OSError:
      return False
    self.num_verified += 1
    if digest != sha256:
      return False
    if _stat(path) == before:  # else replaced while being read: checked again at its next use
      self._trusted[path] = before
    return True

  def _warn(self, path: str, what: str) -> None:
    if path not in self._warned:
      self._warned.add(path)
      warnings.warn(f"cached specialist {path}: {what}", RuntimeWarning, stacklevel=3)


class PackedWeights:
  """A path for LiteRT's packed weights (None: run without), and what to call once LiteRT
  has built (or failed to build) the interpreter that wrote them there."""

  def __init__(self, path: str | None, commit: Callable[[bool], None] | None = None):
    self.path = path
    self.commit = commit or (lambda built: None)


def _sha256_of(path: str) -> bytes:
  """The file's sha256, read in 1 MiB blocks: hashing a 15 MB file must not hold 15 MB more."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.digest()


def _read_record(path: str) -> dict | None:
  """A packed-weights record {"sha256": hex, "litert": version}, or None if missing or bad."""
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    bytes.fromhex(record["sha256"])
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return record if isinstance(record.get("litert"), str) else None


def _temporary(folder: str) -> tuple:
  """(fd, path) of a new temporary file in `folder`, or (the error, None)."""
  try:
    return tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=PACKED_SUFFIX)
  except OSError as e:
    return e, None


def _stat(path: str) -> tuple[int, int, int, int] | None:
  """(device, inode, size, mtime in ns) of a regular file, or None when there is none."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  if not stat.S_ISREG(st.st_mode):
    return None
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
