"""super-sub-eval: evaluates a trained run and writes eval.json and predictions/.

  super-sub-eval --model_dir=runs/fmnist
"""

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub.routing import core
from super_sub.training import config as config_lib

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Folder of a run made by super-sub-train.",
                                 required=True)
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: validation, or test "
                             "where there is no validation split).")
_SOFT_K = flags.DEFINE_integer("soft_k", 2, "Superclasses combined by soft routing.")
_ROUTER = flags.DEFINE_enum(
    "router", None, list(core.ROUTERS),
    "What routes the two-stage system written out: the generalist, the flat network's summed "
    "subclass probabilities, their normalised product, or the router head (runs trained with "
    "--router_head). Default: what the bundles deploy, the router head where the run has one, "
    "else the generalist. eval.json compares every router the run has either way.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder, if not the one used "
                                "for training.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The run's config before TensorFlow is imported: a folder that is no run is told at once.
  config = config_lib.load_config(_MODEL_DIR.value, _DATA_DIR.value)
  from super_sub import evaluation  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  evaluation.evaluate(run_lib.Run(config), split=_SPLIT.value, soft_k=_SOFT_K.value,
                      router=_ROUTER.value)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
