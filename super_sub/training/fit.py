"""Trains the flat baseline, the generalist and the specialists with Keras `fit`.

`train(config)` trains the stages a run asks for in its model_dir (layout: super_sub.training.run).
Re-running the same command resumes an interrupted stage at its last finished epoch
(weights, optimizer state and epoch count) and skips finished stages.

Faults it guards against, so that a stage is marked done (metrics.json) only when it is sound:
  * two trainings in one model_dir: `train` holds model_dir/.lock (super_sub._internal.lock)
    and a second one is refused, naming the holder's pid;
  * a model_dir of another run: refused before the dataset is prepared (nothing downloaded);
  * divergence: a NaN/Inf loss or weight raises `guards.NonFiniteError` and the last good
    epoch's backup stays for the re-run;
  * a failed write (full disk, read-only folder): an OSError naming the file and the stage,
    which is then not marked done.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import math
import os
import shutil
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from super_sub import runs
from super_sub._internal import files
from super_sub._internal import lock
from super_sub._internal.compat import keras
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.models import backbones
from super_sub.models import classifiers
from super_sub.models import router_head
from super_sub.training import config as config_lib
from super_sub.training import deltas
from super_sub.training import determinism
from super_sub.training import distill
from super_sub.training import distribute
from super_sub.training import guards
from super_sub.training import logs
from super_sub.training import qat as qat_lib
from super_sub.training import reuse_flat
from super_sub.training import router_head as router_training
from super_sub.training import run as run_lib
from super_sub.training.config import TrainConfig, resolve


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
    ValueError: the model_dir holds another run (checked before the dataset is prepared), or
      the dataset has no super-sub hierarchy.
    lock.FolderLockedError: another process trains in the model_dir.
    guards.NonFiniteError: a stage diverged (NaN/Inf loss or weight); it is not marked done.
    OSError: the model_dir cannot be created or written, or a stage's files could not be
      written (e.g. the disk is full); the message names the folder or file.
    FileNotFoundError: specialists asked for before the generalist is trained.
  """
  if config.strategy != "multi_worker":
    with lock.hold(config.model_dir):
      return _train_locked(config, log, callbacks, distribute.make_strategy(config.strategy))
  # Multi-worker: the strategy before any other TensorFlow work (its collectives need it).
  # Every worker trains the same model; the chief writes the run's model_dir, the others a
  # private folder each, deleted once they finish (Keras's multi-worker convention).
  task, chief = distribute.worker_task()
  strategy = distribute.make_strategy(config.strategy)
  mine = config if chief else dataclasses.replace(
      config, model_dir=os.path.join(config.model_dir, WORKERS_DIR, task))
  with lock.hold(mine.model_dir):
    if not chief:
      _mirror_finished_stages(config.model_dir, mine.model_dir)
    resolved = _train_locked(mine, log, callbacks, strategy,
                             chief_model_dir=None if chief else config.model_dir)
  if not chief:
    shutil.rmtree(mine.model_dir)
    with contextlib.suppress(OSError):  # the last worker to finish removes the parent
      os.rmdir(os.path.dirname(mine.model_dir))
    return dataclasses.replace(resolved, model_dir=config.model_dir)
  return resolved


# Under model_dir: the private folders of the workers other than the chief.
WORKERS_DIR = ".workers"


def _mirror_finished_stages(chief_dir: str, private_dir: str) -> None:
  """Starts a non-chief worker's private folder as a copy of the chief's finished stages
  (their weights and metrics.json: every worker trained them together), so that all workers
  skip the same stages and later ones start from the same weights. Whatever the folder held
  from an interrupted run goes: backups are read from the chief's folder."""
  for entry in os.listdir(private_dir):
    path = os.path.join(private_dir, entry)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif entry != lock.LOCK_NAME:
      os.remove(path)
  for root, dirs, names in os.walk(chief_dir):
    dirs[:] = [d for d in dirs if d != WORKERS_DIR]
    if runs.METRICS in names:  # a finished stage
      shutil.copytree(root, os.path.join(private_dir, os.path.relpath(root, chief_dir)),
                      ignore=shutil.ignore_patterns("backup", "logs"))


