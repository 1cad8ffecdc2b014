"""The base of super-sub's errors that are the user's to fix, and the errors about the folders
super-sub writes (each package's own errors live beside it: ConfigError, BundleError, ...).

Standard library only: the TF-free edge runtime (formats, data.images, runtime) imports it.
"""

from __future__ import annotations


class SuperSubError(Exception):
  """An error the user can fix (a bad input, flag, file or folder), not a bug in super-sub.

  Every command prints its message as one line `<prog>: error: <message>`, with no traceback,
  and exits with `exit_status`. Each subclass also keeps its usual base (ValueError,
  RuntimeError, ...), so `except ValueError` still catches it.

  Attributes:
    exit_status: 2 (a usage error: the input or command line is wrong), or 1 (the command
      could not finish: a locked folder, a training that diverged, a missing extra).
  """
  exit_status = 2


class FolderLockedError(SuperSubError, RuntimeError):
  """Another process holds the folder's lock (super-sub-train's model_dir).

  Attributes:
    folder: the locked folder.
    holder: "pid N on host H" as the holder wrote it, or "an unknown process".
  """
  exit_status = 1

  def __init__(self, folder: str, holder: str, what: str, lock_file: str):
    self.folder, self.holder = folder, holder
    super().__init__(
        f"{folder} is in use: {holder} holds its lock {lock_file}. "
        f"Two {what} processes must not write one folder; wait for that one to finish (or "
        f"stop it) and re-run, or use another folder. Nothing was changed.")


class OutputDirError(SuperSubError, ValueError):
  """An output folder that super-sub will not replace: it was not written by super-sub."""
