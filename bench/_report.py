"""What bench scripts report: their process's memory, and Markdown tables (standard library
only, so worker processes that must import nothing else can use it)."""


def memory_kib(field: str) -> int:
  """VmRSS (resident now) or VmHWM (peak) of this process in KiB, from /proc/self/status."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def markdown_table(header, rows) -> list[str]:
  """A Markdown table as lines: the header, its rule, then one line per row. Cells are str()
  of their values; an empty one stays empty ("| |")."""
  def line(cells) -> str:
    return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)
  return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]
