"""An advisory lock on a folder, so that two processes never train into one model_dir at once.

`hold(folder)` takes an exclusive `fcntl.flock` on folder/.lock for the length of a `with`
block and writes the holder's pid and host into the file, so that a refused process can say
who holds it. The OS drops the lock when the holder's file closes, however the process ends
(kill -9 included): a lock is never stale, and the file that stays behind locks nothing.

flock is advisory: it keeps out processes that also call `hold` (every super-sub-train), not
other programs. It works on local file systems; on NFS it depends on the server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from typing import Iterator

from super_sub.errors import FolderLockedError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(folder: str | os.PathLike, what: str = "super-sub-train") -> Iterator[str]:
  """Holds the exclusive lock on `folder` (created if missing) for the `with` block.

  Args:
    folder: the folder to lock.
    what: the kind of process, for the refusal message.

  Yields:
    The lock file's path.
  Raises:
    FolderLockedError: another process holds the lock (the call does not wait).
    OSError: the folder cannot be created or written (a file in the way, read-only, full);
      the message names the folder, the errno and its subclass are the original's.
  """
  folder = os.path.abspath(os.fspath(folder))
  path = os.path.join(folder, LOCK_NAME)
  try:
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise unusable_folder(folder, e) from e
  locked = False
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise unusable_folder(folder, e) from e
      raise FolderLockedError(folder, _holder(fd), what,
                              os.path.join(folder, LOCK_NAME)) from None
    locked = True
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
      # Writing the lock file does not prove that new files can be made in the folder.
      tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
      raise unusable_folder(folder, e) from e
    yield path
  finally:
    if locked:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # an empty file: nobody holds the lock
    os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
  """Who holds the lock, as the holder wrote it into the file."""
  try:
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
  except OSError:
    text = ""
  return text or "an unknown process (it has not written its pid yet)"


def unusable_folder(folder: str, error: OSError) -> OSError:
  """`error` (same errno, so the same OSError subclass) with a message that names `folder`."""
  reason = error.strerror or str(error)
  if error.filename and os.fspath(error.filename) != folder:
    reason += f" ({error.filename})"
  blocker = folder  # the nearest existing path at or above the folder
  while not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
    blocker = os.path.dirname(blocker)
  if os.path.exists(blocker) and not os.path.isdir(blocker):
    reason = ("it is a file, not a folder" if blocker == folder
              else f"{blocker} is a file, not a folder")
  message = (f"cannot use {folder}: {reason}. It must be a folder this user can create and "
             f"write, on a file system with free space.")
  return OSError(error.errno, message) if error.errno else OSError(message)