def _train_locked(config, log, callbacks, strategy, chief_model_dir=None) -> TrainConfig:
  """`train` while it holds the model_dir's lock; `chief_model_dir`: the run's model_dir
  when this process is a multi-worker run's non-chief worker training in a private one."""
  run_lib.check_identity(config)  # before preparing: a refused run downloads nothing
  if config.flat_from:
    reuse_flat.check_source(config.flat_from)  # likewise, and writes nothing
  builder = prepare.prepare_dataset(config.dataset, config.data_dir, config.manual_dir,
                                    **config.dataset_options())
  config = resolve(config, builder)
  run = run_lib.Run.create(config, builder)
  keras.utils.set_random_seed(config.seed)
  chosen = _specialists(run)  # fails before any training
  if config.flat_from and not run.is_done(run_lib.FLAT):
    _copy_flat(run, log)
  if ("generalist" in config.stages() and config.generalist_init == "flat"
      and "flat" not in config.stages() and not run.is_done(run_lib.FLAT)):
    raise FileNotFoundError(
        f"--generalist_init=flat (the default) starts the generalist from the trained flat "
        f"network, and {run.stage_dir(run_lib.FLAT)} holds none: train it first (--stage=flat, "
        "or --stage=all trains both) or pass --generalist_init=scratch")
  if (config.distill_from and "specialists" in config.stages()
      and config.distill_from not in config.stages()):
    for stage in chosen:  # the teachers' errors before any training, not after
      _teacher(run, config.distill_from, stage.superclass, load=False)
  for name in config.stages():
    stages = {"flat": [run_lib.FLAT],
              "generalist": [run_lib.GENERALIST] + ([run_lib.GENERALIST_QAT] if config.qat
                                                    else []),
              "router_head": [run_lib.ROUTER_HEAD],
              "specialists": chosen}[name]
    for stage in stages:
      if run.is_done(stage):
        log(f"[{stage}] already trained in {run.stage_dir(stage)}; skipping")
        continue
      # --deterministic: each stage starts from the seed, whatever stages ran before it in
      # this process (a re-run skips finished ones).
      with determinism.deterministic_ops(config.seed, enabled=config.deterministic):
        _train_stage(run, stage, strategy, log, callbacks, chief_model_dir)
  return config


def _copy_flat(run: run_lib.Run, log: Callable[[str], None]) -> None:
  """--flat_from: the other run's flat network written as this run's finished flat stage,
  its outputs in this run's class order (super_sub.training.reuse_flat)."""
  source = run.config.flat_from
  model, metrics = reuse_flat.reordered_flat(source, run)
  stage_dir = run.stage_dir(run_lib.FLAT)
  weights_dir = runs.weights_dir(stage_dir)
  with _writing(run_lib.FLAT, weights_dir):
    _save_weights(model, weights_dir)
  digest = _weights_digest(model)
  metrics_path = runs.metrics_path(stage_dir)
  with _writing(run_lib.FLAT, metrics_path):
    files.write_json(metrics_path, {**metrics, "copied_from": source,
                                    "wall_time_s_this_run": 0.0, "weights_sha256": digest})
  log(f"[flat] taken from {source}, its outputs reordered to this run's classes; weights "
      f"sha256 {digest}")


def _specialists(run: run_lib.Run) -> list[run_lib.Stage]:
  """The specialist stages to train; refuses superclasses that cannot have one."""
  h = run.hierarchy
  trainable = h.specialist_superclasses()
  chosen = trainable if run.config.specialists is None else list(run.config.specialists)
  bad = [k for k in chosen if k not in trainable]
  if bad:
    raise ValueError(
        f"no specialist can be trained for superclass(es) {bad}: hierarchy {h.name!r} "
        f"has superclasses 0..{h.num_superclasses - 1}, and those with >= 2 "
        f"subclasses are {trainable} "
        f"({', '.join(h.superclasses[k].name for k in trainable)})")
  return [run_lib.specialist(k) for k in chosen]


