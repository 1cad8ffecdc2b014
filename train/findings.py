r"""super-sub-findings: the paper's findings from evaluated runs, as one page with plots.

  super-sub-findings --runs=runs/fmnist_s0,runs/fmnist_s1,runs/fmnist_s2,runs/demo \
      --out=findings

Each run is a model_dir trained by super-sub-train and evaluated by super-sub-eval; runs of
the same dataset are taken as seeds of one experiment (mean and spread). Writes
DIR/index.html and index.md (the same page), findings.json and the PNGs; see
super_sub.analysis.findings for what each finding measures.
"""

import sys

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub.analysis import findings

_RUNS = flags.DEFINE_list("runs", None, "Evaluated model_dirs, comma-separated.",
                          required=True)
_OUT = flags.DEFINE_string("out", None, "Page folder (replaced if it holds an earlier findings "
                           "page; any other non-empty folder is refused).", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  findings.write_findings(_OUT.value, _RUNS.value,
                          command="super-sub-findings " + " ".join(sys.argv[1:]))
  print(f"findings: {_OUT.value}/index.html")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
