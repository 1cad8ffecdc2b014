"""How a specialist's delta is projected onto its form after every training step: the numpy
projections (sign, low rank, held weights, grown ranges), `Plan` (what each backbone variable
gets), `Compiled` (the projection as one TensorFlow function, what training runs) and
`reference` (the same in numpy on the host, the specification the tests hold `Compiled` to).

`super_sub.training.deltas.DeltaToBase` is the callback that runs them; its docstring says
what the projection does and why.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from super_sub.formats import encodings


def _steps_moved(latent: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean |latent| / step per channel, step), both shaped to broadcast against `latent`: how
  many int8 steps each channel's latent delta would move it (`sign_delta`'s k before rounding).

  `step`: the int8 step of each channel (a scalar for per-tensor quantization, one channel); the
  channel axis is the kernel axis as long as `step`, the last one on ties (a depthwise kernel's
  channels come before its multiplier; `per_channel`).
  """
  step, others = per_channel(latent, step)
  return np.abs(latent).mean(axis=others, keepdims=True) / np.maximum(step, 1e-12), step


def per_channel(kernel: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
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
  step, others = per_channel(base, step)
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


def grow_range(base: np.ndarray, kernel: np.ndarray, is_min: bool) -> np.ndarray:
  """A weight quantizer bound widened where `kernel` outgrew it, per quantization axis.

  tfmot quantizes per output channel symmetrically (narrow range: int8 = round(W * 127 / r),
  r = max(|min|, |max|)); where a channel's largest |W| exceeds the base's r, the base range
  would clip it, so the bound moves to +-max|W| there (that channel's int8 scale, and so all its
  int8 weights, change). Elsewhere the base's bound stays, so unchanged channels keep their int8
  values. The channel axis is the kernel axis as long as the range (`per_channel`).
  """
  base = np.asarray(base)
  extent = np.abs(kernel).max(axis=per_channel(kernel, base)[1])
  grown = np.minimum(base, -extent) if is_min else np.maximum(base, extent)
  return grown.astype(base.dtype)


class Plan:
  """What `DeltaToBase` does to each backbone variable of one model, and the numpy reference's
  state. `actions[i]`: "base" (pinned), "delta" (soft threshold, budget mask, held weights),
  "sign" or "lowrank" (projected latent), "range" (a weight quantizer range, last); absent:
  left alone (activation ranges, free BatchNorm)."""

  def __init__(self, model, variables, frozen, owners, steps, held, actions, is_min):
    self.model, self.variables, self.owners, self.steps = model, variables, owners, steps
    self.frozen, self.held, self.actions = frozen, held, actions
    self.is_min = is_min  # per weight quantizer range: a lower bound ("kernel_min", ...)
    # The reference's sign and low-rank state, per kernel index: (latent, last projection),
    # and the low-rank factors of the last projection.
    self.latent: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self.factors: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def reference(owner, plan: Plan, threshold: float) -> None:
  """`DeltaToBase.project` in numpy, kernel by kernel on the host, on `plan`'s model: the
  specification its tests compare the compiled projection (`Compiled`) with. `owner`: the
  `DeltaToBase` (its base, form, rank, ranges, budget and masks); `plan` keeps this
  implementation's state apart from the compiled one's, so one callback can run both."""
  variables, owners, steps, frozen = plan.variables, plan.owners, plan.steps, plan.frozen
  channels = None
  if owner.form == "sign":
    latents = {i: _update_latent(plan, i, variables[i].numpy() - owner.base[i])
               for i, action in plan.actions.items() if action == "sign"}
    if owner.keep_now is not None and owner.keep_now < 1.0:
      channels = sign_channel_masks(latents, steps, owner.keep_now)
  for i, (var, base) in enumerate(zip(variables, owner.base)):
    action = plan.actions.get(i)
    if action == "base":
      var.assign(base)
    elif action == "sign":
      var.assign(base + _projected_sign(
          plan, i, steps[i], channels[i] if channels is not None else None))
    elif action == "lowrank":
      var.assign(base + _projected_step(plan, i, var.numpy() - base, steps[i], owner.rank))
    elif action == "delta":
      mask = owner.masks.get(i) if owner.masks is not None else None
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
      variables[i].assign(owner.base[i] if owner.ranges == "pinned" else
                          grow_range(owner.base[i], variables[kernel].numpy(),
                                     is_min=plan.is_min[i]))


def _update_latent(plan: Plan, i: int, delta: np.ndarray) -> np.ndarray:
  """The straight-through update of kernel i's latent delta: it takes the optimizer's change
  since the last projection (a resumed or first call starts it from the weights)."""
  state = plan.latent
  latent, applied = state.get(i, (delta, delta))
  latent = latent + (delta - applied)
  state[i] = (latent, applied)
  return latent


def _projected_sign(plan: Plan, i: int, step: np.ndarray,
                    channels: np.ndarray | None) -> np.ndarray:
  """Kernel i's latent delta (updated by `_update_latent`) projected by `sign_delta`; that
  projection is what the model holds until the next step."""
  latent, _ = plan.latent[i]
  projected = _hold(plan, i, sign_delta(latent, step, channels))
  plan.latent[i] = (latent, projected)
  return projected


def _projected_step(plan: Plan, i: int, delta: np.ndarray, step: np.ndarray,
                    rank: int) -> np.ndarray:
  """Kernel i's latent delta, updated, projected onto the low-rank product in whole int8
  steps: what the model then holds."""
  latent = _update_latent(plan, i, delta)
  step_rows = np.reshape(step, (-1, 1)) if np.ndim(step) else step
  factors = low_rank_factors(as_rows(latent) / np.maximum(step_rows, 1e-12), rank)
  plan.factors[i] = factors
  projected = _hold(plan, i, (from_rows(encodings.factored_product(*factors).astype(np.float32)
                                       * step_rows, latent.shape)).astype(latent.dtype))
  plan.latent[i] = (latent, projected)
  return projected


def _hold(plan: Plan, i: int, delta: np.ndarray) -> np.ndarray:
  """Kernel i's delta, zero where `range_setters` holds it at the base (pinned ranges)."""
  held = plan.held.get(i)
  return delta if held is None else np.where(held, 0.0, delta).astype(delta.dtype)


class Compiled:
  """`DeltaToBase.project`'s variables for one model and its compiled function (`owner`: the
  `DeltaToBase`, read for its base, form, rank, ranges and budget).

  Per variable index: the base (every variable an action touches), latent and last projection
  (sign and low-rank kernels), the budget's mask (delta kernels with a budget), the low-rank
  factors (as float32 holding whole numbers: int8 variables lack kernels on some devices), and
  the held weights (`range_setters`) as 0/1 floats. Latents and projections start at zero, so
  the first call takes the latent from the weights (as a resumed training must). Scalars:
  whether a budget mask applies, and the sign budget of this epoch.
  """

  def __init__(self, plan: Plan, owner):
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
    self.steps = {i: per_channel(base[i], plan.steps[i]) for i in self.latent}
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
    """The projection of `reference`, on the variables, in one graph."""
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
                                           plan.is_min[i]))

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
  others = per_channel(np.empty(kernel.shape, np.float32), np.empty(base.shape, np.float32))[1]
  extent = tf.reduce_max(tf.abs(kernel), axis=others)
  return tf.minimum(base, -extent) if is_min else tf.maximum(base, extent)
