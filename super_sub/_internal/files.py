"""File helpers: atomic writes (a reader never sees a half-written file, a crash leaves the old
one), the one reader of untrusted JSON, and the one rule that turns names into file names."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterator

from super_sub.errors import OutputDirError


def write_json(path: str | os.PathLike, payload: Any) -> None:
  """Writes `payload` as indented JSON, atomically (`write_bytes`)."""
  text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
  write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, error: type[Exception], raw: bytes | None = None,
              expect_object: bool = False, not_found: str | None = None,
              invalid: str = "not valid JSON") -> Any:
  """Parses an untrusted JSON file (or its bytes `raw`, already read and verified), every
  failure raised as `error` with a message that starts with the path.

  Args:
    path: the file (named in every message).
    error: the caller's public error type (HierarchyError, ConfigError, BundleError, ...).
    raw: the file's bytes when the caller already holds them; then nothing is read.
    expect_object: refuse anything but a JSON object at the top level.
    not_found: the whole message for a missing file (default: "<path>: no such file").
    invalid: what a file that does not parse is called in the message.

  Raises:
    error: the file is missing or unreadable, not UTF-8, not JSON, nested too deep
      (RecursionError), or not an object where one is expected.
  """
  if raw is None:
    try:
      with open(path, "rb") as f:
        raw = f.read()
    except FileNotFoundError:
      raise error(not_found or f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
      raise error(f"{path}: cannot be read ({e})") from None
  try:
    data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
  except (ValueError, RecursionError) as e:  # also UnicodeDecodeError; RecursionError: nesting
    raise error(f"{path}: {invalid} ({e})") from None
  if expect_object and not isinstance(data, dict):
    raise error(f"{path}: expected a JSON object at the top level")
  return data


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path`: a temporary file in the same folder, then rename, so a reader
  sees the old file or the whole new one, and a failed write leaves nothing behind."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def is_output(folder: str, marker: str, marker_format: str | None = None) -> bool:
  """Whether `folder` is super-sub's own output of one kind: it holds `marker` at its top
  and, with `marker_format`, that file is a JSON object whose "format" is `marker_format`."""
  path = os.path.join(folder, marker)
  if not os.path.isfile(path):
    return False
  if marker_format is None:
    return True
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(content, dict) and content.get("format") == marker_format


def check_replaceable(path: str | os.PathLike, kind: str, marker: str,
                      marker_format: str | None = None, overwrite: bool = False) -> None:
  """Refuses, before anything is written, to replace what super-sub did not write.

  `path` may be missing, an empty folder, or super-sub's own `kind` folder (recognised by
  `marker`, see `is_output`); anything else needs `overwrite`.

  Raises:
    OutputDirError: naming the folder, a few of its files and how to proceed.
  """
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputDirError(f"output {path} is a file, not a folder")
  if overwrite or not os.path.isdir(path):
    return
  held = sorted(os.listdir(path))
  if held and not is_output(path, marker, marker_format):
    shown = ", ".join(held[:5]) + (f", ... ({len(held)} entries)" if len(held) > 5 else "")
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    raise OutputDirError(
        f"output folder {path} exists and is not {article} {kind} folder (no super-sub {marker}); it "
        f"holds {shown}. Refusing to replace it: choose a new or empty folder, or pass "
        f"--overwrite to replace it as a whole")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str, marker: str,
               marker_format: str | None = None, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary folder that replaces `path` only if the block succeeds.

  Never deletes what super-sub did not write: an existing `path` is replaced only if it is
  empty or super-sub's own `kind` folder (`check_replaceable`), or when `overwrite`. The
  temporary folder is a hidden sibling (`.<name>.super-sub-tmp-*`); a crash leaves the old
  folder in place (and that sibling behind, recognisable by its name).

  Raises:
    OutputDirError: `path` holds something else (checked before the block runs).
  """
  path = os.path.abspath(os.fspath(path))
  check_replaceable(path, kind, marker, marker_format, overwrite)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.super-sub-tmp-")
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
