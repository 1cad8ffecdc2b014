"""`TrainConfig`: everything that defines a training run, saved as model_dir/config.json.

Each field carries its own help text and choices (field metadata): `super-sub-train` derives
its flags from them, so a default or a description lives here only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from super_sub import runs
from super_sub._internal import files
from super_sub.data import sources
from super_sub.errors import SuperSubError
from super_sub.formats import encodings
from super_sub.models import BACKBONES

STAGES = ("flat", "generalist", "router_head", "specialists")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
GENERALIST_INITS = ("scratch", "flat")
# How a specialist differs from the generalist it starts from (super_sub.training.deltas).
SPECIALIST_FORMS = ("delta", "affine", "sign", "lowrank")
# How a specialist's QAT weight quantizer ranges may move (super_sub.training.deltas.DeltaToBase).
DELTA_RANGES = ("pinned", "grow")
AUGMENTATIONS = ("none", "crop", "flip_crop", "random_resized_crop")
UNMAPPED = ("error", "skip")
# Keys that define what a model_dir holds; a re-run must agree on all of them.
IDENTITY_KEYS = ("dataset", "backbone", "image_size", "hierarchy", "qat")


class ConfigError(SuperSubError, ValueError):
  """A run's config.json that does not describe a TrainConfig; the message names the file."""


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None,  # pylint: disable=redefined-builtin
           flag: bool = True):
  """A config field with its flag's help text (and choices, for enum flags)."""
  return dataclasses.field(default=default,
                           metadata={"help": help, "choices": choices, "flag": flag})


