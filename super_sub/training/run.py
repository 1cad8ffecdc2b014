"""A run: one model_dir, opened once, and everything training, evaluation and export read from it.

The folder's layout (config.json, each stage's weights and metrics.json, eval.json,
predictions/, export/) and the typed `Stage`s are super_sub.runs', which needs no TensorFlow.
"""

from __future__ import annotations

import functools
import os

import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub import runs
from super_sub._internal import files
from super_sub._internal.compat import keras
from super_sub.errors import SuperSubError
from super_sub.models import backbones
from super_sub.models import classifiers
from super_sub.models import router_head
from super_sub.training import config as config_lib
from super_sub.training import qat as qat_lib

import super_sub.datasets  # pylint: disable=unused-import,wrong-import-order  (registers the builders)


ROLES = runs.ROLES
Stage = runs.Stage
FLAT, ROUTER_HEAD, GENERALIST, GENERALIST_QAT = (runs.FLAT, runs.ROUTER_HEAD, runs.GENERALIST,
                                                 runs.GENERALIST_QAT)
specialist = runs.specialist


class RunMismatchError(SuperSubError, ValueError):
  """A model_dir that holds another run (dataset, backbone, image size, hierarchy or QAT)."""


def check_identity(config: config_lib.TrainConfig) -> None:
  """Refuses a model_dir whose config.json holds another run than `config`.

  Compares every identity key (config.IDENTITY_KEYS) that `config` gives: an unresolved config
  leaves image_size and hierarchy to the dataset (None), so `train` can call this before it
  prepares the dataset, and a refused run downloads and builds nothing. A new model_dir (no
  config.json) passes.

  Raises:
    RunMismatchError: naming each identity key that differs; nothing is written.
    ConfigError: the model_dir's config.json is malformed.
  """
  if not os.path.exists(runs.config_path(config.model_dir)):
    return
  saved = config_lib.load_config(config.model_dir)  # older runs: missing keys take defaults
  asked = {k: getattr(config, k) for k in config_lib.IDENTITY_KEYS
           if getattr(config, k) is not None}
  clashes = config_lib.clashes(saved, asked)
  if clashes:
    raise RunMismatchError(f"{config.model_dir} holds a different run ({'; '.join(clashes)}). "
                           "Use another --model_dir; nothing was changed.")


