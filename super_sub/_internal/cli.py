"""The one start-up of super-sub's absl entry points (flags stay in the entry points)."""

import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging


class UsageError(ValueError):
  """A user mistake (a bad path, flag value or input file): the command prints its message as
  one line, with no traceback, and exits with status 2. The message names the problem and
  the fix."""


def run(main) -> None:
  """`app.run(main)`, at WARNING log level unless --verbosity is given; a `UsageError` raised
  by `main` ends the command with its one-line message and exit status 2.

  TFDS logs every file it reads at INFO, which drowns Keras's progress lines. (Setting the
  --verbosity default before app.run does not reach absl's logging level.)
  """
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except UsageError as e:
      print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(quiet_main)


def require_training_extra() -> None:
  """Raises ImportError saying how to install what the training side needs, where only the
  edge runtime is installed (no TensorFlow): before a command fails on its first import."""
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError(
        "this super-sub command needs TensorFlow, which is not installed here (the base "
        "install is the edge runtime, for super-sub-predict). To train, evaluate, export or "
        "analyse: pip install 'super-sub[train]'")
