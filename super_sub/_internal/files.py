"""File helpers: atomic writes (a reader never sees a half-written file, a crash leaves the old
one) and the one rule that turns names into file names."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterator


def write_json(path: str | os.PathLike, payload: Any) -> None:
  """Writes `payload` as indented JSON: a temporary file in the same folder, then rename."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=1, ensure_ascii=False)
      f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary folder that replaces `path` only if the block succeeds."""
  path = os.path.abspath(os.fspath(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".tmp-")
  try:
    yield tmp
    os.chmod(tmp, 0o755)
    if os.path.exists(path):
      old = tmp + ".old"
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def safe_name(name: str, max_length: int | None = None) -> str:
  """A file-name-safe form of `name`: runs of characters other than letters, digits, `.`, `_`
  and `-` become one `_`, leading and trailing dots and underscores go; "unnamed" if nothing
  is left. Callers that need unique names prefix an index (e.g. `3_dog`)."""
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
  if max_length is not None:
    safe = safe[:max_length].rstrip("._")
  return safe or "unnamed"
