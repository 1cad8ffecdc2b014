"""super-sub's training-side commands (super-sub-train, -eval, -demo, -analyze, ...): they
need the `train` extra, `pip install 'super-sub[train]'`; without it their --help still works
and any other use says what to install (super_sub._internal.cli.run)."""