def schedule(config: TrainConfig, stage: run_lib.Stage, global_batch: int) -> tuple[int, float]:
  """(epochs, peak learning rate) of a stage trained on batches of `global_batch` images
  (the rate scaled linearly when config.learning_rate_base_batch is set)."""
  if stage.role == "specialist":
    epochs, lr = config.specialist_epochs, config.specialist_learning_rate
  elif stage.role == "router_head":
    epochs, lr = config.router_head_epochs or config.epochs, config.learning_rate
  elif stage.qat:
    epochs, lr = config.qat_epochs, config.qat_learning_rate or config.learning_rate / 10
  else:
    epochs, lr = config.epochs, config.learning_rate
  if config.learning_rate_base_batch:  # the linear scaling rule
    lr *= global_batch / config.learning_rate_base_batch
  return epochs, lr


def prepare_specialist(model: keras.Model, config: TrainConfig) -> bool:
  """Freezes what a specialist, just copied from the generalist, keeps of it: BatchNorm where
  `config.specialist_batchnorm_frozen` says so (inference mode, the generalist's statistics;
  `DeltaToBase` then pins its parameters), and every kernel for the affine form.

  Returns:
    Whether BatchNorm is frozen (`DeltaToBase`'s pin_batchnorm).
  """
  frozen_bn = config_lib.specialist_batchnorm_frozen(config)
  if frozen_bn:
    deltas.freeze_batchnorm(model)
  if config.specialist_form == "affine":
    deltas.freeze_kernels(model)
  return frozen_bn


@contextlib.contextmanager
def _naming_undecodable_images(run: run_lib.Run, stage: run_lib.Stage):
  """An image that does not decode stops `fit` with a bare op error from inside tf.data;
  turn it into pipeline.UndecodableImageError naming the file (found by one more pass)."""
  try:
    yield
  except tf.errors.InvalidArgumentError:
    # A dustbin specialist reads every superclass; others only their own.
    superclass = None if run.config.dustbin else stage.superclass
    for split in ("train", run.evaluation_split):
      bad = pipeline.find_undecodable(run.builder, split, superclass)
      if bad is not None:
        raise bad from None
    raise


@contextlib.contextmanager
def precision(config: TrainConfig, strategy: tf.distribute.Strategy):
  """Builds and compiles a stage's model under the mixed-precision policy --mixed_precision
  asks for (float16 on GPUs, bfloat16 elsewhere), then restores the global policy: the
  layers keep theirs, and models loaded later for evaluation or export compute in float32."""
  if not config.mixed_precision:
    yield
    return
  on_gpu = (not isinstance(strategy, tf.distribute.TPUStrategy)
            and bool(tf.config.list_logical_devices("GPU")))
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "mixed_bfloat16")
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def _teacher(run: run_lib.Run, source: str, superclass: int, load: bool = True
             ) -> tuple[keras.Model | None, tuple[int, int]]:
  """What superclass `superclass`'s specialist distills from (config.distill_from) and which of
  its output columns are that specialist's subclasses; with load=False only checks that it
  exists (the model is then None).

  Raises:
    FileNotFoundError: the flat network, or the other run or its specialist, is not trained.
    ValueError: the other run was trained on other data (dataset, hierarchy or image size).
  """
  h = run.hierarchy
  if source == "flat":
    if not run.is_done(run_lib.FLAT):
      raise FileNotFoundError(
          f"--distill_from=flat needs the trained flat network, and {run.stage_dir(run_lib.FLAT)} "
          "holds none; train it first (--stage=flat, or --stage=all trains it before the "
          "specialists)")
    columns = (int(h.superclass_offsets[superclass]), int(h.superclass_offsets[superclass + 1]))
    return (run.load_model(run_lib.FLAT) if load else None), columns
  try:
    other = run_lib.Run.open(source, data_dir=run.config.data_dir)
  except FileNotFoundError:
    raise FileNotFoundError(f"--distill_from={source}: expected 'flat' or the model_dir of a "
                            "super-sub-train run whose specialists teach; it is neither"
                            ) from None
  mine, theirs = run.config, other.config
  clashes = [f"{key} {getattr(theirs, key)!r} (this run: {getattr(mine, key)!r})"
             for key in ("dataset", "hierarchy", "image_size")
             if getattr(theirs, key) != getattr(mine, key)]
  if clashes:
    raise ValueError(f"--distill_from={source} was trained on other data: {'; '.join(clashes)}")
  stage = run_lib.specialist(superclass)
  if not other.is_done(stage):
    raise FileNotFoundError(f"--distill_from={source} has no trained specialist for superclass "
                            f"{superclass} ({h.superclasses[superclass].name!r}): "
                            f"{other.stage_dir(stage)} holds none")
  columns = (0, len(h.subclass_range(superclass)))  # a dustbin's last output is not taught
  return (other.load_model(stage) if load else None), columns


