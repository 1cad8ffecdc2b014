"""What bench scripts report of their process: its memory (standard library only, so worker
processes that must import nothing else can use it). Tables: super_sub.analysis.tables."""


def memory_kib(field: str) -> int:
  """VmRSS (resident now) or VmHWM (peak) of this process in KiB, from /proc/self/status."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")