@dataclasses.dataclass
class TrainConfig:
  """Everything that defines a training run (saved as model_dir/config.json)."""
  model_dir: str = dataclasses.field(metadata={
      "help": "Folder of the run (created; resumed if it exists).", "choices": None,
      "flag": True})
  dataset: str = _field("superclassed_synthetic", "TFDS name[/config], e.g. "
                        "superclassed_synthetic, superclassed_fashion_mnist, "
                        "superclassed_imagenet/64x64; folder:<PATH> (your own images, "
                        "<PATH>/<split>/[<superclass>/]<class>/<image>); or tfds:<name>[/<config>] "
                        "(any TFDS image classification dataset, with --hierarchy).")
  data_dir: str | None = _field(None, "TFDS data folder (default: TFDS's).")
  manual_dir: str | None = _field(None, "Folder of manually downloaded source files "
                                  "(ImageNet, Fashion-MNIST).")
  stage: str = _field("all", "What to train; `all` trains flat, generalist, the router "
                      "head (with --router_head), then every specialist.", STAGES + ("all",))
  backbone: str = _field("small_resnet", "small_resnet, small_resnet_wide, resnet18, resnet50 "
                         "or mobilenet_v2.")
  image_size: int | None = _field(None, "Image side fed to the network (default: the "
                                  "dataset's).")
  weights: str | None = _field(None, "Backbone initialisation: none (random), imagenet where "
                               "Keras offers it (downloads once), or an .h5 file of the "
                               "keras.applications model.")
  epochs: int = _field(10, "Epochs of flat and generalist.")
  specialist_epochs: int | None = _field(None, "Epochs of each specialist (default: --epochs).")
  batch_size: int = _field(64, "Batch size PER REPLICA; the global batch is this times the "
                           "replicas.")
  learning_rate: float = _field(2e-3, "Peak learning rate of AdamW: linear warm-up, then "
                                "cosine decay.")
  specialist_learning_rate: float | None = _field(
      None, "Peak learning rate of specialist fine-tuning (default: --learning_rate).")
  generalist_init: str = _field(
      "flat", "Initialise the generalist from the trained flat network's backbone (--stage=all "
      "trains flat first) or from scratch (the paper's recipe). From flat it routes better: on "
      "Fashion-MNIST at 2 epochs per network a scratch generalist's routing lost the "
      "specialists' gain and put Super-Sub below the flat network (README).", GENERALIST_INITS)
  flat_from: str | None = _field(
      None, "Take the flat network from another run's model_dir instead of training one: a run "
      "of the same dataset, backbone and image size whose flat stage is trained, under any "
      "hierarchy (its outputs are reordered to this run's classes, matched by name). Trying "
      "several hierarchies, e.g. ones learned from that run's confusions, then trains only the "
      "generalist and specialists, every one from the same flat network.")
  generalist_freeze_stages: int = _field(
      0, "With --generalist_init=flat: the generalist keeps the flat network's first K stages "
      "frozen (K = stages + 1: the whole backbone, only the superclass head trains). Its "
      "features then still separate subclasses, so specialists fine-tuned from it need "
      "smaller deltas.")
  learning_rate_base_batch: int | None = _field(
      None, "When set, every learning rate (--learning_rate, --specialist_learning_rate, "
      "--qat_learning_rate) is for a global batch of this many images and is scaled by "
      "global batch / this (the linear scaling rule, Goyal et al. 2017), so a recipe holds on "
      "any number of replicas. Default: rates are used as given.")
  warmup_epochs: float = _field(1.0, "Epochs of linear learning-rate warm-up.")
  weight_decay: float = _field(1e-4, "AdamW decoupled weight decay.")
  freeze_stages: int = _field(0, "Specialists keep the first K stages of the generalist frozen "
                              "(0: fine-tune everything). Their BatchNorm then stays the "
                              "generalist's everywhere, in inference mode, as with --freeze_bn "
                              "(except the affine form, which trains BatchNorm).")
  router_head: int = _field(
      0, "Route with a router head of this width instead of the generalist's tail: a strided "
      "3x3 convolution of W channels, BatchNorm, ReLU, a global average and a linear layer on "
      "the output of the first --freeze_stages stages (the shared trunk, which it keeps the "
      "generalist's), trained after the generalist (stage router_head; with --qat, "
      "quantization-aware). At 224 px it costs a few percent of a network where the "
      "generalist's tail costs 16-21%, so two-stage inference costs about one network "
      "(bench/router_head.py, bench/deployment.py). The generalist stays the specialists' "
      "base. 0: the generalist routes. Needs --freeze_stages >= 1.")
  router_head_epochs: int | None = _field(
      None, "Epochs of the router head (default: --epochs). Its epochs are cheap (the trunk only "
      "runs forward), and more of them route better: on Fashion-MNIST after 2-epoch networks, "
      "12 epochs cost 0.15 point of two-stage top-1 against the generalist's routing, 4 "
      "epochs 0.56 (BENCHMARKS.md).")
  augment: str | None = _field(
      None, "Augmentation. Default by the kind of data: random_resized_crop (Inception's "
      "crops of 8-100% of the area, decoding only the box, and flips; evaluation then takes "
      "the central 7/8 square) for large natural images (stored at varying sizes or >= 128 px, "
      "as superclassed_imagenet's full and 128x128 configs); flip_crop (pad-and-crop and "
      "flips) for other small images; crop for synthetic data, whose classes differ by "
      "orientation.", AUGMENTATIONS)
  cache_budget_gb: float = _field(
      4.0, "Keep a dataset's decoded images in memory when they take at most this many GiB "
      "(Fashion-MNIST: 0.05; superclassed_imagenet at 224 px: ~56); else stream them from the "
      "TFDS files every epoch. 0: never cache.")
  seed: int = _field(0, "Seed of initialisation, shuffling and augmentation.")
  strategy: str = _field("default", "tf.distribute strategy; multi_worker reads TF_CONFIG.",
                         STRATEGIES)
  steps_per_epoch: int | None = _field(None, "Cap the steps of an epoch (smoke runs).")
  mixed_precision: bool = _field(
      False, "Mixed precision: float16 compute on GPUs (mixed_float16, with loss scaling), "
      "bfloat16 on TPUs and CPUs (mixed_bfloat16); variables, the logits head and the loss "
      "stay float32. Combines with --jit_compile and every --strategy; not with --qat "
      "(tfmot's fake quantization is float32 only).")
  jit_compile: bool = _field(False, "XLA-compile the training step (Keras "
                             "compile(jit_compile=True)).")
  steps_per_execution: int = _field(
      1, "Training steps per call of the compiled train function (Keras "
      "compile(steps_per_execution=N)): fewer host round trips on accelerators. Callbacks (the "
      "history, the NaN guard's loss check) then see every N-th step, the guard naming the "
      "last step of the call whose loss went bad; specialists' projections still run after "
      "every step.")
  deterministic: bool = _field(
      False, "Bit-reproducible training where TensorFlow allows it: deterministic ops "
      "(tf.config.experimental.enable_op_determinism: slower on GPUs, and an op without a "
      "deterministic kernel raises), everything seeded by --seed, and each epoch's order, crops, "
      "flips and dustbin draws a function of (seed, epoch), so a resumed stage sees the inputs "
      "an uninterrupted one would have. Two runs of one command on one machine and software "
      "stack give the same weights.")
  specialists: tuple[int, ...] | None = _field(
      None, "Superclass indices whose specialists to train (default: all with >= 2 "
      "subclasses).")
  # Cheap specialists (super_sub.training.deltas).
  delta_l1: float = _field(
      0.0, "Specialists: L1 penalty weight on W - W_generalist, applied as a proximal step "
      "after every update (soft threshold = this x learning rate). Larger: sparser, smaller "
      "deltas, less room to specialise; 0: dense deltas (plain fine-tuning).")
  delta_keep: float | None = _field(
      None, "Specialists: budget, the fraction of backbone kernel weights that may differ from "
      "the generalist's (e.g. 0.02). The largest changes (in int8 steps) are kept by gradual "
      "magnitude pruning over the first two thirds of the epochs, the rest recovers with the "
      "mask fixed. Pair with --freeze_bn: free BatchNorm statistics change every folded "
      "weight anyway. With --specialist_form=sign: the budget is spent on whole output "
      "channels (those that would move most, in int8 steps), and the others stay the "
      "generalist's and store no sign bits. Default: no budget.")
  specialist_form: str | None = _field(
      None, "What a specialist may change of the generalist it starts from. Default: sign "
      "with --qat (the compression frontier's best point: within 0.3 point of dense "
      "specialists at a quarter to a third of their bytes, BENCHMARKS.md), unless --delta_keep, "
      "--delta_l1 or --delta_ranges=grow asks for a delta; delta otherwise. delta: its "
      "kernels (W - W_generalist, dense, or sparse with --delta_keep / --delta_l1), BatchNorm "
      "unless --freeze_bn, and the head. affine: only a scale and a shift per channel "
      "(BatchNorm's gamma, beta and statistics) and the head; every kernel stays the "
      "generalist's, so its int8 weights are the base's byte for byte (TFLite folds BatchNorm "
      "into the per-channel quantization scales and the biases) and the stored delta holds "
      "only biases and scales (TinyTL, Cai et al. 2020). sign (needs --qat): every kernel "
      "weight moves up or down by its channel's amount, a whole number of int8 steps, "
      "BatchNorm as with delta; the bundle stores about one bit per weight (BitDelta, Liu et "
      "al. 2024). lowrank (needs --qat): each kernel's int8 weights move by an integer "
      "product of two int8 factors of rank --delta_rank (LoRA, Hu et al. 2021, per "
      "[output channels, kernel size] matrix), BatchNorm as with delta, depthwise kernels "
      "the generalist's; the bundle stores the factors.", SPECIALIST_FORMS)
  delta_rank: int = _field(8, "With --specialist_form=lowrank: the rank of each kernel's "
                           "delta (a kernel that allows less gets its full rank).")
  delta_ranges: str = _field(
      "pinned", "With --qat, specialists' weight quantizer ranges: pinned to the generalist's "
      "(an unchanged weight keeps its int8 value; a weight that grows past its channel's range "
      "is clipped in int8) or grow: widened for just the channels whose changed weights "
      "outgrew them (those channels' int8 scales, and so all their int8 weights, change).",
      DELTA_RANGES)
  freeze_bn: bool = _field(
      False, "Specialists keep the generalist's BatchNorm (parameters and statistics): smaller "
      "deltas, since re-estimated statistics change every folded weight.")
  qat: bool = _field(
      False, "Quantization-aware training (tfmot): after the float generalist, a "
      "generalist_qat stage fine-tunes its QAT version; specialists start from it with its "
      "weight quantizer ranges pinned, so their int8 deltas over the base are whole steps "
      "(sign specialists by default, see --specialist_form).")
  qat_epochs: int = _field(2, "Epochs of the generalist_qat stage.")
  qat_learning_rate: float | None = _field(None, "Peak learning rate of the generalist_qat "
                                           "stage (default: --learning_rate / 10).")
  # Specialists that learn from the flat network's soft targets (super_sub.training.distill).
  distill_from: str | None = _field(
      None, "Specialists also learn from a teacher's soft targets over their subclasses "
      "(Hinton et al. 2015): `flat`, this run's network trained on every subclass (--stage=all "
      "trains it first), or the model_dir of another run on the same data whose specialists "
      "teach the specialists of the same superclasses (e.g. dense ones teaching compressed "
      "ones). Default: hard labels only.")
  distill_weight: float = _field(0.5, "With --distill_from: the soft targets' share w of the "
                                 "specialist loss, in [0, 1].")
  distill_temperature: float = _field(2.0, "With --distill_from: the temperature T softening "
                                      "teacher and specialist logits (> 0).")
  dustbin: float = _field(
      0.0, "Specialists with a dustbin: each also trains on images of the other superclasses, "
      "this many per image of its own (e.g. 0.25, drawn afresh every epoch), labelled 'not "
      "mine' (an extra output; Hinton et al. 2015's specialists, HD-CNN). Hard routing then "
      "sends an image its specialist calls 'not mine' to the second superclass's specialist; "
      "soft routing discounts it. 0: no dustbin. Not exportable to bundles yet.")
  hierarchy: str | None = _field(
      None, "With --dataset=folder:/tfds: how classes group into superclasses: a hierarchy JSON "
      "or shipped name (its subclasses name the class folders, or the TFDS labels, by name or "
      "WordNet id), or for tfds: from_feature:<coarse label feature>; a folder in the "
      "<superclass>/<class>/ layout needs none, a flat folder without one trains one "
      "superclass. Other datasets carry their own: it is filled in with its name.")
  unmapped_labels: str = _field(
      "error", "With --dataset=folder:/tfds: classes outside --hierarchy are an error, or "
      "skipped and counted.", UNMAPPED)

  def __post_init__(self):
    if self.specialist_form is None:
      self.specialist_form = default_specialist_form(self)
    # A folder or hierarchy file is saved as an absolute path: the run reads it from anywhere.
    self.dataset = sources.canonical(self.dataset)
    if sources.takes_hierarchy(self.dataset):
      self.hierarchy = sources.canonical_hierarchy(self.hierarchy)
    if self.flat_from is not None:
      self.flat_from = os.path.abspath(os.path.expanduser(self.flat_from))
      if self.flat_from == os.path.abspath(os.path.expanduser(self.model_dir)):
        raise ValueError("flat_from names this run's own model_dir; give the run whose flat "
                         "network to take")
    for name in ("stage", "strategy", "generalist_init", "augment", "specialist_form",
                 "delta_ranges", "unmapped_labels"):
      choices = TrainConfig.__dataclass_fields__[name].metadata["choices"]
      value = getattr(self, name)
      if value is not None and value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    if self.generalist_freeze_stages and self.generalist_init != "flat":
      raise ValueError("generalist_freeze_stages keeps stages of the flat network, so it "
                       "needs generalist_init='flat'")
    if self.epochs < 1 or self.batch_size < 1:
      raise ValueError(f"epochs and batch_size must be positive; got epochs={self.epochs}, "
                       f"batch_size={self.batch_size}")
    if self.backbone not in BACKBONES:
      raise ValueError(f"unknown backbone {self.backbone!r}; choose one of "
                       f"{', '.join(BACKBONES)}")
    if self.steps_per_execution < 1:
      raise ValueError(f"steps_per_execution must be a positive number of steps; got "
                       f"{self.steps_per_execution}")
    if self.delta_keep is not None and not 0.0 <= self.delta_keep <= 1.0:
      raise ValueError(f"delta_keep is the fraction of kernel weights a specialist may "
                       f"change, in [0, 1]; got {self.delta_keep}")
    if self.specialist_form == "affine":
      conflicts = [flag for flag, on in (("--delta_keep", self.delta_keep is not None),
                                         ("--delta_l1", self.delta_l1 != 0.0),
                                         ("--freeze_bn", self.freeze_bn)) if on]
      if conflicts:
        raise ValueError(f"specialist_form='affine' keeps every kernel the generalist's and "
                         f"trains BatchNorm, so it cannot be combined with "
                         f"{' or '.join(conflicts)} (options of specialist_form='delta')")
    if self.specialist_form in ("sign", "lowrank"):
      conflicts = [flag for flag, on in (
          ("--delta_keep", self.delta_keep is not None and self.specialist_form == "lowrank"),
          ("--delta_l1", self.delta_l1 != 0.0)) if on]
      refused = "--delta_l1" if self.specialist_form == "sign" else "--delta_keep or --delta_l1"
      if conflicts or not self.qat:
        raise ValueError(f"specialist_form={self.specialist_form!r} moves kernel weights by whole "
                         f"int8 steps of the base's pinned quantizer ranges, so it needs "
                         f"qat=True and cannot be combined with {refused}; got "
                         f"qat={self.qat}{''.join(', ' + c for c in conflicts)}")
    if not 1 <= self.delta_rank <= encodings.MAX_RANK:
      raise ValueError(f"delta_rank must be in [1, {encodings.MAX_RANK}] (the bundle's integer "
                       f"product stays exact up to there); got {self.delta_rank}")
    if self.delta_ranges == "grow" and (not self.qat or self.specialist_form != "delta"):
      raise ValueError("delta_ranges='grow' widens the QAT weight quantizer ranges of changed "
                       "kernels, so it needs qat=True and specialist_form='delta'")
    if self.mixed_precision and self.qat:
      raise ValueError("mixed_precision cannot be combined with qat: tfmot's fake-quantization "
                       "layers compute in float32 only; train the float stages with "
                       "--mixed_precision and the QAT stages without it")
    if self.learning_rate_base_batch is not None and self.learning_rate_base_batch < 1:
      raise ValueError(f"learning_rate_base_batch must be a positive number of images; got "
                       f"{self.learning_rate_base_batch}")
    if not self.cache_budget_gb >= 0:
      raise ValueError(f"cache_budget_gb must be >= 0; got {self.cache_budget_gb}")
    if not 0.0 <= self.dustbin <= 10.0:
      raise ValueError(f"dustbin is the number of other superclasses' images per own image a "
                       f"specialist trains on, in [0, 10]; got {self.dustbin}")
    if self.distill_from is not None and not self.distill_from.strip():
      raise ValueError("distill_from must be 'flat' or the model_dir of a run whose specialists "
                       "teach; got an empty string")
    if not 0.0 <= self.distill_weight <= 1.0 or not self.distill_temperature > 0:
      raise ValueError(f"distill_weight must lie in [0, 1] and distill_temperature be "
                       f"positive; got {self.distill_weight} and {self.distill_temperature}")
    if self.router_head < 0 or (self.router_head and self.freeze_stages < 1):
      raise ValueError(f"router_head is the width of a head on the shared trunk, so it needs "
                       f"a width >= 0 (0: none) and freeze_stages >= 1; got "
                       f"router_head={self.router_head}, freeze_stages={self.freeze_stages}")
    if self.stage == "router_head" and not self.router_head:
      raise ValueError("stage='router_head' trains the router head, and router_head=0 asks "
                       "for none: give its width with --router_head=W")
    if self.router_head_epochs is not None and self.router_head_epochs < 1:
      raise ValueError(f"router_head_epochs must be positive; got {self.router_head_epochs}")
    if self.specialists is not None:
      self.specialists = tuple(int(k) for k in self.specialists)

  @property
  def framing(self) -> str:
    """How evaluation frames an image: the center crop after random-resized-crop training,
    else the whole image resized (super_sub.data.images)."""
    return "center_crop" if self.augment == "random_resized_crop" else "resize"

  def stages(self) -> tuple[str, ...]:
    """The stages `stage` asks for, in training order (`all`: the router head only with
    router_head > 0)."""
    if self.stage != "all":
      return (self.stage,)
    return tuple(s for s in STAGES if s != "router_head" or self.router_head)

  def dataset_options(self) -> dict[str, Any]:
    """The keyword arguments `super_sub.data.prepare.open_builder` takes with `dataset`: the
    hierarchy and unmapped labels of a folder: or tfds: dataset, none for the others."""
    if not sources.takes_hierarchy(self.dataset):
      return {}
    return {"hierarchy": self.hierarchy, "unmapped_labels": self.unmapped_labels}

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def clashes(saved: TrainConfig, asked: dict[str, Any]) -> list[str]:
  """'key: model_dir has X, asked for Y' for each key of `asked` whose value the run's saved
  config does not have (what a refusal to reuse a run names)."""
  return [f"{k}: model_dir has {getattr(saved, k)!r}, asked for {v!r}" for k, v in asked.items()
          if getattr(saved, k) != v]