def input_spec(config: TrainConfig, stage: run_lib.Stage, global_batch: int, training: bool,
               replicas: int = 1) -> pipeline.InputSpec:
  """How `stage` reads its training (`training`) or epoch-end validation images."""
  # The router head learns the generalist's targets: superclasses.
  return pipeline.InputSpec(role="generalist" if stage.role == "router_head" else stage.role,
                            batch_size=global_batch,
                            image_size=config.image_size, superclass=stage.superclass,
                            augment=config.augment if training else "none",
                            framing=config.framing, seed=config.seed,
                            cache_budget=int(config.cache_budget_gb * 2**30),
                            # With several replicas a partial batch can leave one empty,
                            # which oneDNN's Conv2D cannot take. The epoch-end validation
                            # then skips < 1 global batch; super-sub-eval always scores the
                            # whole split.
                            drop_remainder=replicas > 1,
                            dustbin=config.dustbin if stage.role == "specialist" else 0.0)


def initial_model(run: run_lib.Run, stage: run_lib.Stage) -> keras.Model:
  """`stage`'s model as its training starts: a specialist from the trained generalist, with
  what it keeps of it frozen (`prepare_specialist`); the QAT generalist quantized from the
  float one; a router head on the generalist's trunk; a generalist from the flat network with
  its first stages frozen (--generalist_init=flat); else freshly built (--weights)."""
  config = run.config
  if stage.role == "specialist":
    # Starts from the trained generalist and stays a sparse delta over it.
    model = run.build_model(stage)
    classifiers.copy_backbone_weights(run.load_model(run.generalist), model)
    prepare_specialist(model, config)
  elif stage.qat:
    model = qat_lib.quantize(run.load_model(run_lib.GENERALIST))
  elif stage.role == "router_head":
    model = run.build_model(stage)
    router_head.copy_trunk(run.load_model(run.generalist), model, config.freeze_stages)
  else:
    model = run.build_model(stage, weights=config.weights)
    if stage.role == "generalist" and config.generalist_init == "flat":
      # Fine labels teach features that superclass labels alone learn slowly.
      classifiers.copy_backbone_weights(run.load_model(run_lib.FLAT), model)
      # Frozen flat features keep what tells subclasses apart, so the specialists, which
      # start from the generalist, need smaller deltas.
      backbones.freeze_stages(model, config.generalist_freeze_stages)
  return model


