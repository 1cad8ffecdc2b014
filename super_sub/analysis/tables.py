"""Markdown tables, written one way for the findings page and the benchmarks' reports."""


def markdown_table(header, rows) -> list[str]:
  """A Markdown table as lines: the header, its rule, then one line per row.

  Cells are str() of their values; an empty one stays empty ("| |").

  Args:
    header: the column names.
    rows: one sequence of cells per row.

  Returns:
    The table's lines, without line ends.
  """
  def line(cells) -> str:
    return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)
  return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]
