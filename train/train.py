r"""super-sub-train: trains the flat baseline, the generalist and the specialists.

  super-sub-train --model_dir=runs/fmnist --dataset=superclassed_fashion_mnist \
      --manual_dir=/usr/share/datasets/fashion-mnist --stage=all --epochs=10

  super-sub-train --config=imagenet_resnet50 --model_dir=runs/r50 --manual_dir=/data/ILSVRC2012

  super-sub-train --model_dir=runs/pets --dataset=folder:~/pets --hierarchy=pets.json

Re-running the same command resumes where it stopped. `--config=NAME` starts from a named
experiment (super_sub.configs) and the flags given override its fields. `--flagfile=FILE`
reads flags from a file; `--helpfull` lists them all. Every flag but --cpu_devices and
--config is a field of super_sub.training.config.TrainConfig, defined from it: defaults and
help live there.
"""

import dataclasses
import sys
import types
import typing

from absl import app
from absl import flags

from super_sub import configs
from super_sub._internal import cli
from super_sub._internal import lock
from super_sub.training import config as config_lib

CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical "
                                   "devices (to try --strategy=mirrored without GPUs).")
CONFIG = flags.DEFINE_string(
    "config", None, "A named experiment of super_sub.configs (" + ", ".join(configs.names())
    + "); flags given on the command line override its fields.")


def _base_type(annotation) -> type:
  """int for `int | None`, tuple for `tuple[int, ...] | None`, and so on."""
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  base = args[0] if isinstance(annotation, types.UnionType) else annotation
  return typing.get_origin(base) or base


def define_flags() -> dict[str, flags.FlagHolder]:
  """One flag per TrainConfig field (those with metadata flag=True), typed by the field."""
  hints = typing.get_type_hints(config_lib.TrainConfig)
  holders = {}
  for field in dataclasses.fields(config_lib.TrainConfig):
    meta = field.metadata
    if not meta.get("flag", True):
      continue
    kind = _base_type(hints[field.name])
    default = None if field.default is dataclasses.MISSING else field.default
    help_text = meta.get("help", "")
    if meta.get("choices"):
      holders[field.name] = flags.DEFINE_enum(field.name, default, list(meta["choices"]),
                                              help_text)
    elif kind is bool:
      holders[field.name] = flags.DEFINE_boolean(field.name, default, help_text)
    elif kind is int:
      holders[field.name] = flags.DEFINE_integer(field.name, default, help_text)
    elif kind is float:
      holders[field.name] = flags.DEFINE_float(field.name, default, help_text)
    elif kind is tuple:
      holders[field.name] = flags.DEFINE_list(field.name, default, help_text)
    else:
      holders[field.name] = flags.DEFINE_string(field.name, default, help_text)
  flags.mark_flag_as_required("model_dir")
  return holders


FLAGS = define_flags()


def config_from_flags() -> config_lib.TrainConfig:
  """The TrainConfig the command line asks for: --config's recipe (if any) with the flags
  given on the command line laid over it, else every flag.

  Raises:
    app.UsageError: an unknown --config name, --specialists that are not integers, or
      values that TrainConfig refuses (--epochs=-1, an unknown --backbone, ...).
  """
  values = {name: holder.value for name, holder in FLAGS.items()}
  if CONFIG.value is not None:
    try:
      recipe = configs.get(CONFIG.value)
    except configs.UnknownConfigError as e:
      raise app.UsageError(str(e)) from None
    values = {**values, **recipe,
              **{name: values[name] for name in FLAGS if flags.FLAGS[name].present}}
  if values["weights"] == "none":
    values["weights"] = None
  if values["specialists"] is not None and not isinstance(values["specialists"], tuple):
    try:
      values["specialists"] = tuple(int(k) for k in values["specialists"])
    except ValueError:
      raise app.UsageError(f"--specialists takes superclass indices (integers); got "
                           f"{','.join(values['specialists'])}") from None
  try:
    return config_lib.TrainConfig(**values)
  except ValueError as e:  # TrainConfig's checks of the values
    raise app.UsageError(str(e)) from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = config_from_flags()  # before TensorFlow is imported: a mistake is told at once
  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline
  from super_sub.training import distribute
  from super_sub.training import fit
  from super_sub.training import guards
  from super_sub.training import run as run_lib
  # pylint: enable=import-outside-toplevel
  if CPU_DEVICES.value:
    distribute.split_cpu(CPU_DEVICES.value)
  try:
    fit.train(config)
  except (config_lib.ConfigError, run_lib.RunMismatchError, lock.FolderLockedError,
          guards.NonFiniteError, pipeline.UndecodableImageError) as e:
    # Refusals and a diverged stage: the message says all; a traceback would bury it.
    sys.exit(f"super-sub-train: {e}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
