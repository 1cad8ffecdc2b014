"""Errors about the folders super-sub writes, raised by training, evaluation, export and the
analysis alike (each package's own errors live beside it: ConfigError, BundleError, ...)."""

from __future__ import annotations


class FolderLockedError(RuntimeError):
  """Another process holds the folder's lock (super-sub-train's model_dir).

  Attributes:
    folder: the locked folder.
    holder: "pid N on host H" as the holder wrote it, or "an unknown process".
  """

  def __init__(self, folder: str, holder: str, what: str, lock_file: str):
    self.folder, self.holder = folder, holder
    super().__init__(
        f"{folder} is in use: {holder} holds its lock {lock_file}. "
        f"Two {what} processes must not write one folder; wait for that one to finish (or "
        f"stop it) and re-run, or use another folder. Nothing was changed.")


class OutputDirError(ValueError):
  """An output folder that super-sub will not replace: it was not written by super-sub."""
