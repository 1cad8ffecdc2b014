r"""super-sub-findings: the paper's findings from evaluated runs, as one page with plots.

  super-sub-findings --runs=runs/fmnist_s0,runs/fmnist_s1,runs/fmnist_s2,runs/demo \
      --output=findings
  super-sub-findings --from_json=findings/findings.json --output=findings  # no runs needed

Each run is a model_dir trained by super-sub-train and evaluated by super-sub-eval; runs of
the same dataset are taken as seeds of one experiment (mean and spread). Writes
OUTPUT/index.html and index.md (the same page), findings.json and the PNGs; see
super_sub.analysis.findings for what each finding measures. The page names runs by their
folder's name, never by a path of this machine. --from_json writes the page again from a
saved findings.json alone.
"""

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub.analysis import findings

_RUNS = flags.DEFINE_list("runs", None, "Evaluated model_dirs, comma-separated.")
_FROM_JSON = flags.DEFINE_string(
    "from_json", None, "Instead of --runs: a findings.json written earlier (or the page folder "
    "holding it); the page is written again from it, without the runs' folders.")
_OUTPUT = flags.DEFINE_string("output", None, "Page folder (replaced if it holds an earlier "
                              "findings page; any other non-empty folder is refused). Formerly "
                              "--out.", required=True)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace --output even when it is not an "
                                  "earlier findings page.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_RUNS.value) == bool(_FROM_JSON.value):
    raise app.UsageError("give --runs (evaluated model_dirs) or --from_json (a saved "
                         "findings.json), one of the two")
  if _FROM_JSON.value:
    findings.rerender(_OUTPUT.value, _FROM_JSON.value, overwrite=_OVERWRITE.value)
  else:
    findings.write_findings(_OUTPUT.value, _RUNS.value, overwrite=_OVERWRITE.value)
  print(f"findings: {_OUTPUT.value}/index.html")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