def default_specialist_form(config: TrainConfig) -> str:
  """The specialist form a config gets when it names none: sign for a QAT run (one bit a
  weight, within 0.3 point of dense deltas on every base the frontier measured), unless an
  option of the delta form (a budget, an L1 penalty, growing ranges) asks for a delta."""
  wants_delta = (config.delta_keep is not None or config.delta_l1 != 0.0
                 or config.delta_ranges == "grow")
  return "sign" if config.qat and not wants_delta else "delta"


def specialist_batchnorm_frozen(config: TrainConfig) -> bool:
  """Whether specialists keep the generalist's BatchNorm (parameters and statistics) and run it
  in inference mode: with --freeze_bn, and below a frozen trunk (--freeze_stages) for every form
  but affine.

  A frozen trunk runs its BatchNorm in inference mode, on the generalist's moving statistics.
  Where those do not describe its activations (short stages: at MobileNetV2's momentum 0.999 they
  kept 93% of their initial variance after 76 steps), its output barely varies across a batch, and a
  BatchNorm after it in training mode divides by sqrt(batch variance + epsilon) ~ sqrt(epsilon):
  each one multiplied the backward gradient by up to gamma / sqrt(epsilon) (31.6 at 1e-3).
  At 224 px that reached 1e27 at the trunk's edge; Adam's second moment (its square) overflowed
  float32 in the first step and turned NaN in the second (bench/qat_divergence.py).
  """
  return config.freeze_bn or (config.freeze_stages > 0 and config.specialist_form != "affine")


