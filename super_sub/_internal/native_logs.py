"""Hides TensorFlow's and LiteRT's C++ start-up lines on a command's stderr (oneDNN, CUDA,
cpu_feature_guard, "Created TensorFlow Lite XNNPACK delegate for CPU"), and the TFLite
quantizer's settings line.

TF_CPP_MIN_LOG_LEVEL is not enough: TensorFlow >= 2.20 prints its first lines through absl's
C++ logging before anything reads that variable, and LiteRT's XNNPACK line ignores it. So
`filtered_stderr` points file descriptor 2 at a pipe read by a small child process that drops
those lines and passes everything else on (Python's own messages and tracebacks included). A
child, not a thread: if the command crashes, the child still drains the pipe, so a fatal C++
message is never lost. Only the command-line start-up (super_sub._internal.cli) uses this.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from typing import Iterator

# A C++ log line of absl/TSL: "I0000 00:00:1796589371.340320   12640 port.cc:153] ..." (before
# absl's logging is initialised the seconds field holds the whole epoch time).
_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_SEVERITIES = b"IWEF"
# Lines that are not in that form (LiteRT's INFO lines: the XNNPACK delegate, a
# CompiledModel's accelerators; the banner absl prints before its logging is initialised;
# cpu_feature_guard's second line; the TFLite quantizer's settings, printed once per int8
# conversion, tensorflow/tensorflow#58119).
_NOISE_PREFIXES = (b"WARNING: All log messages before absl::InitializeLog() is called",
                   b"INFO: ",
                   b"To enable the following instructions:",
                   b"fully_quantize: ")
# ERROR lines a CPU-only machine prints at start-up for the CUDA it does not have.
_NOISE_ERRORS = (b"failed call to cuInit", b"Unable to register cuDNN factory",
                 b"Unable to register cuFFT factory", b"Unable to register cuBLAS factory",
                 b"computation placer already registered")
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The child ignores Ctrl-C, which reaches the whole foreground process group: it must outlive
# the command to pass on what the command prints while it stops.
_CHILD = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
          "from super_sub._internal import native_logs; native_logs.pump(int(sys.argv[1]))")


def is_noise(line: bytes, min_level: int) -> bool:
  """Whether `line` (one line of stderr) is a start-up line to hide at `min_level`, which
  counts as TF_CPP_MIN_LOG_LEVEL does (0 shows all, 1 hides INFO, 2 also WARNING, 3 also
  ERROR)."""
  if min_level <= 0:
    return False
  match = _LOG_LINE.match(line)
  if match:
    severity = _SEVERITIES.index(match.group(1))
    return severity < min(min_level, 3) or (
        severity == 2 and any(text in line for text in _NOISE_ERRORS))
  return line.startswith(_NOISE_PREFIXES)


def pump(min_level: int, source: int = 0, sink: int = 1) -> None:
  """Copies `source` to `sink` until end of file, leaving out `is_noise` lines.

  A line in progress (a progress bar's "\\r" updates, a prompt) is passed on at once unless its
  start could begin a start-up line, so filtering never holds back what a user waits for.
  """
  held, passing = b"", False  # passing: the line in progress was already let through
  while True:
    chunk = os.read(source, 65536)
    if not chunk:
      break
    held += chunk
    out = []
    while True:
      end = _LINE_END.search(held)
      if end is None:
        break
      line, held = held[:end.end()], held[end.end():]
      if passing or not is_noise(line, min_level):
        out.append(line)
      passing = False
    if held and (passing or not held.startswith((b"I", b"W", b"E", b"F", b"T"))):
      out.append(held)
      held, passing = b"", True
    if out:
      os.write(sink, b"".join(out))
  if held:
    os.write(sink, held)


def min_level_to_hide(verbosity_asked: bool) -> int:
  """The TF_CPP_MIN_LOG_LEVEL-like level a command hides below: 0 (hide nothing) where the user
  asked for logs (SUPER_SUB_TF_LOGS=1, --verbosity=0 or more, TF_CPP_MIN_LOG_LEVEL=0), their
  own TF_CPP_MIN_LOG_LEVEL where set, else 2 (INFO and WARNING lines)."""
  if os.environ.get("SUPER_SUB_TF_LOGS", "") not in ("", "0") or verbosity_asked:
    return 0
  try:
    return max(0, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")))
  except ValueError:
    return 2


@contextlib.contextmanager
def filtered_stderr(min_level: int) -> Iterator[None]:
  """Within the block, file descriptor 2 goes through `pump` in a child process; TensorFlow's
  own later logging is set to `min_level` too (TF_CPP_MIN_LOG_LEVEL, read when TensorFlow is
  imported, and inherited by the command's subprocesses). Nothing is changed at level 0."""
  if min_level <= 0:
    yield
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(min_level))
  sys.stderr.flush()
  original = os.dup(2)
  read_end, write_end = os.pipe()
  try:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(min_level)],
        stdin=read_end, stdout=original, stderr=original, close_fds=True)
  except OSError:  # no child process to be had: leave stderr as it is
    for fd in (read_end, write_end, original):
      os.close(fd)
    yield
    return
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(original, 2)  # the pipe's last write end in this process closes: the child drains it
    os.close(original)
    try:
      child.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a subprocess of the command still holds the pipe
      pass
