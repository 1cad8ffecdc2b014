"""super-sub-demo: the whole pipeline on the embedded synthetic data, in a few minutes on a CPU.

Builds `superclassed_synthetic` if needed, trains the flat baseline, the generalist
(initialised from the flat network) and one specialist per superclass, evaluates them,
prints flat vs two-stage top-1, exports the int8 TFLite bundle (model_dir/export) and
prints its storage ratio and its agreement with the Keras two-stage predictions.
Re-running reuses what is already trained in --model_dir. The run is the `synthetic_demo`
recipe (super_sub.configs); its flags override the recipe's fields.
"""

import os

from absl import app
from absl import flags

from super_sub import configs
from super_sub._internal import cli
from super_sub.training import config as config_lib

_MODEL_DIR = flags.DEFINE_string("model_dir", "runs/demo", "Folder of the run.")
_RECIPE = configs.get("synthetic_demo")
_DATASET = flags.DEFINE_string("dataset", _RECIPE["dataset"], "Dataset (the synthetic one by "
                               "default; superclassed_synthetic/smoke runs in seconds).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: TFDS's).")
_EPOCHS = flags.DEFINE_integer("epochs", _RECIPE["epochs"], "Epochs of flat and generalist "
                               "training.")
_SPECIALIST_EPOCHS = flags.DEFINE_integer(
    "specialist_epochs", _RECIPE["specialist_epochs"], "Epochs of each specialist (each sees "
    "only its superclass: ~1/5 of the data).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:  # before TensorFlow is imported: a mistake is told at once
    config = config_lib.TrainConfig(**{
        **_RECIPE, "model_dir": _MODEL_DIR.value, "dataset": _DATASET.value,
        "data_dir": _DATA_DIR.value, "epochs": _EPOCHS.value,
        "specialist_epochs": _SPECIALIST_EPOCHS.value, "seed": _SEED.value})
  except ValueError as e:  # TrainConfig's checks of the values
    raise app.UsageError(str(e)) from None
  # TensorFlow is imported here, not for --help.
  # pylint: disable=import-outside-toplevel
  from super_sub import evaluation
  from super_sub.bundles import export as export_lib
  from super_sub.bundles import parity
  from super_sub.training import fit
  from super_sub.training import run as run_lib
  # pylint: enable=import-outside-toplevel
  config = fit.train(config)
  run = run_lib.Run(config)
  evaluation.evaluate(run)
  export_dir = os.path.join(config.model_dir, "export")
  manifest = export_lib.export(run, export_dir)
  parity.tflite_parity(run, export_dir)
  print(f"storage: {manifest['num_specialists']} specialists + generalist in "
        f"{manifest['storage_ratio']:.2f} x one fp32 network "
        f"(N+1 separate fp32 networks: {manifest['num_specialists'] + 1})")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
