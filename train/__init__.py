"""super-sub's training-side commands (super-sub-train, -eval, -demo, -analyze, ...): they
need the `train` extra, `pip install 'super-sub[train]'`."""

from super_sub._internal import cli

cli.require_training_extra()
