"""super-sub-export: writes a trained run's deployable bundle.

  super-sub-export --model_dir=runs/fmnist --output=exports/fmnist

OUTPUT/tflite/ can be copied to a device on its own and run with super-sub-predict
(numpy + ai-edge-litert, no TensorFlow); OUTPUT/manifest.json gives its size against
one fp32 network.
"""

from absl import app
from absl import flags

from super_sub._internal import cli
from super_sub.training import config as config_lib

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A run made by super-sub-train.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder: written atomically; an earlier "
                              "export there is replaced. (Formerly --export_dir.)",
                              required=True)
_REPRESENTATIVE = flags.DEFINE_string(
    "representative_dataset", None, "Images for full-integer calibration: an .npy array or "
    ".npz with 'images' [N, H, W, C] (uint8, or float in [0, 1]). Default: 256 images of the "
    "run's training split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder, if not the training one.")
_COMPRESS_DELTAS = flags.DEFINE_boolean(
    "compress_deltas", True, "Deflate the TFLite bundle's specialist deltas (the smallest "
    "bundle). --nocompress_deltas stores them as they are: 1.6-1.9x larger deltas after "
    "dense fine-tuning of MobileNetV2 or ResNet-50 at 224 px, but a specialist switch skips "
    "inflating them, most of its time at that size (BENCHMARKS.md).")
_DEFLATE_SAVED_MODEL = flags.DEFINE_boolean(
    "deflate_saved_model", False, "Store the SavedModel's dense specialist differences "
    "deflated: ~0.8 of their bytes after dense fine-tuning, but every routed batch inflates "
    "its specialist's first (MobileNetV2 at 224 px: 24-34 ms a specialist instead of 3.5-3.8 "
    "to add them to the base; BENCHMARKS.md).")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace --output even when it is not an earlier super-sub export "
    "(without it, a folder holding anything else is refused and left untouched).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The run's config before TensorFlow is imported: a folder that is no run is told at once.
  config = config_lib.load_config(_MODEL_DIR.value, _DATA_DIR.value)
  cli.require_training_extra()  # before the imports that need TensorFlow (not for --help)
  # pylint: disable=import-outside-toplevel
  from super_sub.bundles import export as export_lib
  from super_sub.bundles import tflite
  from super_sub.training import run as run_lib
  # pylint: enable=import-outside-toplevel
  run = run_lib.Run(config)
  representative = (tflite.load_representative(_REPRESENTATIVE.value, run.image_shape)
                    if _REPRESENTATIVE.value else None)
  export_lib.export(run, _OUTPUT.value, representative=representative,
                    overwrite=_OVERWRITE.value, compress_deltas=_COMPRESS_DELTAS.value,
                    deflate_saved_model=_DEFLATE_SAVED_MODEL.value)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
