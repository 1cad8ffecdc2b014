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
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from typing import Callable

from super_sub._internal import files

SUFFIX = ".tflite"


class SpecialistFiles:
  """A folder of verified rebuilt specialists, named `<sha256 hex>.tflite`.

  Attributes:
    folder: the cache folder (created if missing).
    num_written: files this object wrote.
    num_verified: files it checked by sha256 (first use, or changed since).
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

  def _matches(self, path: str, sha256: bytes) -> bool:
    """Whether the file's bytes hash to `sha256`; trusted until its stat changes if so."""
    before = _stat(path)
    try:
      with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
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


def _stat(path: str) -> tuple[int, int, int, int] | None:
  """(device, inode, size, mtime in ns) of a regular file, or None when there is none."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  if not stat.S_ISREG(st.st_mode):
    return None
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
