"""Trains the flat baseline, the generalist and the specialists with Keras `fit`.

A run lives in one `model_dir`:

  model_dir/config.json                 the resolved TrainConfig (identity checked on re-runs)
  model_dir/<stage>/backup/             BackupAndRestore state while a stage is unfinished
  model_dir/<stage>/weights/            final weights (TF checkpoint), written atomically
  model_dir/<stage>/metrics.json        written last: a stage with it is done
  model_dir/<stage>/history.csv, logs/  per-epoch metrics and TensorBoard logs

with <stage> one of `flat`, `generalist`, `specialists/<k>_<superclass name>`.
Re-running the same command resumes an interrupted stage at its last finished epoch
(weights, optimizer state and epoch count) and skips finished stages.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import time
from typing import Callable, Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub import compression
from super_sub import data
from super_sub import files
from super_sub import hierarchy as hierarchy_lib
from super_sub import input_pipeline
from super_sub import models
from super_sub.compat import keras

STAGES = ("flat", "generalist", "specialists")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
GENERALIST_INITS = ("scratch", "flat")
# Keys that define what a model_dir holds; a re-run must agree on all of them.
IDENTITY_KEYS = ("dataset", "backbone", "image_size", "hierarchy", "qat")


@dataclasses.dataclass
class TrainConfig:
  """Everything that defines a training run (saved as model_dir/config.json)."""
  model_dir: str
  dataset: str = "superclassed_synthetic"
  data_dir: str | None = None
  manual_dir: str | None = None
  stage: str = "all"
  backbone: str = "small_resnet"
  image_size: int | None = None        # None: the dataset's own image size
  weights: str | None = None           # "imagenet" where the backbone supports it
  epochs: int = 10
  specialist_epochs: int | None = None  # None: same as epochs
  batch_size: int = 64                  # per replica; the global batch is this x replicas
  learning_rate: float = 2e-3
  specialist_learning_rate: float | None = None  # None: same as learning_rate
  generalist_init: str = "scratch"      # "flat": start from the trained flat network
  generalist_freeze_stages: int = 0     # with "flat": keep the flat network's first K stages
  warmup_epochs: float = 1.0
  weight_decay: float = 1e-4
  freeze_stages: int = 0
  augment: str | None = None            # None: "crop" for synthetic data, else "flip_crop"
  seed: int = 0
  strategy: str = "default"
  steps_per_epoch: int | None = None    # None: one pass over the data (smoke runs cap it)
  specialists: tuple[int, ...] | None = None  # None: every superclass with >= 2 subclasses
  # Cheap specialists (super_sub.compression): see train/train.py's flags for the trade-offs.
  delta_l1: float = 0.0                 # L1 weight on W - W_base (proximal); 0: dense deltas
  delta_keep: float | None = None       # budget: fraction of kernel weights that may change
  freeze_bn: bool = False               # specialists keep the generalist's BatchNorm
  qat: bool = False                     # quantization-aware generalist_qat + specialists
  qat_epochs: int = 2
  qat_learning_rate: float | None = None  # None: learning_rate / 10
  hierarchy: str | None = None          # filled in from the dataset

  def __post_init__(self):
    if self.stage not in STAGES + ("all",):
      raise ValueError(f"stage must be one of {STAGES + ('all',)}, got {self.stage!r}")
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if self.generalist_init not in GENERALIST_INITS:
      raise ValueError(f"generalist_init must be one of {GENERALIST_INITS}, "
                       f"got {self.generalist_init!r}")
    if self.generalist_freeze_stages and self.generalist_init != "flat":
      raise ValueError("generalist_freeze_stages keeps stages of the flat network, so it "
                       "needs generalist_init='flat'")
    if self.epochs < 1 or self.batch_size < 1:
      raise ValueError("epochs and batch_size must be positive")
    if self.delta_keep is not None and not 0.0 <= self.delta_keep <= 1.0:
      raise ValueError(f"delta_keep is the fraction of kernel weights a specialist may "
                       f"change, in [0, 1]; got {self.delta_keep}")

  def stages(self) -> tuple[str, ...]:
    return STAGES if self.stage == "all" else (self.stage,)


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (see STRATEGIES)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":  # Reads the cluster from the TF_CONFIG environment variable.
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def split_cpu(num_devices: int) -> None:
  """Splits the CPU into `num_devices` logical devices (before TensorFlow starts using it)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def load_config(model_dir: str, data_dir: str | None = None) -> TrainConfig:
  """The resolved config a run saved in its model_dir (`data_dir` overrides the saved one)."""
  path = os.path.join(model_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {model_dir} is not a super-sub-train run")
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  unknown = set(saved) - set(TrainConfig.__dataclass_fields__)
  if unknown:
    raise ValueError(f"{path} has unknown keys {sorted(unknown)}")
  return TrainConfig(**{**saved, **({"data_dir": data_dir} if data_dir else {})})


def resolve(config: TrainConfig, builder: tfds.core.DatasetBuilder) -> TrainConfig:
  """Fills the fields left to the dataset (image size, augmentation, hierarchy)."""
  hierarchy = builder.hierarchy
  input_pipeline.check_hierarchy_matches(builder, hierarchy)
  return dataclasses.replace(
      config,
      image_size=config.image_size or builder.info.features["image"].shape[0],
      augment=config.augment or ("crop" if "synthetic" in builder.name else "flip_crop"),
      specialist_epochs=config.specialist_epochs or config.epochs,
      specialist_learning_rate=config.specialist_learning_rate or config.learning_rate,
      hierarchy=hierarchy.name)


def check_model_dir(config: TrainConfig) -> None:
  """Writes config.json into a new model_dir, or checks that an existing one agrees.

  Raises:
    ValueError: naming each identity key where the model_dir holds something else.
  """
  path = os.path.join(config.model_dir, "config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    fields = TrainConfig.__dataclass_fields__
    held = {k: saved.get(k, fields[k].default) for k in IDENTITY_KEYS}  # older runs lack keys
    clashes = [f"{k}: model_dir has {held[k]!r}, asked for {getattr(config, k)!r}"
               for k in IDENTITY_KEYS if held[k] != getattr(config, k)]
    if clashes:
      raise ValueError(f"{config.model_dir} holds a different run ({'; '.join(clashes)}). "
                       "Use another --model_dir; nothing was changed.")
  files.write_json(path, dataclasses.asdict(config))


def stage_dirs(config: TrainConfig, hierarchy: hierarchy_lib.Hierarchy) -> dict[str, str]:
  """Stage key -> its folder, e.g. {"flat": ".../flat", "specialist_0": ".../specialists/0_tops"}."""
  dirs = {"flat": os.path.join(config.model_dir, "flat"),
          "generalist": os.path.join(config.model_dir, "generalist")}
  if config.qat:
    dirs["generalist_qat"] = os.path.join(config.model_dir, "generalist_qat")
  for k in models.specialist_superclasses(hierarchy):
    name = hierarchy.superclasses[k].name.replace("/", "_").replace(" ", "_")
    dirs[f"specialist_{k}"] = os.path.join(config.model_dir, "specialists", f"{k}_{name}")
  return dirs


def is_done(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, "metrics.json"))


def image_shape(config: TrainConfig, builder: tfds.core.DatasetBuilder) -> tuple[int, int, int]:
  channels = builder.info.features["image"].shape[-1]
  return (config.image_size, config.image_size, channels)


def generalist_key(config: TrainConfig) -> str:
  """The stage whose model routes images and is the specialists' base."""
  return "generalist_qat" if config.qat else "generalist"


def build_model(config: TrainConfig, builder: tfds.core.DatasetBuilder, key: str,
                weights: str | None = None) -> keras.Model:
  """The untrained model of stage `key` ("flat", "generalist[_qat]" or "specialist_<k>")."""
  h = builder.hierarchy
  shape = image_shape(config, builder)
  if key == "generalist_qat":
    return compression.quantize(build_model(config, builder, "generalist"))
  if key in ("flat", "generalist"):
    num_classes = h.num_subclasses if key == "flat" else h.num_superclasses
    backbone = models.build_backbone(config.backbone, shape, weights=weights)
    return models.build_classifier(backbone, shape, num_classes, role=key, name=key)
  k = int(key.split("_")[1])
  specialist = models.make_specialist(build_model(config, builder, "generalist"),
                                      len(h.superclasses[k].subclasses), name=key,
                                      freeze_stages=config.freeze_stages)
  return compression.quantize(specialist) if config.qat else specialist


def load_model(config: TrainConfig, builder: tfds.core.DatasetBuilder, key: str) -> keras.Model:
  """A trained stage's model, from its final weights."""
  stage_dir = stage_dirs(config, builder.hierarchy)[key]
  if not is_done(stage_dir):
    raise FileNotFoundError(f"stage {key!r} has not finished training in {stage_dir}; run "
                            f"super-sub-train with --model_dir={config.model_dir} first")
  model = build_model(config, builder, key)
  model.load_weights(os.path.join(stage_dir, "weights", "model")).expect_partial()
  return model


def train(config: TrainConfig, log: Callable[[str], None] = print,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainConfig:
  """Trains the stages `config.stage` asks for, resuming or skipping what is done.

  Args:
    config: the run.
    log: where progress lines go.
    callbacks: extra Keras callbacks for every stage, run after super-sub's own
      (BackupAndRestore has saved an epoch before they see its end).

  Returns:
    The resolved config (image size, augmentation and hierarchy filled in).
  Raises:
    ValueError: the model_dir holds another run, or the dataset has no super-sub hierarchy.
    FileNotFoundError: specialists asked for before the generalist is trained.
  """
  builder = data.prepare(config.dataset, config.data_dir, config.manual_dir)
  config = resolve(config, builder)
  check_model_dir(config)
  keras.utils.set_random_seed(config.seed)
  strategy = make_strategy(config.strategy)
  dirs = stage_dirs(config, builder.hierarchy)
  specialist_keys = _specialist_keys(config, builder.hierarchy)  # fails before any training
  for stage in config.stages():
    keys = {"specialists": specialist_keys,
            "generalist": ["generalist"] + (["generalist_qat"] if config.qat else [])
            }.get(stage, [stage])
    for key in keys:
      if is_done(dirs[key]):
        log(f"[{key}] already trained in {dirs[key]}; skipping")
        continue
      _train_stage(config, builder, key, dirs[key], strategy, log, callbacks)
  return config


def _specialist_keys(config: TrainConfig, hierarchy: hierarchy_lib.Hierarchy) -> list[str]:
  """Stage keys of the specialists to train; refuses superclasses that cannot have one."""
  trainable = models.specialist_superclasses(hierarchy)
  chosen = trainable if config.specialists is None else list(config.specialists)
  bad = [k for k in chosen if k not in trainable]
  if bad:
    raise ValueError(
        f"no specialist can be trained for superclass(es) {bad}: hierarchy {hierarchy.name!r} "
        f"has superclasses 0..{hierarchy.num_superclasses - 1}, and those with >= 2 "
        f"subclasses are {trainable} "
        f"({', '.join(hierarchy.superclasses[k].name for k in trainable)})")
  return [f"specialist_{k}" for k in chosen]


def _train_stage(config, builder, key, stage_dir, strategy, log, callbacks) -> None:
  h = builder.hierarchy
  role = key.split("_")[0]  # flat, generalist (also generalist_qat) or specialist
  superclass = int(key.split("_")[1]) if role == "specialist" else None
  if role == "specialist":
    epochs, lr = config.specialist_epochs, config.specialist_learning_rate
  elif key == "generalist_qat":
    epochs, lr = config.qat_epochs, config.qat_learning_rate or config.learning_rate / 10
  else:
    epochs, lr = config.epochs, config.learning_rate
  replicas = strategy.num_replicas_in_sync
  global_batch = config.batch_size * replicas

  def spec(training):
    return input_pipeline.InputSpec(role=role, batch_size=global_batch,
                                    image_size=config.image_size, superclass=superclass,
                                    augment=config.augment if training else "none",
                                    seed=config.seed,
                                    # With several replicas a partial batch can leave one
                                    # empty, which oneDNN's Conv2D cannot take. The epoch-end
                                    # validation then skips < 1 global batch; super-sub-eval
                                    # always scores the whole split.
                                    drop_remainder=replicas > 1)
  train_ds = input_pipeline.make_dataset(builder, "train", spec(True), training=True)
  val_ds = input_pipeline.make_dataset(builder, evaluation_split(builder), spec(False),
                                       training=False)
  steps = config.steps_per_epoch or int(train_ds.cardinality())
  if steps <= 0:
    raise ValueError(f"stage {key!r} has no training examples in the train split")

  callbacks = list(callbacks)
  base = None
  with strategy.scope():
    if role == "specialist":
      # Starts from the trained generalist and stays a sparse delta over it.
      model = build_model(config, builder, key)
      models.copy_backbone_weights(load_model(config, builder, generalist_key(config)), model)
      if config.freeze_bn:
        compression.freeze_batchnorm(model)
      base = [v.numpy() for v in compression.backbone_variables(model)]
      callbacks.append(compression.DeltaToBase(base, config.delta_l1, config.freeze_bn,
                                               keep=config.delta_keep, epochs=epochs))
    elif key == "generalist_qat":
      model = compression.quantize(load_model(config, builder, "generalist"))
    else:
      model = build_model(config, builder, key, weights=config.weights)
      if key == "generalist" and config.generalist_init == "flat":
        # Fine labels teach features that superclass labels alone learn slowly.
        models.copy_backbone_weights(load_model(config, builder, "flat"), model)
        # Frozen flat features keep what tells subclasses apart, so the specialists, which
        # start from the generalist, need smaller deltas.
        models.freeze_stages(model, config.generalist_freeze_stages)
    num_classes = model.output_shape[-1]
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10, decay_steps=max(1, epochs * steps),
        warmup_target=lr, warmup_steps=int(config.warmup_epochs * steps))
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule,
                                         weight_decay=config.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")]
        + ([keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")]
           if num_classes > 5 else []))

  os.makedirs(stage_dir, exist_ok=True)
  log(f"[{key}] training {epochs} epochs of {steps} steps (global batch {global_batch}, "
      f"{strategy.num_replicas_in_sync} replica(s)) in {stage_dir}")
  start = time.perf_counter()
  history_path = os.path.join(stage_dir, "history.csv")
  backup_dir = os.path.join(stage_dir, "backup")
  model.fit(
      train_ds.repeat() if config.steps_per_epoch else train_ds,
      epochs=epochs, steps_per_epoch=config.steps_per_epoch, validation_data=val_ds,
      verbose=2,
      callbacks=[
          keras.callbacks.BackupAndRestore(backup_dir),
          keras.callbacks.CSVLogger(history_path, append=True),
          keras.callbacks.TensorBoard(os.path.join(stage_dir, "logs")),
          *callbacks,
      ])
  wall = time.perf_counter() - start
  _save_weights(model, os.path.join(stage_dir, "weights"))
  history = _read_history(history_path)
  files.write_json(os.path.join(stage_dir, "metrics.json"), {
      "stage": key, "role": role, "superclass": superclass,
      "superclass_name": h.superclasses[superclass].name if superclass is not None else None,
      "epochs": epochs, "steps_per_epoch": steps, "global_batch_size": global_batch,
      "num_params": int(model.count_params()),
      "delta": compression.delta_stats(model, base) if base is not None else None,
      "wall_time_s_this_run": round(wall, 2),
      "final": {k: v[-1] for k, v in history.items() if k != "epoch"},
      "history": history,
  })
  shutil.rmtree(backup_dir, ignore_errors=True)  # Keras empties it but leaves the folder.
  log(f"[{key}] done in {wall:.1f} s: " + ", ".join(
      f"{k}={v[-1]:.4f}" for k, v in history.items() if k.startswith("val_")))


def evaluation_split(builder: tfds.core.DatasetBuilder) -> str:
  """"validation" where the dataset has it, else "test" (Fashion-MNIST)."""
  splits = set(builder.info.splits)
  eval_split = "validation" if "validation" in splits else "test"
  if "train" not in splits or eval_split not in splits:
    raise ValueError(f"{builder.name} needs a train split and a validation or test split; "
                     f"it has {sorted(splits)}")
  return eval_split


def _save_weights(model: keras.Model, folder: str) -> None:
  """Saves a TF checkpoint (h5 fails on QAT models) into `folder` atomically."""
  with files.atomic_dir(folder) as tmp:
    model.save_weights(os.path.join(tmp, "model"))


def _read_history(path: str) -> dict[str, list[float]]:
  """Per-epoch metrics from CSVLogger's file, last row per epoch (resumed runs append)."""
  rows: dict[int, dict[str, str]] = {}
  with open(path, encoding="utf-8") as f:
    for row in csv.DictReader(f):
      if row.get("epoch", "epoch") != "epoch":
        rows[int(row["epoch"])] = row
  ordered = [rows[e] for e in sorted(rows)]
  keys = [k for k in (ordered[0] if ordered else {}) if k]
  return {k: [float(r[k]) for r in ordered] for k in keys}