class Run:
  """A model_dir and what it holds: its config, dataset, hierarchy, stages and their models.

  Attributes:
    config: the run's resolved TrainConfig.
    model_dir: the run's folder.
  """

  def __init__(self, config: config_lib.TrainConfig,
               builder: tfds.core.DatasetBuilder | None = None):
    """A run of `config` (resolved: image size and hierarchy filled in); `builder` is the
    prepared dataset, opened from the config when not given."""
    self.config = config
    self.model_dir = config.model_dir
    if builder is not None:
      self.__dict__["builder"] = builder  # fills the cached property

  @classmethod
  def open(cls, model_dir: str, data_dir: str | None = None) -> "Run":
    """The run saved in `model_dir` (`data_dir` overrides the saved TFDS folder).

    Raises:
      FileNotFoundError: model_dir is not a super-sub-train run.
    """
    return cls(config_lib.load_config(model_dir, data_dir))

  @classmethod
  def create(cls, config: config_lib.TrainConfig,
             builder: tfds.core.DatasetBuilder) -> "Run":
    """Writes the resolved `config` into a new model_dir, or checks that an existing one holds
    the same run (dataset, backbone, image size, hierarchy, QAT) and updates it.

    Raises:
      ValueError: naming each identity key where the model_dir holds something else; nothing
        is written then.
    """
    check_identity(config)
    files.write_json(runs.config_path(config.model_dir), config.to_dict())
    return cls(config, builder)

  # --- the dataset ---------------------------------------------------------------------------
  @functools.cached_property
  def builder(self) -> tfds.core.DatasetBuilder:
    """The run's TFDS builder (the dataset must be prepared)."""
    from super_sub.data import prepare  # pylint: disable=import-outside-toplevel
    return prepare.open_builder(self.config.dataset, self.config.data_dir,
                                **self.config.dataset_options())

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    return self.builder.hierarchy

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images the run's models take."""
    channels = self.builder.info.features["image"].shape[-1]
    return (self.config.image_size, self.config.image_size, channels)

  @property
  def evaluation_split(self) -> str:
    """"validation" where the dataset has it, else "test" (Fashion-MNIST).

    Raises:
      ValueError: the dataset lacks a train split or both evaluation splits.
      sources.DatasetError: the dataset is not prepared in the run's data folder.
    """
    from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
    pipeline.require_prepared(self.builder)
    splits = set(self.builder.info.splits)
    split = "validation" if "validation" in splits else "test"
    if "train" not in splits or split not in splits:
      raise ValueError(f"{self.builder.name} needs a train split and a validation or test "
                       f"split; it has {sorted(splits)}")
    return split

  def evaluation_input(self, batch_size: int) -> "pipeline.InputSpec":
    """How evaluation, calibration and parity read images: the run's size and framing, no
    augmentation, no cache (one pass)."""
    from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.InputSpec(role="flat", batch_size=batch_size,
                              image_size=self.config.image_size, augment="none",
                              framing=self.config.framing, cache_budget=0)

  # --- stages and folders --------------------------------------------------------------------
  @property
  def generalist(self) -> Stage:
    """The stage whose model routes images and is the specialists' base."""
    return GENERALIST_QAT if self.config.qat else GENERALIST

  def specialists(self) -> dict[int, Stage]:
    """Superclass -> specialist stage, for every superclass that has a specialist."""
    return {k: specialist(k) for k in self.hierarchy.specialist_superclasses()}

  def stage_dir(self, stage: Stage) -> str:
    name = (self.hierarchy.superclasses[stage.superclass].name if stage.role == "specialist"
            else None)
    return runs.stage_dir(self.model_dir, stage, name)

  def is_done(self, stage: Stage) -> bool:
    return runs.is_done(self.stage_dir(stage))

  def metrics(self, stage: Stage) -> dict:
    """A finished stage's metrics.json."""
    return runs.read_metrics(self._finished(stage))

  # --- models --------------------------------------------------------------------------------
  def build_model(self, stage: Stage, weights: str | None = None) -> keras.Model:
    """The untrained model of `stage` (`weights`: the backbone's initialisation)."""
    h, shape = self.hierarchy, self.image_shape
    if stage.qat:
      return qat_lib.quantize(self.build_model(GENERALIST))
    if stage.role in ("flat", "generalist"):
      num_classes = h.num_subclasses if stage.role == "flat" else h.num_superclasses
      backbone = backbones.build_backbone(self.config.backbone, shape, weights=weights)
      return classifiers.build_classifier(backbone, shape, num_classes, role=stage.role,
                                          name=stage.key)
    if stage.role == "router_head":  # the generalist's trunk is copied in by training
      model = router_head.build_router_head(self.build_model(GENERALIST),
                                            self.config.freeze_stages, self.config.router_head)
      return qat_lib.quantize(model) if self.config.qat else model
    dustbin = 1 if self.config.dustbin else 0  # the extra "not mine" output
    model = classifiers.make_specialist(
        self.build_model(GENERALIST), len(h.superclasses[stage.superclass].subclasses) + dustbin,
        name=stage.key, freeze_stages=self.config.freeze_stages)
    return qat_lib.quantize(model) if self.config.qat else model

  def load_model(self, stage: Stage) -> keras.Model:
    """A finished stage's model, from its final weights.

    Raises:
      FileNotFoundError: the stage has not finished training.
    """
    model = self.build_model(stage)
    model.load_weights(runs.weights_prefix(self._finished(stage))).expect_partial()
    return model

  def load_factors(self, stage: Stage) -> list:
    """A finished low-rank specialist's factors (`deltas.load_factors`).

    Raises:
      FileNotFoundError: the stage has not finished, or was not trained low-rank.
    """
    from super_sub.training import deltas  # pylint: disable=import-outside-toplevel
    path = os.path.join(self._finished(stage), deltas.FACTORS_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist: stage {stage.key!r} was not trained "
                              f"with --specialist_form=lowrank (or predates it)")
    return deltas.load_factors(path)

  def load_two_stage(self, flat: keras.Model | None = None):
    """The generalist, the router head if the run has one, and every specialist as a
    `super_sub.routing.TwoStage` (`flat`: the loaded flat network, for the routers that use
    it)."""
    from super_sub.routing import two_stage  # pylint: disable=import-outside-toplevel
    return two_stage.TwoStage(self.load_model(self.generalist),
                              {k: self.load_model(s) for k, s in self.specialists().items()},
                              self.hierarchy, flat=flat,
                              head=(self.load_model(ROUTER_HEAD) if self.config.router_head
                                    else None))

  def _finished(self, stage: Stage) -> str:
    folder = self.stage_dir(stage)
    if not self.is_done(stage):
      raise FileNotFoundError(f"stage {stage.key!r} has not finished training in {folder}; run "
                              f"super-sub-train with --model_dir={self.model_dir} first")
    return folder
