"""What bench scripts report of their process, and the one way they measure in a fresh one:
memory from /proc, and the worker protocol (`in_worker` / `serve_worker`). Standard library
only, so worker processes that must import nothing else can use it. Tables:
super_sub.analysis.tables."""

import json
import os
import subprocess
import sys


def memory_kib(field: str) -> int:
  """VmRSS (resident now) or VmHWM (peak) of this process in KiB, from /proc/self/status."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")



def in_worker(script: str, spec: dict) -> dict:
  """Runs `python <script> --worker=<spec as JSON>` in a fresh process (TensorFlow's C++ logs
  off) and returns the JSON object it printed last: a measurement of memory or latency that
  nothing else loaded into this process may disturb. The script answers with `serve_worker`."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, os.path.abspath(script), f"--worker={json.dumps(spec)}"],
                       check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def serve_worker(flag_value: str | None, measure) -> bool:
  """In a process `in_worker` started (its --worker flag set): prints `measure(spec)` as JSON
  and returns True; otherwise returns False and does nothing."""
  if not flag_value:
    return False
  print(json.dumps(measure(json.loads(flag_value))))
  return True