def compile_for_training(model: keras.Model, config: TrainConfig, epochs: int, lr: float,
                         steps: int) -> None:
  """Compiles `model` as every stage trains: AdamW (config.weight_decay) whose rate warms up
  linearly from lr/10 to `lr` over config.warmup_epochs and then follows a cosine to 0 at the
  end of `epochs` epochs of `steps` steps; cross-entropy on logits; top-1, and top-5 over
  more than five classes."""
  warmup_steps = int(config.warmup_epochs * steps)
  # Keras decays over `decay_steps` steps *after* the warm-up: the rest of the training, so
  # the rate reaches 0 as the last epoch ends (epochs x steps would stop it half-way down).
  lr_schedule = keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=lr / 10, decay_steps=max(1, epochs * steps - warmup_steps),
      warmup_target=lr, warmup_steps=warmup_steps)
  model.compile(
      optimizer=keras.optimizers.AdamW(learning_rate=lr_schedule,
                                       weight_decay=config.weight_decay),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")]
      + ([keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")]
         if model.output_shape[-1] > 5 else []),
      jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)


def _train_stage(run: run_lib.Run, stage: run_lib.Stage, strategy, log, callbacks,
                 chief_model_dir: str | None = None) -> None:
  config, h, builder = run.config, run.hierarchy, run.builder
  stage_dir = run.stage_dir(stage)
  replicas = strategy.num_replicas_in_sync
  global_batch = config.batch_size * replicas
  epochs, lr = schedule(config, stage, global_batch)

  def spec(training):
    return input_spec(config, stage, global_batch, training, replicas)

  val_ds = pipeline.make_dataset(builder, run.evaluation_split, spec(False), training=False)
  # A dustbin specialist's data is endless (fresh other-superclass images every pass).
  examples = pipeline.epoch_examples(builder, "train", spec(True))
  if config.deterministic:
    # Its inputs come from `make_training_epochs` alone: the stateful pipeline is not even
    # built, since under op determinism its random-resized crop refuses to trace
    # (tf.image.sample_distorted_bounding_box needs a nonzero seed there).
    train_ds = None
    endless = spec(True).dustbin > 0
    passes = math.floor if spec(True).drop_remainder and not endless else math.ceil
    pass_steps = passes(examples / global_batch)
  else:
    train_ds = pipeline.make_dataset(builder, "train", spec(True), training=True)
    endless = int(train_ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
    pass_steps = math.ceil(examples / global_batch) if endless else int(train_ds.cardinality())
  steps = config.steps_per_epoch or pass_steps
  if steps <= 0:
    raise ValueError(f"stage {stage.key!r} has no training examples in the train split")
  first_epoch = None
  if config.deterministic:  # each epoch's inputs from (seed, epoch), resumed ones included
    first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    train_ds = pipeline.make_training_epochs(builder, "train", spec(True), first_epoch, steps)
  elif config.steps_per_epoch and not endless:
    train_ds = train_ds.repeat()
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    train_ds, val_ds = distribute.shard_by_data(train_ds), distribute.shard_by_data(val_ds)

  callbacks = list(callbacks)
  base = None
  trained = None
  with strategy.scope(), precision(config, strategy):
    model = initial_model(run, stage)
    if stage.role == "specialist":
      frozen_bn = config_lib.specialist_batchnorm_frozen(config)
      base = [v.numpy() for v in deltas.backbone_variables(model)]
      delta_callback = deltas.DeltaToBase(base, config.delta_l1, frozen_bn,
                                          keep=config.delta_keep, epochs=epochs,
                                          ranges=config.delta_ranges,
                                          form=config.specialist_form, rank=config.delta_rank)
      callbacks.append(delta_callback)
      if config.distill_from:
        trained = model  # the distilled model shares its layers; `model` is what is saved
        teacher, columns = _teacher(run, config.distill_from, stage.superclass)
        model = distill.distilled(model, teacher, columns, config.distill_temperature,
                                  config.distill_weight)
      # The projection runs inside every train step (also with --steps_per_execution), on
      # the specialist's own layers (a distilled model shares them). Except a low-rank one
      # under --jit_compile: XLA took over 5 minutes compiling its SVDs on a CPU, so it runs
      # after each step as a callback instead (and refuses --steps_per_execution > 1).
      if not (config.jit_compile and config.specialist_form == "lowrank"):
        delta_callback.attach(model, target=trained if trained is not None else model)
    elif stage.role == "router_head":
      pinned = router_training.PinnedTrunk(model, config.freeze_stages)
      pinned.attach(model)  # inside every step, also with --steps_per_execution
      callbacks.append(pinned)
    compile_for_training(model, config, epochs, lr, steps)

  os.makedirs(stage_dir, exist_ok=True)
  log(f"[{stage}] training {epochs} epochs of {steps} steps (global batch {global_batch}, "
      f"{strategy.num_replicas_in_sync} replica(s)) in {stage_dir}")
  start = time.perf_counter()
  history_path = os.path.join(stage_dir, "history.csv")
  # Every worker restores from the chief's backup (Keras's BackupAndRestore has the others
  # write theirs to temporary folders inside it); only the chief removes it.
  backup_dir = os.path.join(chief_model_dir or run.model_dir,
                            os.path.relpath(stage_dir, run.model_dir), "backup")
  with _writing(stage, stage_dir, during_fit=backup_dir), _naming_undecodable_images(run, stage):
    model.fit(
        train_ds, epochs=epochs,
        steps_per_epoch=(steps if (config.steps_per_epoch or endless or config.deterministic)
                         else None),
        validation_data=val_ds,
        verbose=2,
        callbacks=[
            logs.EpochProgbar(),  # first, where Keras puts its own: the line before an error
            # Before BackupAndRestore: a diverged epoch must fail before it is backed up.
            guards.FiniteGuard(stage.key, backup_dir),
            keras.callbacks.BackupAndRestore(backup_dir),
            # After BackupAndRestore: the epoch it restores is where the inputs start.
            *([determinism.FirstEpoch(first_epoch, steps)] if first_epoch is not None else []),
            keras.callbacks.CSVLogger(history_path, append=True),
            logs.EpochTensorBoard(os.path.join(stage_dir, "logs")),
            *callbacks,
        ])
  wall = time.perf_counter() - start
  if trained is not None:
    model = trained
  weights_dir = runs.weights_dir(stage_dir)
  with _writing(stage, weights_dir):
    _save_weights(model, weights_dir)
  if base is not None and config.specialist_form == "lowrank":
    factors_path = os.path.join(stage_dir, deltas.FACTORS_FILE)
    with _writing(stage, factors_path):
      delta_callback.save_factors(factors_path)
  history = _read_history(history_path)
  metrics_path = runs.metrics_path(stage_dir)
  digest = _weights_digest(model)
  with _writing(stage, metrics_path):
    files.write_json(metrics_path, {
        "stage": stage.key, "role": stage.role, "superclass": stage.superclass,
        "superclass_name": (h.superclasses[stage.superclass].name
                            if stage.superclass is not None else None),
        "epochs": epochs, "steps_per_epoch": steps, "global_batch_size": global_batch,
        "num_params": int(model.count_params()),
        "delta": deltas.delta_stats(model, base) if base is not None else None,
        "wall_time_s_this_run": round(wall, 2),
        # Equal on every worker of a multi-worker run (and for equal weights anywhere).
        "weights_sha256": digest,
        "final": {k: v[-1] for k, v in history.items() if k != "epoch"},
        "history": history,
    })
  if chief_model_dir is None:
    shutil.rmtree(backup_dir, ignore_errors=True)  # Keras empties it but leaves the folder.
  log(f"[{stage}] done in {wall:.1f} s: " + ", ".join(
      f"{k}={v[-1]:.4f}" for k, v in history.items() if k.startswith("val_"))
      + f"; weights sha256 {digest}")


@contextlib.contextmanager
def _writing(stage: run_lib.Stage, path: str, during_fit: str | None = None):
  """Turns a failed write (full disk, read-only or vanished folder) in the block into an
  OSError that names the stage and `path`, says the stage is not marked done and what a
  re-run does; errno (and so the OSError subclass) stays the original's.

  `during_fit` is the stage's backup folder when the block is Keras `fit` (its callbacks write
  the backup, history.csv and TensorBoard logs): only Python's OSError is translated there,
  since a TensorFlow error during fit may as well be out of memory. Outside fit (the final
  weights) TensorFlow's own errors are file errors too (ENOSPC arrives as
  tf.errors.ResourceExhaustedError) and are translated as well.
  """
  try:
    yield
  except OSError as e:
    reason = e.strerror or str(e)
    if e.filename:
      reason += f" ({e.filename})"
    raise _write_error(stage, path, reason, e.errno, during_fit) from e
  except tf.errors.OpError as e:
    if during_fit:
      raise
    code = (errno.ENOSPC if "No space left on device" in e.message
            else errno.EACCES if isinstance(e, tf.errors.PermissionDeniedError) else None)
    raise _write_error(stage, path, e.message, code, during_fit) from e


def _write_error(stage, path, reason, code, during_fit) -> OSError:
  what = (f"training stopped on a file error in {path}" if during_fit
          else f"could not write {path}")
  then = (f"its last finished epoch stays in {during_fit}, and re-running the same command "
          "resumes from there" if during_fit
          else "re-running the same command trains it again")
  message = (f"[{stage}] {what}: {reason}. The stage is not marked done (no metrics.json); "
             f"once the disk has room and the folder is writable, {then}.")
  return OSError(code, message) if code else OSError(message)


def _weights_digest(model: keras.Model) -> str:
  """sha256 of the model's weight values, in order."""
  digest = hashlib.sha256()
  for value in model.get_weights():
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def _save_weights(model: keras.Model, folder: str) -> None:
  """Saves a TF checkpoint (h5 fails on QAT models) into `folder` atomically."""
  with files.atomic_dir(folder, "weights", "checkpoint") as tmp:
    model.save_weights(os.path.join(tmp, runs.WEIGHTS_PREFIX))


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