def load_config(model_dir: str, data_dir: str | None = None) -> TrainConfig:
  """The resolved config a run saved in its model_dir (`data_dir` overrides the saved one).

  Raises:
    FileNotFoundError: model_dir holds no config.json (it is not a run).
    ConfigError: config.json cannot be read, is not a JSON object, has unknown or missing keys,
      or holds a value of the wrong type or one that TrainConfig rejects.
  """
  path = runs.config_path(model_dir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {model_dir} is not a super-sub-train run")
  saved = files.read_json(path, ConfigError, invalid="not valid UTF-8 JSON")
  if not isinstance(saved, dict):
    raise ConfigError(f"{path}: expected a JSON object of TrainConfig fields, got "
                      f"{type(saved).__name__}")
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
  unknown = set(saved) - set(fields)
  if unknown:
    raise ConfigError(f"{path} has unknown keys {sorted(unknown)}")
  missing = [name for name, f in fields.items() if name not in saved
             and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
  if missing:
    raise ConfigError(f"{path}: missing key(s) {missing}")
  for name, value in saved.items():
    expected = _json_mismatch(str(fields[name].type), value)
    if expected:
      raise ConfigError(f"{path}: {name!r} must be {expected}; got {value!r:.80}")
  # Runs saved before specialist_form existed trained delta specialists, QAT or not.
  saved.setdefault("specialist_form", "delta")
  try:
    # The folder it was read from is the run's folder, wherever it was trained: a run that
    # was moved or copied reads its stages here, not where config.json says it once lived.
    return TrainConfig(**{**saved, "model_dir": str(model_dir),
                          **({"data_dir": data_dir} if data_dir else {})})
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{path}: {e}") from None


# What config.json may hold for each field annotation (JSON writes a tuple as a list).
_JSON_TYPES = {"str": ((str,), "a string"), "int": ((int,), "an integer"),
               "float": ((int, float), "a finite number"), "bool": ((bool,), "true or false"),
               "tuple[int, ...]": ((list,), "a list of integers")}


def _json_mismatch(annotation: str, value: Any) -> str | None:
  """What a field annotated `annotation` needs, when the JSON `value` is not that; else None."""
  base, _, optional = annotation.partition(" | ")
  if base not in _JSON_TYPES or (value is None and optional == "None"):
    return None  # an annotation config.json cannot express is left to TrainConfig
  types, what = _JSON_TYPES[base]
  fits = isinstance(value, types) and (base == "bool" or not isinstance(value, bool))
  if fits and isinstance(value, float):
    fits = math.isfinite(value)
  if fits and isinstance(value, list):
    fits = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
  return None if fits else what + (" or null" if optional == "None" else "")


def resolve(config: TrainConfig, builder) -> TrainConfig:
  """Fills the fields left to the dataset (image size, augmentation, hierarchy)."""
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  hierarchy = builder.hierarchy
  pipeline.check_hierarchy_matches(builder, hierarchy)
  if hierarchy.num_superclasses < 2 and set(config.stages()) - {"flat"}:
    raise sources.DatasetError(
        f"{config.dataset} has one superclass ({hierarchy.superclass_names[0]!r}), so only the "
        "flat network can be trained: pass --stage=flat, or give the classes superclasses "
        "(--hierarchy, or the <split>/<superclass>/<class>/ layout)")
  image_size = config.image_size or builder.info.features["image"].shape[0]
  if image_size is None:
    raise sources.DatasetError(f"{config.dataset} holds images of several sizes: give the "
                               "side the network takes with --image_size (e.g. 224)")
  return dataclasses.replace(
      config,
      image_size=image_size,
      augment=config.augment or default_augmentation(builder),
      specialist_epochs=config.specialist_epochs or config.epochs,
      specialist_learning_rate=config.specialist_learning_rate or config.learning_rate,
      # folder: and tfds: keep the option they were built with (it reopens the dataset).
      hierarchy=config.hierarchy if sources.takes_hierarchy(config.dataset) else hierarchy.name)


def default_augmentation(builder) -> str:
  """The augmentation the kind of data calls for (see the `augment` field): large natural
  images (`super_sub.data.images.is_large`) get random-resized crops."""
  from super_sub.data import images  # pylint: disable=import-outside-toplevel
  if "synthetic" in builder.name:
    return "crop"
  if images.is_large(*builder.info.features["image"].shape[:2]):
    return "random_resized_crop"
  return "flip_crop"
