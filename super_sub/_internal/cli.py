"""The one start-up of super-sub's absl entry points (flags stay in the entry points)."""

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
