"""The one start-up of super-sub's absl entry points (flags stay in the entry points)."""

import importlib.util

from absl import app
from absl import flags
from absl import logging


def run(main) -> None:
  """`app.run(main)`, at WARNING log level unless --verbosity is given.

  TFDS logs every file it reads at INFO, which drowns Keras's progress lines. (Setting the
  --verbosity default before app.run does not reach absl's logging level.)
  """
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    return main(argv)
  app.run(quiet_main)


def require_training_extra() -> None:
  """Raises ImportError saying how to install what the training side needs, where only the
  edge runtime is installed (no TensorFlow): before a command fails on its first import."""
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError(
        "this super-sub command needs TensorFlow, which is not installed here (the base "
        "install is the edge runtime, for super-sub-predict). To train, evaluate, export or "
        "analyse: pip install 'super-sub[train]'")
