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

A sign specialist (`--specialist_form=sign`, `sign_delta`; BitDelta, Liu et al. 2024) changes every
weight of a kernel channel by the same amount, up or down: W = W_base + k x step x sign, with k a
whole number of the channel's int8 steps. With the base's pinned quantizer ranges its int8 weights
are the base's +-k, which the bundle stores in about one bit per weight (the signed encoding of
`super_sub.formats.encodings`). Training keeps a free-moving latent delta that each step's
update goes to and projects it onto that form for the next forward pass (a straight-through estimator).
With a budget (`--delta_keep`), only the output channels that would move most, in int8 steps, may
move (`sign_channel_masks`). Channels that do not move store no sign bits.

A low-rank specialist (`--specialist_form=lowrank`, `low_rank_factors`; LoRA, Hu et al. 2021,
applied to each kernel as a [C_out, kernel size] matrix) changes each kernel's int8 weights by
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
  the budget from the start: the last epoch always ends within it).
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


def _steps_moved(latent: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean |latent| / step per channel, step), both shaped to broadcast against `latent`: how
  many int8 steps each channel's latent delta would move it (`sign_delta`'s k before rounding).

  `step`: the int8 step of each channel (a scalar for per-tensor quantization, one channel); the
  channel axis is the kernel axis as long as `step`, the last one on ties (a depthwise kernel's
  channels come before its multiplier; `_per_channel`).
  """
  step, others = _per_channel(latent, step)
  return np.abs(latent).mean(axis=others, keepdims=True) / np.maximum(step, 1e-12), step


def _per_channel(kernel: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
  """(`step` shaped to broadcast against `kernel`, the axes that are not the channel axis): the
  channel axis is the kernel axis as long as `step`, the last one on ties (a depthwise kernel's
  channels come before its multiplier); a scalar step is one channel of every axis."""
  step = np.asarray(step, np.float32)
  if step.ndim == 0:
    return step, tuple(range(kernel.ndim))
  axis = max(a for a in range(kernel.ndim) if kernel.shape[a] == step.shape[0])
  shape = [1] * kernel.ndim
  shape[axis] = step.shape[0]
  return step.reshape(shape), tuple(a for a in range(kernel.ndim) if a != axis)


def range_setters(base: np.ndarray, step: np.ndarray) -> np.ndarray:
  """Where each channel of a quantized kernel holds its largest |int8| value (bool, `base`'s
  shape; `step`: the channel's int8 step, as in `_steps_moved`).

  The TFLite converter folds BatchNorm into the convolution before it and quantizes the folded
  kernel per output channel from that kernel's own largest |value|: the weight quantizer's range
  does not survive the fold. A channel whose largest weight moved inward is rescaled, and most
  of its int8 weights change by rounding; a sign specialist (+-k per weight in QAT) then stored
  30-60% of such a channel's bytes again as exceptions. Moves outward are clipped by the pinned
  range. So specialists with pinned ranges keep these weights at the base's value.
  """
  step, others = _per_channel(base, step)
  levels = np.minimum(np.abs(np.round(base / np.maximum(step, 1e-12))), 127)
  return levels == levels.max(axis=others, keepdims=True)


def sign_channel_masks(latents: dict[int, np.ndarray], steps: dict[int, np.ndarray],
                       keep: float) -> dict[int, np.ndarray]:
  """Per kernel (by index), which output channels a sign specialist may move under a budget.

  Every channel of every kernel is ranked by how far its latent delta would move it, in its
  own int8 steps (`_steps_moved`). Channels are taken in that order (ties: kernel index, then
  channel) as long as their weights fit in `keep` of all kernel weights: a moved channel costs
  a sign bit per weight. A kernel quantized per tensor counts as one channel.

  Returns: kernel index -> bool [C] (a scalar array for a per-tensor kernel).
  """
  scores, sizes, owners = [], [], []
  for i in sorted(latents):
    score = np.ravel(_steps_moved(latents[i], steps[i])[0])
    scores.append(score)
    sizes.append(np.full(score.shape, latents[i].size // score.size))
    owners.append(np.full(score.shape, i))
  if not scores:
    return {}
  score, size, owner = (np.concatenate(a) for a in (scores, sizes, owners))
  order = np.argsort(-score, kind="stable")
  taken = np.zeros(len(score), bool)
  taken[order[np.cumsum(size[order]) <= keep * size.sum()]] = True
  masks = {}
  for i in sorted(latents):
    mask = taken[owner == i]
    masks[i] = mask if np.ndim(steps[i]) else mask.reshape(())
  return masks


def sign_delta(latent: np.ndarray, step: np.ndarray,
               channels: np.ndarray | None = None) -> np.ndarray:
  """The sign form closest to `latent`: per channel, k x step x sign(latent) (0 counts as +),
  with k = round(mean |latent| / step) (BitDelta's L2-optimal scale, in whole int8 steps).

  `step`: the int8 step of each channel, or a scalar (`_steps_moved`).
  `channels`: which channels may move (`sign_channel_masks`); the others get k = 0.
  """
  moved, step = _steps_moved(latent, step)
  k = np.round(moved)
  if channels is not None:
    k = k * np.reshape(channels, np.shape(k))
  return (k * step * np.where(latent >= 0, 1.0, -1.0)).astype(latent.dtype)


def as_rows(kernel: np.ndarray) -> np.ndarray:
  """A Keras kernel ([..., C_out]) as TFLite lays it out, [C_out, ...], flattened to C_out rows
  (conv [H, W, C_in, C_out] -> [C_out, H W C_in]; dense [in, out] -> [out, in])."""
  return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


def from_rows(rows: np.ndarray, shape) -> np.ndarray:
  """`as_rows` undone: [C_out, ...] rows back to the Keras kernel shape."""
  return np.moveaxis(rows.reshape(shape[-1], *shape[:-1]), 0, -1)


def low_rank_factors(rows: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """int8 factors and row scales (`factored_product`'s arguments) of the best rank-`rank`
  approximation of `rows` ([m, n], in int8 steps): a truncated SVD U S V^T, left = U S and
  right = V^T quantized to int8, left per row and right as a whole. The rank is capped at
  min(m, n)."""
  u, s, vt = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
  r = min(rank, s.size)
  left, right = u[:, :r] * s[:r], vt[:r]
  right_max = float(np.abs(right).max()) or 1.0
  left_max = np.abs(left).max(axis=1)
  left_max[left_max == 0] = 1.0
  return (np.round(left * 127 / left_max[:, None]).astype(np.int8),
          np.round(right * 127 / right_max).astype(np.int8),
          (left_max / 127 * right_max / 127).astype(np.float32))


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


def grow_range(base: np.ndarray, kernel: np.ndarray, is_min: bool) -> np.ndarray:
  """A weight quantizer bound widened where `kernel` outgrew it, per quantization axis.

  tfmot quantizes per output channel symmetrically (narrow range: int8 = round(W * 127 / r),
  r = max(|min|, |max|)); where a channel's largest |W| exceeds the base's r, the base range
  would clip it, so the bound moves to +-max|W| there (that channel's int8 scale, and so all its
  int8 weights, change). Elsewhere the base's bound stays, so unchanged channels keep their int8
  values. The channel axis is the kernel axis as long as the range (`_per_channel`).
  """
  base = np.asarray(base)
  extent = np.abs(kernel).max(axis=_per_channel(kernel, base)[1])
  grown = np.minimum(base, -extent) if is_min else np.maximum(base, extent)
  return grown.astype(base.dtype)


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
  weights that set each channel's range held at the base's too (`range_setters`: otherwise
  TFLite requantizes the channel), or with `ranges="grow"` widened per output channel where the
  changed kernel outgrew them (`grow_range`).
  The input range, step counters and every variable of a frozen layer (`--freeze_stages`):
  always pinned. With `form` "sign" or "lowrank", each quantized kernel instead holds the
  projection of a latent delta (`sign_delta`, `low_rank_factors`) after every step; a sign
  budget picks the channels that may move (`sign_channel_masks` at the `keep_schedule`
  fraction) again at every step, from all latent deltas.
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
  tests hold `project` to.
  """

  def __init__(self, base: list[np.ndarray], l1: float, pin_batchnorm: bool = True,
               keep: float | None = None, epochs: int = 1, ranges: str = "pinned",
               form: str = "delta", rank: int = 8):
    """`base`: values of `backbone_variables(model)` when the specialist was made;
    `keep`: the budget (fraction of kernel weights that may differ), None for no budget;
    `epochs`: the length of the training, which `keep_schedule` spreads the pruning over;
    `ranges`: weight quantizer ranges "pinned" to the base's or allowed to "grow";
    `form`: "sign" keeps each quantized kernel `sign_delta` of a latent delta (a `keep`
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
    self._keep_now: float | None = None
    self._graph: _GraphState | None = None  # `project`'s variables and function, per model
    self._reference: _Plan | None = None  # `project_reference`'s state, per model
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
      self.masks = budget_masks(self._variables(model), self.base,
                                keep_schedule(epoch, self.epochs, self.keep))
      self.project(model, threshold=0.0)

  def on_train_batch_end(self, batch, logs=None):
    del batch, logs
    if self._target is None:  # attached: the train step has projected already
      self.project(self.model, self.l1 * float(self.model.optimizer.learning_rate))

  def _variables(self, model: keras.Model) -> list[tf.Variable]:
    variables = backbone_variables(model)
    if len(variables) != len(self.base):
      raise ValueError(f"model has {len(variables)} backbone variables, the base "
                       f"{len(self.base)}: not the model this delta was made for")
    return variables

  # --- what both implementations share -------------------------------------------------------
  def _plan(self, model: keras.Model) -> "_Plan":
    """What each backbone variable of `model` gets (`_Plan`), computed once per model."""
    variables = self._variables(model)
    frozen = frozen_variables(model)
    owners = range_owners(model)
    steps = self._int8_steps(owners)
    held = ({i: range_setters(self.base[i], step) for i, step in steps.items()}
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
    return _Plan(model, variables, owners, steps, held, actions)

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

  @property
  def projections(self) -> int:
    """How many times `project` has run (in train steps or not) since its model was set."""
    return int(self._graph.calls.numpy()) if self._graph is not None else 0

  def _graph_state(self, model: keras.Model) -> "_GraphState":
    """`project`'s variables and compiled function for `model`, made at its first use."""
    if self._graph is not None and self._graph.plan.model is model:
      return self._graph
    plan = self._plan(model)
    with tf.init_scope():  # eager variables, even when first called from a traced function
      state = _GraphState(plan, self)
    self._graph = state
    return state

  # --- the reference: numpy on the host ------------------------------------------------------
  def project_reference(self, model: keras.Model, threshold: float) -> None:
    """`project` in numpy, kernel by kernel on the host: the specification its tests compare
    the compiled projection with (the same state kept apart, so one callback can run both)."""
    if self._reference is None or self._reference.model is not model:  # once, not every step
      self._reference = self._plan(model)
    plan = self._reference
    variables, owners, steps, frozen = plan.variables, plan.owners, plan.steps, plan.frozen
    channels = None
    if self.form == "sign":
      latents = {i: self._update_latent(i, variables[i].numpy() - self.base[i])
                 for i, action in plan.actions.items() if action == "sign"}
      if self.keep_now is not None and self.keep_now < 1.0:
        channels = sign_channel_masks(latents, steps, self.keep_now)
    for i, (var, base) in enumerate(zip(variables, self.base)):
      action = plan.actions.get(i)
      if action == "base":
        var.assign(base)
      elif action == "sign":
        var.assign(base + self._projected_sign(
            i, steps[i], channels[i] if channels is not None else None))
      elif action == "lowrank":
        var.assign(base + self._projected_step(i, var.numpy() - base, steps[i]))
      elif action == "delta":
        mask = self.masks.get(i) if self.masks is not None else None
        held = plan.held.get(i)
        if threshold > 0 or mask is not None:
          delta = var.numpy() - base
          if threshold > 0:
            delta = np.sign(delta) * np.maximum(np.abs(delta) - threshold, 0.0)
          if mask is not None:
            delta = np.where(mask, delta, 0.0)
          if held is not None:
            delta = np.where(held, 0.0, delta)
          var.assign(base + delta.astype(base.dtype))
        elif held is not None:  # only the held weights (a few a channel): no full copy a step
          var.scatter_nd_update(np.argwhere(held), base[held])
    for i, kernel in owners.items():
      if not frozen[i]:
        variables[i].assign(self.base[i] if self.ranges == "pinned" else
                            grow_range(self.base[i], variables[kernel].numpy(),
                                       is_min=short_name(variables[i]).endswith("_min")))
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

  def _update_latent(self, i: int, delta: np.ndarray) -> np.ndarray:
    """The straight-through update of kernel i's latent delta: it takes the optimizer's change
    since the last projection (a resumed or first call starts it from the weights)."""
    state = self._reference.latent
    latent, applied = state.get(i, (delta, delta))
    latent = latent + (delta - applied)
    state[i] = (latent, applied)
    return latent

  def _projected_sign(self, i: int, step: np.ndarray, channels: np.ndarray | None) -> np.ndarray:
    """Kernel i's latent delta (updated by `_update_latent`) projected by `sign_delta`; that
    projection is what the model holds until the next step."""
    latent, _ = self._reference.latent[i]
    projected = self._hold(i, sign_delta(latent, step, channels))
    self._reference.latent[i] = (latent, projected)
    return projected

  def _projected_step(self, i: int, delta: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Kernel i's latent delta, updated, projected onto the low-rank product in whole int8
    steps: what the model then holds."""
    latent = self._update_latent(i, delta)
    step_rows = np.reshape(step, (-1, 1)) if np.ndim(step) else step
    factors = low_rank_factors(as_rows(latent) / np.maximum(step_rows, 1e-12), self.rank)
    self._reference.factors[i] = factors
    projected = self._hold(i, (from_rows(encodings.factored_product(*factors).astype(np.float32)
                                         * step_rows, latent.shape)).astype(latent.dtype))
    self._reference.latent[i] = (latent, projected)
    return projected

  def _hold(self, i: int, delta: np.ndarray) -> np.ndarray:
    """Kernel i's delta, zero where `range_setters` holds it at the base (pinned ranges)."""
    held = self._reference.held.get(i)
    return delta if held is None else np.where(held, 0.0, delta).astype(delta.dtype)

  def _check_rank(self, variables, steps) -> None:
    """Refuses a rank that no factored kernel allows (rank <= min(C_out, kernel size) for
    some); layers that allow less get their full rank."""
    sides = [min(as_rows(variables[i].numpy()).shape) for i in steps
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


class _Plan:
  """What `DeltaToBase` does to each backbone variable of one model, and the numpy reference's
  state. `actions[i]`: "base" (pinned), "delta" (soft threshold, budget mask, held weights),
  "sign" or "lowrank" (projected latent), "range" (a weight quantizer range, last); absent:
  left alone (activation ranges, free BatchNorm)."""

  def __init__(self, model, variables, owners, steps, held, actions):
    self.model, self.variables, self.owners, self.steps = model, variables, owners, steps
    self.held, self.actions = held, actions
    self.frozen = frozen_variables(model)
    # The reference's sign and low-rank state, per kernel index: (latent, last projection),
    # and the low-rank factors of the last projection.
    self.latent: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self.factors: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


class _GraphState:
  """`DeltaToBase.project`'s variables for one model and its compiled function.

  Per variable index: the base (every variable an action touches), latent and last projection
  (sign and low-rank kernels), the budget's mask (delta kernels with a budget), the low-rank
  factors (as float32 holding whole numbers: int8 variables lack kernels on some devices), and
  the held weights (`range_setters`) as 0/1 floats. Latents and projections start at zero, so
  the first call takes the latent from the weights (as a resumed training must). Scalars:
  whether a budget mask applies, and the sign budget of this epoch.
  """

  def __init__(self, plan: _Plan, owner: DeltaToBase):
    self.plan, self.form, self.rank = plan, owner.form, owner.rank
    self.ranges, self.sign_budget = owner.ranges, owner.form == "sign" and owner.keep is not None
    base, actions = owner.base, plan.actions
    variable = lambda value, name: tf.Variable(value, trainable=False, name=name)  # noqa: E731
    self.base = {i: variable(base[i], f"delta_base_{i}") for i in actions}
    self.latent = {i: (variable(np.zeros_like(base[i]), f"delta_latent_{i}"),
                       variable(np.zeros_like(base[i]), f"delta_applied_{i}"))
                   for i, a in actions.items() if a in ("sign", "lowrank")}
    self.held = {i: variable(h.astype(np.float32), f"delta_held_{i}")
                 for i, h in plan.held.items() if actions.get(i) in ("delta", "sign", "lowrank")}
    budget = owner.keep is not None and owner.form != "sign"
    self.masks = {i: variable(np.ones(base[i].shape, np.float32), f"delta_mask_{i}")
                  for i, a in actions.items() if a == "delta" and budget}
    self.masks_from: dict | None = None  # the `DeltaToBase.masks` the variables hold
    self.masked = variable(False, "delta_masked")
    self.calls = variable(np.int64(0), "delta_projections")  # how many projections ran
    self.keep_now = variable(np.float64(1.0 if owner.keep_now is None else owner.keep_now),
                             "delta_keep_now")
    # Static shapes: each quantized kernel's step, broadcast against it, and its other axes.
    self.steps = {i: _per_channel(base[i], plan.steps[i]) for i in self.latent}
    self.factors = {}
    for i, a in actions.items():
      if a == "lowrank":
        m = base[i].shape[-1]
        n = base[i].size // m
        r = min(self.rank, m, n)
        self.factors[i] = (variable(np.zeros((m, r), np.float32), f"delta_left_{i}"),
                           variable(np.zeros((r, n), np.float32), f"delta_right_{i}"),
                           variable(np.zeros(m, np.float32), f"delta_scales_{i}"))
    self.function = tf.function(self._project)

  def _project(self, threshold: tf.Tensor) -> None:
    """The projection of `DeltaToBase.project_reference`, on the variables, in one graph."""
    plan, variables = self.plan, self.plan.variables
    latents = {}
    for i, (latent, applied) in self.latent.items():
      delta = variables[i].read_value() - self.base[i]
      latents[i] = latent + (delta - applied)
      latent.assign(latents[i])
    moved = {i: _steps_moved_tf(latents[i], *self.steps[i]) for i in latents}
    channels = self._sign_channels(moved) if self.sign_budget else {}
    for i in sorted(plan.actions):
      action, var = plan.actions[i], variables[i]
      base = self.base.get(i)
      if action == "base":
        var.assign(base)
      elif action in ("sign", "lowrank"):
        if action == "sign":
          k = tf.round(moved[i])
          if i in channels:
            k = k * channels[i]
          projected = k * self.steps[i][0] * tf.where(latents[i] >= 0, 1.0, -1.0)
        else:
          projected = self._low_rank(i, latents[i], plan.steps[i])
        projected = self._hold(i, projected)
        self.latent[i][1].assign(projected)
        var.assign(base + projected)
      elif action == "delta":
        value = var.read_value()
        delta = value - base
        cut = tf.sign(delta) * tf.maximum(tf.abs(delta) - threshold, 0.0)
        delta = tf.where(threshold > 0, cut, delta)
        full = threshold > 0
        if i in self.masks:
          delta = tf.where(tf.logical_and(self.masked, self.masks[i] == 0), 0.0, delta)
          full = tf.logical_or(full, self.masked)
        delta = self._hold(i, delta)
        kept = value if i not in self.held else tf.where(self.held[i] > 0, base, value)
        var.assign(tf.where(full, base + delta, kept))
    self.calls.assign_add(1)
    for i, kernel in plan.owners.items():
      if plan.actions.get(i) != "range":
        continue
      if self.ranges == "pinned":
        variables[i].assign(self.base[i])
      else:
        variables[i].assign(_grow_range_tf(self.base[i], variables[kernel].read_value(),
                                           short_name(variables[i]).endswith("_min")))

  def _hold(self, i, delta):
    return delta if i not in self.held else tf.where(self.held[i] > 0, 0.0, delta)

  def _sign_channels(self, moved: dict) -> dict:
    """`sign_channel_masks` in TensorFlow: per kernel, 1.0 where a channel may move."""
    order_keys = sorted(moved)
    score = tf.concat([tf.reshape(moved[i], [-1]) for i in order_keys], axis=0)
    counts = [int(np.prod(moved[i].shape)) for i in order_keys]
    size = np.concatenate([np.full(c, self.base[i].shape.num_elements() // c, np.int64)
                           for i, c in zip(order_keys, counts)])
    order = tf.argsort(-score, stable=True)
    taken = (tf.cast(tf.cumsum(tf.gather(size, order)), tf.float64)
             <= self.keep_now * float(size.sum()))
    taken = tf.gather(taken, tf.math.invert_permutation(order)) | (self.keep_now >= 1.0)
    parts = tf.split(tf.cast(taken, tf.float32), counts)
    return {i: tf.reshape(p, moved[i].shape) for i, p in zip(order_keys, parts)}

  def _low_rank(self, i, latent, step):
    """Kernel i's latent delta as the integer product of its rank-r int8 factors, in steps."""
    shape = latent.shape
    step_rows = np.reshape(step, (-1, 1)) if np.ndim(step) else np.float32(step)
    rows = _as_rows_tf(latent) / tf.maximum(step_rows, 1e-12)
    s, u, v = tf.linalg.svd(tf.cast(rows, tf.float64), full_matrices=False)
    left_var, right_var, scales_var = self.factors[i]
    r = left_var.shape[1]
    left, right = u[:, :r] * s[:r], tf.transpose(v[:, :r])
    right_max = tf.reduce_max(tf.abs(right))
    right_max = tf.where(right_max == 0, tf.constant(1.0, tf.float64), right_max)
    left_max = tf.reduce_max(tf.abs(left), axis=1)
    left_max = tf.where(left_max == 0, tf.constant(1.0, tf.float64), left_max)
    left = tf.round(left * 127 / left_max[:, None])
    right = tf.round(right * 127 / right_max)
    scales = tf.cast(left_max / 127 * right_max / 127, tf.float32)
    left_var.assign(tf.cast(left, tf.float32))
    right_var.assign(tf.cast(right, tf.float32))
    scales_var.assign(scales)
    # `encodings.factored_product`: the sums are whole numbers below 2**24, exact in float64
    # and float32, then one correctly rounded float32 product per weight.
    product = tf.round(tf.cast(tf.matmul(left, right), tf.float32) * scales[:, None])
    return _from_rows_tf(product * step_rows, shape)


def _steps_moved_tf(latent, step, others):
  """`_steps_moved`'s first part in TensorFlow: mean |latent| / step per channel (keepdims)."""
  return (tf.reduce_mean(tf.abs(latent), axis=others, keepdims=True)
          / tf.maximum(tf.constant(step), 1e-12))


def _as_rows_tf(kernel):
  """`as_rows` in TensorFlow."""
  rank = kernel.shape.rank
  moved = tf.transpose(kernel, [rank - 1] + list(range(rank - 1)))
  return tf.reshape(moved, [kernel.shape[-1], -1])


def _from_rows_tf(rows, shape):
  """`from_rows` in TensorFlow."""
  rank = len(shape)
  rows = tf.reshape(rows, [shape[-1], *shape[:-1]])
  return tf.transpose(rows, list(range(1, rank)) + [0])


def _grow_range_tf(base, kernel, is_min: bool):
  """`grow_range` in TensorFlow."""
  others = _per_channel(np.empty(kernel.shape, np.float32), np.empty(base.shape, np.float32))[1]
  extent = tf.reduce_max(tf.abs(kernel), axis=others)
  return tf.minimum(base, -extent) if is_min else tf.maximum(base, extent)


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
