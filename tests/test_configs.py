"""Recipes as code (super_sub.configs) and `super-sub-train --config=NAME`: every recipe is a
valid config, flags override single fields, bad names and overrides are refused, the ImageNet
recipes' smoke variant trains, and rates scale with the global batch."""

import dataclasses
import json
import subprocess
import sys

from etils import epath
import pytest

from super_sub import configs
from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder as sib
from super_sub.training import config as config_lib
from super_sub.training import fit
from super_sub.training import run as run_lib

DUMMY = epath.Path(sib.__file__).parent / "dummy_data" / "extracted"


@pytest.mark.parametrize("name", configs.names())
def test_every_recipe_is_a_valid_config(name, tmp_path):
  recipe = configs.get(name)
  config = config_lib.TrainConfig(model_dir=str(tmp_path), **recipe)
  assert {k: getattr(config, k) for k in recipe} == recipe
  if name.endswith(configs.SMOKE):  # a smoke variant is the recipe shrunk, same model
    full = configs.get(name[:-len(configs.SMOKE)])
    assert (recipe["backbone"] if "backbone" in recipe else None) == full.get("backbone")
    assert recipe["epochs"] == 1 and recipe["specialist_epochs"] == 1


def test_the_paper_recipes():
  """The paper's setting: superclassed_imagenet at 224 px, the two backbones, a rate per 256
  images of global batch, specialists fine-tuned at a tenth of it, Inception crops."""
  for name, backbone in (("imagenet_resnet50", "resnet50"),
                         ("imagenet_mobilenet_v2", "mobilenet_v2")):
    recipe = configs.get(name)
    assert (recipe["dataset"], recipe["backbone"], recipe["image_size"]) == (
        "superclassed_imagenet", backbone, 224)
    assert recipe["learning_rate_base_batch"] == 256
    assert recipe["specialist_learning_rate"] == pytest.approx(recipe["learning_rate"] / 10)
    assert recipe["augment"] == "random_resized_crop"


def test_unknown_config_names_the_recipes():
  with pytest.raises(configs.UnknownConfigError,
                     match=r"unknown config 'imagenet'; the configs are: imagenet_resnet50, "
                           r"imagenet_resnet50\.smoke, imagenet_mobilenet_v2"):
    configs.get("imagenet")


@pytest.mark.parametrize("global_batch,expected", [(256, 5e-4), (1024, 2e-3), (32, 6.25e-5)])
def test_learning_rates_scale_with_the_global_batch(tmp_path, global_batch, expected):
  config = config_lib.TrainConfig(model_dir=str(tmp_path), **configs.get("imagenet_resnet50"))
  assert fit.schedule(config, run_lib.FLAT, global_batch) == (90, pytest.approx(expected))
  specialist = run_lib.specialist(0)
  assert fit.schedule(config, specialist, global_batch) == (30, pytest.approx(expected / 10))
  unscaled = dataclasses.replace(config, learning_rate_base_batch=None)
  assert fit.schedule(unscaled, run_lib.FLAT, global_batch) == (90, 5e-4)


def _train_flags(*args):
  """config_from_flags() of a super-sub-train command line, in a fresh process: (rc, the
  config as a dict or the error)."""
  out = subprocess.run([sys.executable, "-c", f"""
import dataclasses, json
from absl import flags
from super_sub.train import train
try:
  flags.FLAGS(["super-sub-train", "--model_dir=/tmp/x", *{list(args)!r}])
  print(json.dumps(dataclasses.asdict(train.config_from_flags())))
except Exception as e:
  print(type(e).__name__ + ": " + str(e))
  raise SystemExit(3)
"""], capture_output=True, text=True, timeout=300, check=False)
  last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
  return out.returncode, (json.loads(last) if out.returncode == 0 else last)


@pytest.mark.slow
def test_config_flag_then_overrides():
  rc, config = _train_flags("--config=fashion_mnist", "--epochs=5", "--seed=3")
  assert rc == 0, config
  recipe = configs.get("fashion_mnist")
  assert (config["dataset"], config["backbone"]) == (recipe["dataset"], recipe["backbone"])
  assert (config["epochs"], config["specialist_epochs"], config["seed"]) == (
      5, recipe["specialist_epochs"], 3)
  # An override back to a flag's default value still wins over the recipe.
  rc, config = _train_flags("--config=imagenet_resnet50.smoke", "--image_size=224")
  assert rc == 0 and config["image_size"] == 224 and config["specialists"] == [0]
  rc, error = _train_flags("--config=imagenet")
  assert rc == 3 and "UsageError: unknown config 'imagenet'" in error
  rc, error = _train_flags("--config=fashion_mnist", "--epochz=5")
  assert rc == 3 and "Unknown command line flag 'epochz'" in error
  rc, error = _train_flags("--config=fashion_mnist", "--epochs=five")
  assert rc == 3 and "--epochs" in error and "five" in error


@pytest.mark.slow
def test_imagenet_smoke_recipe_trains_on_dummy_data(tmp_path):
  """The paper's recipe shrunk: MobileNetV2, superclassed_imagenet/full from the dummy
  ILSVRC2012 tree, random-resized crops, one step of flat, generalist and one specialist."""
  config = config_lib.TrainConfig(
      model_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "tfds"), manual_dir=str(DUMMY),
      **configs.get("imagenet_mobilenet_v2.smoke"))
  resolved = fit.train(config, log=lambda _: None)
  assert resolved.augment == "random_resized_crop" and resolved.framing == "center_crop"
  run = run_lib.Run(resolved)
  assert all(run.is_done(stage) for stage in (run_lib.FLAT, run.generalist,
                                               run_lib.specialist(0)))
