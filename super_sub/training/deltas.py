"""Cheap specialists: train each one as a small, sparse delta over the generalist.

Four things make a specialist's delta small (measured in BENCHMARKS.md):
  * a budget: gradual magnitude pruning of W - W_base (Zhu & Gupta, 2017) keeps only the
    largest changes, counted in int8 quantization steps, and the last third of the epochs
    recovers with that mask fixed;
  * a proximal L1 step after every optimizer step soft-thresholds W - W_base, so most
    backbone weights end exactly equal to the base (an L1 loss term never reaches zero
    with Adam);
  * BatchNorm stays the generalist's (re-estimating statistics on a subset changes every
    folded weight and cost accuracy);
  * with quantization-aware training, the weight quantizer ranges stay the base's, so a
    weight equal to the base's has the same int8 value, and the int8 delta is a sparse
    tensor of small integers (activation ranges adapt: a few bytes each). A pinned range
    clips a weight that grew past it; `--delta_ranges=grow` widens the range of just those
    channels, at the price of their whole channel's int8 values.
The head is free and stored whole.

A sign specialist (`--specialist_form=sign`, `projection.sign_delta`; BitDelta, Liu et al.
2024) changes every weight of a kernel channel by the same amount, up or down: W = W_base + k x step x sign, with k a
whole number of the channel's int8 steps. With the base's pinned quantizer ranges its int8 weights
are the base's +-k, which the bundle stores in about one bit per weight (the signed encoding of
`super_sub.formats.encodings`). Training keeps a free-moving latent delta that each step's
update goes to and projects it onto that form for the next forward pass (a straight-through estimator).
With a budget (`--delta_keep`), only the output channels that would move most, in int8 steps, may
move (`projection.sign_channel_masks`). Channels that do not move store no sign bits.

A low-rank specialist (`--specialist_form=lowrank`, `projection.low_rank_factors`; LoRA, Hu et
al. 2021, applied to each kernel as a [C_out, kernel size] matrix) changes each kernel's int8 weights by
the product of two int8 factors of rank `--delta_rank` and a scale per output channel, the same
integer product (`super_sub.formats.encodings.factored_product`) that the bundle's runtime
computes, so the specialist's int8 weights are rebuilt exactly from r (C_out + kernel size) bytes.
The factors are saved beside the specialist's weights (`FACTORS_FILE`) for the export.

An affine specialist (`--specialist_form=affine`, `freeze_kernels`) goes further: no kernel
changes at all, only BatchNorm's per-channel scale and shift (and its statistics) and the head.
TFLite folds BatchNorm into each output channel's quantization scale and the bias, and an int8
weight is round(W * 127 / kernel_max) with the base's pinned range, so every int8 kernel stays
the base's byte for byte and the delta holds only biases and scales.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.formats import encodings
from super_sub.training import config as config_lib
from super_sub.training import projection

FACTORS_FILE = "factors.npz"  # a low-rank specialist's factors, in its stage folder


def backbone_variables(model: keras.Model) -> list[tf.Variable]:
  """Every variable of the layers before the head (the last layer), in a stable order."""
  return [v for layer in model.layers[:-1] for v in layer.weights]


def frozen_variables(model: keras.Model) -> list[bool]:
  """For each of `backbone_variables(model)`: whether its layer is frozen (also inside a
  tfmot wrapper, whose own weight lists ignore the wrapped layer's `trainable`)."""
  return [not (layer.trainable and getattr(layer, "layer", layer).trainable)
          for layer in model.layers[:-1] for _ in layer.weights]


def short_name(variable: tf.Variable) -> str:
  """A variable's own name, without its layer and device suffix ("kernel", "gamma", ...)."""
  return variable.name.split("/")[-1].split(":")[0]


def is_kernel(variable: tf.Variable) -> bool:
  """Convolution and dense kernels: the weights a specialist may change (sparsely)."""
  return short_name(variable) in ("kernel", "depthwise_kernel")


def freeze_kernels(model: keras.Model) -> None:
  """Freezes every backbone layer that holds a kernel (convolutions; also inside tfmot
  wrappers), leaving BatchNorm and the head trainable: the affine specialist. `DeltaToBase`
  pins the frozen layers' variables to the base, which also holds them in tfmot's wrappers
  (their trainable weights ignore `.trainable`, tensorflow/model-optimization#1067)."""
  for layer in model.layers[:-1]:
    inner = getattr(layer, "layer", layer)
    if any(is_kernel(v) for v in layer.weights):
      inner.trainable = False


def freeze_batchnorm(model: keras.Model) -> None:
  """Runs every BatchNormalization (also inside tfmot wrappers) in inference mode."""
  for layer in model.layers:
    inner = getattr(layer, "layer", layer)
    if isinstance(inner, keras.layers.BatchNormalization):
      inner.trainable = False


_BATCHNORM = ("gamma", "beta", "moving_mean", "moving_variance")
# tfmot's activation quantizer ranges: free to follow the specialist's activations. They
# cost a few bytes each in the skeleton, and pinning them to the generalist's clipped the
# specialists' activations (Fashion-MNIST, 2% budget: 85.6% with them pinned, where the same
# weights in float reached 88.4%).
_ACTIVATION_RANGES = ("output_min", "output_max", "post_activation_min", "post_activation_max")


def keep_schedule(epoch: int, epochs: int, keep: float) -> float:
  """Fraction of kernel weights a specialist may change during `epoch` (0-based).

  All of them in the first epoch (the delta first learns where it matters), then a cubic
  ramp down to `keep` by two thirds of the epochs (Zhu & Gupta's gradual pruning), then
  `keep` while the remaining epochs recover from the pruning (a one-epoch training has
  the budget in its only epoch: the last epoch always ends within it; `DeltaToBase` lets
  every weight move for its first third, so that there are changes to rank).
  """
  end = min(epochs - 1, max(1, round(epochs * 2 / 3)))
  if epoch >= end:
    return keep
  return keep + (1.0 - keep) * (1.0 - epoch / end) ** 3


def quantization_steps(delta: np.ndarray, base: np.ndarray) -> np.ndarray:
  """|delta| in units of the base kernel's int8 step per output channel (max |W| / 127).

  TFLite quantizes each output channel (the last axis) symmetrically with that step, after
  folding BatchNorm's per-channel factor, which cancels here: a change of < 0.5 steps does
  not change the stored int8 weight at all.
  """
  axes = tuple(range(base.ndim - 1))
  step = np.abs(base).max(axis=axes, keepdims=True) / 127.0
  return np.abs(delta) / np.maximum(step, 1e-12)


def budget_masks(variables: list[tf.Variable], base: list[np.ndarray],
                 keep: float) -> dict[int, np.ndarray]:
  """Per kernel (by index), where W - base may stay nonzero: the `keep` fraction of all
  kernel weights whose changes are largest in quantization steps (one global ranking)."""
  kernels = [i for i, v in enumerate(variables) if is_kernel(v)]
  sizes = {i: quantization_steps(variables[i].numpy() - base[i], base[i]) for i in kernels}
  total = sum(s.size for s in sizes.values())
  budget = int(keep * total)
  if budget >= total:
    return {i: np.ones_like(s, dtype=bool) for i, s in sizes.items()}
  flat = np.concatenate([s.ravel() for s in sizes.values()])
  threshold = np.partition(flat, total - budget - 1)[total - budget - 1] if budget else np.inf
  return {i: s > threshold for i, s in sizes.items()}


# tfmot's weight quantizer range variables (QuantizeWrapperV2 over Conv2D, DepthwiseConv2D).
_RANGE_NAMES = ("kernel_min", "kernel_max", "depthwise_kernel_min", "depthwise_kernel_max")


def range_owners(model: keras.Model) -> dict[int, int]:
  """For each weight quantizer range variable (index into `backbone_variables(model)`): the
  index of the kernel it quantizes (the one in the same layer)."""
  owners, start = {}, 0
  for layer in model.layers[:-1]:
    names = [short_name(v) for v in layer.weights]
    kernel = next((start + j for j, n in enumerate(names) if n in ("kernel", "depthwise_kernel")),
                  None)
    if kernel is not None:
      owners.update({start + j: kernel for j, n in enumerate(names) if n in _RANGE_NAMES})
    start += len(names)
  return owners


def after_every_step(model: keras.Model, function: Callable[[], None]) -> None:
  """Runs `function` (TensorFlow ops on variables) inside `model`'s train step, right after
  the optimizer's update: once per step, whatever `compile(steps_per_execution=...)` is, and
  once across replicas, in cross-replica context as the optimizer applies its own updates
  (mirrored variables then take one value everywhere). Call it before `fit` traces the step;
  it survives `compile`."""
  train_step = model.train_step

  def train_step_then_function(data):
    logs = train_step(data)
    context = tf.distribute.get_replica_context()
    if context is None:
      function()
    else:
      context.merge_call(lambda _: function())
    return logs

  model.train_step = train_step_then_function


class DeltaToBase(keras.callbacks.Callback):
  """Keeps a specialist's backbone a sparse delta over the base after every training step.

  Kernels: W <- base + soft_threshold(W - base, l1 x learning rate), the proximal step of an
  L1 penalty l1 * |W - base| (l1 = 0 leaves them free). Adam moves a weight by about the
  learning rate per step, so l1 < 1 lets consistent gradients through and snaps noise back.
  With a `keep` budget, the changes outside the epoch's mask (`budget_masks` at the
  `keep_schedule` fraction, recomputed from the weights at every epoch start, so a resumed
  run gets the same mask) are reset to the base as well.
  BatchNorm parameters and statistics: pinned to the base when `pin_batchnorm`. Weight
  quantizer ranges: the base's (so an unchanged weight keeps its int8 value), with the
  weights that set each channel's range held at the base's too (`projection.range_setters`:
  otherwise TFLite requantizes the channel), or with `ranges="grow"` widened per output channel where the
  changed kernel outgrew them (`projection.grow_range`).
  The input range, step counters and every variable of a frozen layer (`--freeze_stages`):
  always pinned. With `form` "sign" or "lowrank", each quantized kernel instead holds the
  projection of a latent delta (`projection.sign_delta`, `projection.low_rank_factors`)
  after every step; a sign budget picks the channels that may move
  (`projection.sign_channel_masks` at the `keep_schedule` fraction) again at every step, from all latent deltas.
  Activation quantizer ranges follow the specialist's activations. tfmot's QuantizeWrapperV2 lists its
  layer's weights as trainable even when the layer is frozen
  (tensorflow/model-optimization#1067), so pinning,
  not `.trainable`, is what holds them.

  `project` is one compiled TensorFlow function over every backbone variable: the base, the
  latent deltas, the budget's masks and the low-rank factors are tf.Variables, so a step's
  projection never copies a weight to the host. `attach` runs it inside Keras's train step,
  right after the optimizer's update: after every step, also with
  `compile(steps_per_execution=N)`, where callbacks only see every N-th step. Unattached, the
  callback projects after each batch Keras reports (and refuses steps_per_execution > 1).
  `project_reference` is the same projection in numpy on the host, the specification that the
  tests hold `project` to. Both live in `super_sub.training.projection`.
  """

  def __init__(self, base: list[np.ndarray], l1: float, pin_batchnorm: bool = True,
               keep: float | None = None, epochs: int = 1, ranges: str = "pinned",
               form: str = "delta", rank: int = 8):
    """`base`: values of `backbone_variables(model)` when the specialist was made;
    `keep`: the budget (fraction of kernel weights that may differ), None for no budget;
    `epochs`: the length of the training, which `keep_schedule` spreads the pruning over;
    `ranges`: weight quantizer ranges "pinned" to the base's or allowed to "grow";
    `form`: "sign" keeps each quantized kernel `projection.sign_delta` of a latent delta (a `keep`
    budget counts whole channels), "lowrank" its rank-`rank` `low_rank_factors` (both: pinned
    ranges and no L1; low rank: no budget), "delta" (or "affine", whose kernels are frozen)
    as above."""
    super().__init__()
    if keep is not None and not 0.0 <= keep <= 1.0:
      raise ValueError(f"keep must be a fraction in [0, 1], got {keep}")
    if ranges not in config_lib.DELTA_RANGES:
      raise ValueError(f"ranges must be one of {config_lib.DELTA_RANGES}, got {ranges!r}")
    if form not in config_lib.SPECIALIST_FORMS:
      raise ValueError(f"form must be one of {config_lib.SPECIALIST_FORMS}, got {form!r}")
    if form in ("sign", "lowrank") and (l1 or ranges != "pinned" or
                                        (keep is not None and form == "lowrank")):
      raise ValueError(f"{form} deltas take no L1 step and the base's pinned ranges"
                       + (", and no budget" if form == "lowrank" else ""))
    if not 1 <= rank <= encodings.MAX_RANK:
      raise ValueError(f"rank must be in [1, {encodings.MAX_RANK}], got {rank}")
    self.rank = rank
    self.ranges = ranges
    self.form = form
    self.base = base
    self.l1 = float(l1)
    self.pin_batchnorm = pin_batchnorm
    self.keep = keep
    self.epochs = epochs
    self.masks: dict[int, np.ndarray] | None = None
    self._masks_due: int | None = None  # the step after which this epoch's masks are taken
    self._keep_now: float | None = None
    self._graph: projection.Compiled | None = None  # `project`'s variables and function, per model
    self._reference: projection.Plan | None = None  # `project_reference`'s state, per model
    self._target: keras.Model | None = None  # the model `attach` projects
    self._last: str | None = None  # which of the two projected last ("graph", "reference")

  # --- Keras hooks ---------------------------------------------------------------------------
  @property
  def keep_now(self) -> float | None:
    """This epoch's budget (`keep_schedule`); None before the first epoch."""
    return self._keep_now

  @keep_now.setter
  def keep_now(self, value: float | None) -> None:
    self._keep_now = value
    if self._graph is not None:
      self._graph.keep_now.assign(1.0 if value is None else float(value))

  def attach(self, model: keras.Model, target: keras.Model | None = None) -> None:
    """Runs `project` inside `model`'s train step, after the optimizer's update (threshold: l1 x
    the optimizer's current learning rate), so that every step is projected whatever
    `steps_per_execution` is; call it before `fit`. `target`: the model whose backbone is the
    delta (default `model`; a distilled model trains `target`'s layers)."""
    target = target if target is not None else model
    self._target = target
    state = self._graph_state(target)
    self._last = "graph"  # what `factors` reads: the train step projects from now on

    def project():
      rate = tf.cast(model.optimizer.learning_rate, tf.float64)
      state.function(tf.cast(self.l1 * rate, tf.float32))

    after_every_step(model, project)

  def on_train_begin(self, logs=None):
    del logs
    every = getattr(self.model, "_steps_per_execution", None)
    if self._target is None and every is not None and int(every.numpy()) > 1:
      raise ValueError(f"steps_per_execution={int(every.numpy())}: Keras calls callbacks once "
                       "per execution, so DeltaToBase would skip steps; call "
                       "DeltaToBase.attach(model) before fit to project inside every step")

  def on_epoch_begin(self, epoch, logs=None):
    del logs
    model = self._target or self.model
    if self.keep is not None:
      self.keep_now = keep_schedule(epoch, self.epochs, self.keep)
    if self.keep is not None and self.form != "sign":  # sign: channels chosen at every step
      keep = keep_schedule(epoch, self.epochs, self.keep)
      variables = self._variables(model)
      if keep < 1.0 and not any(np.any(variables[i].numpy() != self.base[i])
                                for i, v in enumerate(variables) if is_kernel(v)):
        # Nothing has moved yet (a one-epoch training): ranking now would keep arbitrary
        # weights. Every weight moves for the first third of the epoch; the budget is then
        # taken from the changes that were largest.
        self.masks = None
        self._masks_due = max(1, int((self.params or {}).get("steps") or 1) // 3)
      else:
        self.masks, self._masks_due = budget_masks(variables, self.base, keep), None
      self.project(model, threshold=0.0)

  def on_train_batch_end(self, batch, logs=None):
    del logs
    if self._target is None:  # attached: the train step has projected already
      self.project(self.model, self.l1 * float(self.model.optimizer.learning_rate))
    if self._masks_due is not None and batch + 1 >= self._masks_due:
      model = self._target or self.model
      self.masks = budget_masks(self._variables(model), self.base, self.keep_now)
      self._masks_due = None
      self.project(model, threshold=0.0)

  def _variables(self, model: keras.Model) -> list[tf.Variable]:
    variables = backbone_variables(model)
    if len(variables) != len(self.base):
      raise ValueError(f"model has {len(variables)} backbone variables, the base "
                       f"{len(self.base)}: not the model this delta was made for")
    return variables

  # --- what both implementations share -------------------------------------------------------
  def _plan(self, model: keras.Model) -> projection.Plan:
    """What each backbone variable of `model` gets (`projection.Plan`), computed once per
    model."""
    variables = self._variables(model)
    frozen = frozen_variables(model)
    owners = range_owners(model)
    steps = self._int8_steps(owners)
    held = ({i: projection.range_setters(self.base[i], step) for i, step in steps.items()}
            if self.ranges == "pinned" else {})
    if self.form == "lowrank":
      self._check_rank(variables, steps)
    actions: dict[int, str] = {}
    for i, var in enumerate(variables):
      short = short_name(var)
      if i in owners and not frozen[i]:
        actions[i] = "range"  # after the kernels they cover
      elif frozen[i]:
        actions[i] = "base"
      elif is_kernel(var) and self.form in ("sign", "lowrank"):
        if i in steps and self.form == "sign":
          actions[i] = "sign"
        elif i in steps and short != "depthwise_kernel":
          actions[i] = "lowrank"
        else:  # no weight quantizer (or, low-rank, a depthwise kernel): the base's
          actions[i] = "base"
      elif is_kernel(var):
        actions[i] = "delta"
      elif short in _BATCHNORM:
        if self.pin_batchnorm:
          actions[i] = "base"
      elif not var.trainable and not short.startswith(_ACTIVATION_RANGES):
        actions[i] = "base"  # the input range and step counters
    is_min = {i: short_name(variables[i]).endswith("_min") for i in owners}
    return projection.Plan(model, variables, frozen, owners, steps, held, actions, is_min)

  # --- the compiled projection ---------------------------------------------------------------
  def project(self, model: keras.Model, threshold: float) -> None:
    """Soft-thresholds kernel deltas by `threshold`, applies the budget's masks and pins
    the rest of the backbone (weight quantizer ranges last, after the kernels they cover):
    one call of the compiled function (`project_reference` in numpy)."""
    state = self._graph_state(model)
    if self.masks is not state.masks_from:  # a new epoch's budget
      for i, mask in (self.masks or {}).items():
        if i in state.masks:  # (a frozen kernel's is the base anyway)
          state.masks[i].assign(mask.astype(np.float32))
      state.masked.assign(self.masks is not None)
      state.masks_from = self.masks
    state.function(tf.constant(threshold, tf.float32))
    self._last = "graph"

  def sign_latents(self) -> list[tuple[int, np.ndarray, np.ndarray, tuple[int, ...]]]:
    """(kernel index, latent delta, int8 step shaped to broadcast per channel, the other axes)
    of each sign kernel of the model the compiled projection serves: what diagnostics of the
    sign form read (bench/qat_divergence.py). Empty before the first projection."""
    if self._graph is None:
      return []
    return [(i, latent.numpy(), *self._graph.steps[i])
            for i, (latent, _) in self._graph.latent.items()]

  @property
  def projections(self) -> int:
    """How many times `project` has run (in train steps or not) since its model was set."""
    return int(self._graph.calls.numpy()) if self._graph is not None else 0

  def _graph_state(self, model: keras.Model) -> projection.Compiled:
    """`project`'s variables and compiled function for `model`, made at its first use."""
    if self._graph is not None and self._graph.plan.model is model:
      return self._graph
    plan = self._plan(model)
    with tf.init_scope():  # eager variables, even when first called from a traced function
      state = projection.Compiled(plan, self)
    self._graph = state
    return state

  # --- the reference: numpy on the host ------------------------------------------------------
  def project_reference(self, model: keras.Model, threshold: float) -> None:
    """`project` in numpy, kernel by kernel on the host (`projection.reference`): the
    specification its tests compare the compiled projection with (the same state kept apart,
    so one callback can run both)."""
    if self._reference is None or self._reference.model is not model:  # once, not every step
      self._reference = self._plan(model)
    projection.reference(self, self._reference, threshold)
    self._last = "reference"

  @property
  def factors(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Low-rank form, per kernel index: the (left, right, scales) factors of the last
    projection (what is saved), of whichever implementation projected last."""
    if self._last == "graph" and self._graph is not None:
      return {i: (left.numpy().astype(np.int8), right.numpy().astype(np.int8), scales.numpy())
              for i, (left, right, scales) in self._graph.factors.items()}
    return dict(self._reference.factors) if self._reference is not None else {}

  def _int8_steps(self, owners: dict[int, int]) -> dict[int, np.ndarray]:
    """Each quantized kernel's int8 step per channel (or per tensor), from the base's pinned
    symmetric range: max(|min|, |max|) / 127."""
    extent: dict[int, np.ndarray] = {}
    for r, kernel in owners.items():
      extent[kernel] = np.maximum(extent.get(kernel, 0.0), np.abs(self.base[r]))
    return {kernel: e / 127.0 for kernel, e in extent.items()}

  def _check_rank(self, variables, steps) -> None:
    """Refuses a rank that no factored kernel allows (rank <= min(C_out, kernel size) for
    some); layers that allow less get their full rank."""
    sides = [min(projection.as_rows(variables[i].numpy()).shape) for i in steps
             if short_name(variables[i]) != "depthwise_kernel"]
    if sides and self.rank > max(sides):
      raise ValueError(f"delta_rank={self.rank} is larger than any kernel allows: the largest "
                       f"min(output channels, kernel size) of this model is {max(sides)}")

  def save_factors(self, path: str) -> None:
    """Writes the low-rank factors of the last projection (`FACTORS_FILE`): per kernel k,
    arrays k<i>_left, k<i>_right, k<i>_scales (i: the kernel's backbone variable index)."""
    arrays = {f"k{i}_{part}": value for i, factors in sorted(self.factors.items())
              for part, value in zip(("left", "right", "scales"), factors)}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def project_once(model: keras.Model, base: list[np.ndarray], form: str = "sign",
                 pin_batchnorm: bool = False) -> None:
  """Projects a specialist's moves away from `base` onto `form`, once, as `DeltaToBase` does
  after every training step (no L1 step, the base's pinned quantizer ranges): where a
  fine-tuning of any length ends. bench/deployment.py builds its simulated specialists so.

  Args:
    model: the specialist, changed in place.
    base: values of `backbone_variables(model)` when the specialist was made.
    form: "sign" or "lowrank" (`DeltaToBase`'s forms without an L1 step).
    pin_batchnorm: also put BatchNorm parameters and statistics back to the base's.
  """
  DeltaToBase(base, 0.0, pin_batchnorm=pin_batchnorm, form=form).project(model, threshold=0.0)


def load_factors(path: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """The (left, right, scales) triples `DeltaToBase.save_factors` wrote, in kernel order."""
  with np.load(path, allow_pickle=False) as f:
    kernels = sorted({int(name[1:].split("_")[0]) for name in f.files})
    return [tuple(f[f"k{i}_{part}"] for part in ("left", "right", "scales")) for i in kernels]


def delta_stats(model: keras.Model, base: list[np.ndarray]) -> dict[str, float | int]:
  """How sparse a specialist's backbone delta is: changed kernel weights out of all."""
  changed = total = 0
  for var, b in zip(backbone_variables(model), base):
    if is_kernel(var):
      changed += int(np.count_nonzero(var.numpy() != b))
      total += int(b.size)
  return {"kernel_weights": total, "changed": changed,
          "changed_fraction": changed / total if total else 0.0}
