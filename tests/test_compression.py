"""Specialists as sparse deltas: proximal steps, pinned BatchNorm and pinned QAT ranges."""

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema

from super_sub import runtime
from super_sub._internal import files
from super_sub._internal.compat import keras
from super_sub.bundles import export as export_lib
from super_sub.bundles import tflite
from super_sub.models import classifiers
from super_sub.formats import delta as delta_lib
from super_sub.formats import encodings
from super_sub.formats import flatbuffer
from super_sub.training import config as config_lib
from super_sub.training import deltas as compression
from super_sub.training import fit
from super_sub.training import projection
from super_sub.training import qat as qat_lib
from super_sub.training import run as run_lib


def test_proximal_step_hand_computed():
  model = classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "specialist", "specialist_0")
  variables = compression.backbone_variables(model)
  base = [v.numpy() for v in variables]
  k = next(i for i, v in enumerate(variables) if compression.is_kernel(v))
  g = next(i for i, v in enumerate(variables) if "gamma" in v.name)
  moved = base[k].copy()
  moved.flat[:3] += np.array([0.5, -0.05, 0.0004], np.float32)
  variables[k].assign(moved)
  variables[g].assign(base[g] + 1.0)
  compression.DeltaToBase(base, l1=0.5, pin_batchnorm=True).project(model, threshold=0.001)
  delta = variables[k].numpy() - base[k]
  np.testing.assert_allclose(delta.flat[:3], [0.499, -0.049, 0.0], atol=1e-6)
  assert np.count_nonzero(delta) == 2  # the below-threshold change snapped back exactly
  np.testing.assert_array_equal(variables[g].numpy(), base[g])  # BatchNorm pinned


def test_delta_to_base_refuses_another_model():
  a = classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "specialist", "a")
  b = classifiers.build_classifier("resnet18", (32, 32, 3), 3, "specialist", "b")
  base = [v.numpy() for v in compression.backbone_variables(a)]
  with pytest.raises(ValueError, match="not the model this delta was made for"):
    compression.DeltaToBase(base, 0.5).project(b, 1e-4)


def test_keep_schedule_ramps_down_then_holds():
  values = [compression.keep_schedule(e, 12, 0.02) for e in range(12)]
  assert values[0] == 1.0
  assert values[4] == pytest.approx(0.02 + 0.98 * 0.5 ** 3)
  assert values[8:] == [0.02] * 4
  assert all(a >= b for a, b in zip(values, values[1:]))
  assert compression.keep_schedule(0, 1, 0.1) == 0.1  # one epoch: the budget at once


def test_one_epoch_budget_is_taken_from_the_first_third_of_the_epoch():
  """A one-epoch --delta_keep training: at its start nothing has moved, so the budget's masks
  wait until a third of the epoch's steps, then keep the largest changes (before, masks taken
  from the unchanged weights kept none and the specialist's backbone stayed the generalist's)."""
  model = classifiers.build_classifier("small_resnet", (8, 8, 1), 3, "specialist", "specialist_0")
  model.compile(optimizer="sgd")
  variables = compression.backbone_variables(model)
  base = [v.numpy() for v in variables]
  kernels = [i for i, v in enumerate(variables) if compression.is_kernel(v)]
  callback = compression.DeltaToBase(base, 0.0, pin_batchnorm=False, keep=0.1, epochs=1)
  callback.set_model(model)
  callback.set_params({"steps": 6})
  callback.on_epoch_begin(0)
  rng = np.random.default_rng(0)

  def optimizer_step():
    for i in kernels:
      variables[i].assign(variables[i].numpy() + rng.normal(0, 0.01, base[i].shape))

  optimizer_step()
  callback.on_train_batch_end(0)  # step 1 of 6: every weight may move
  assert callback.masks is None
  assert all(np.all(variables[i].numpy() != base[i]) for i in kernels)
  optimizer_step()
  steps = {i: compression.quantization_steps(variables[i].numpy() - base[i], base[i])
           for i in kernels}
  callback.on_train_batch_end(1)  # step 2 of 6, a third: the budget from these changes
  assert callback.masks is not None
  changed = {i: variables[i].numpy() != base[i] for i in kernels}
  total = sum(c.size for c in changed.values())
  kept = sum(int(c.sum()) for c in changed.values())
  assert kept == int(0.1 * total)  # the budget, spent
  smallest_kept = min(float(steps[i][changed[i]].min()) for i in kernels if changed[i].any())
  largest_reset = max(float(steps[i][~changed[i]].max()) for i in kernels)
  assert smallest_kept >= largest_reset  # on the largest changes, in int8 steps


def test_budget_keeps_the_largest_changes_in_quantization_steps():
  base = [np.array([[1.0, 2.0], [-1.0, 4.0]], np.float32), np.array([[2.0, 2.0]], np.float32)]
  moved = [base[0] + np.array([[0.02, 0.04], [0.0, 0.01]], np.float32),
           base[1] + np.array([[0.03, 0.0]], np.float32)]
  variables = [tf.Variable(moved[0], name="conv/kernel"), tf.Variable(moved[1], name="d/kernel")]
  # In int8 steps (column max / 127): 2.54, 1.27, 0, 0.32 and 1.91, 0. The raw sizes would
  # rank 0.04 first; its column's larger range makes it the smaller change in int8.
  masks = compression.budget_masks(variables, base, keep=2 / 6)
  np.testing.assert_array_equal(masks[0], [[True, False], [False, False]])
  np.testing.assert_array_equal(masks[1], [[True, False]])
  assert not any(m.any() for m in compression.budget_masks(variables, base, 0.0).values())
  assert all(m.all() for m in compression.budget_masks(variables, base, 1.0).values())


@pytest.fixture(scope="module")
def _train(smoke_config):
  """Trains a smoke run whose only specialist is superclass 4's ("dots"), for 2 epochs."""
  def train(model_dir, **overrides):
    config = smoke_config(model_dir, specialist_epochs=2, specialists=(4,), **overrides)
    return fit.train(config, log=lambda _: None)
  return train


def _stage(config, stage):
  return run_lib.Run(config).load_model(stage)


@pytest.mark.slow
def test_sparse_delta_vs_dense_fine_tuning(tmp_path, _train):
  sparse = _train(tmp_path / "sparse", delta_l1=1.0, freeze_bn=True,
                  learning_rate=3e-3)
  dense = _train(tmp_path / "dense", delta_l1=0.0, freeze_bn=False,
                 learning_rate=3e-3)
  fractions = {}
  for name, config in (("sparse", sparse), ("dense", dense)):
    generalist = _stage(config, run_lib.GENERALIST)
    specialist = _stage(config, run_lib.specialist(4))
    base = [v.numpy() for v in compression.backbone_variables(generalist)]
    fractions[name] = compression.delta_stats(specialist, base)["changed_fraction"]
    bn = [(v.numpy(), b) for v, b in zip(compression.backbone_variables(specialist), base)
          if "moving_mean" in v.name]
    pinned = all(np.array_equal(v, b) for v, b in bn)
    assert pinned == (name == "sparse")
  assert fractions["dense"] > 0.99
  assert fractions["sparse"] < 0.2 * fractions["dense"]


@pytest.mark.slow
def test_budget_bounds_the_changed_fraction(tmp_path, _train):
  config = _train(tmp_path, delta_keep=0.01, freeze_bn=True, learning_rate=3e-3)
  generalist = _stage(config, run_lib.GENERALIST)
  specialist = _stage(config, run_lib.specialist(4))
  base = [v.numpy() for v in compression.backbone_variables(generalist)]
  stats = compression.delta_stats(specialist, base)
  assert 0 < stats["changed"] <= 0.01 * stats["kernel_weights"]


@pytest.mark.slow
def test_affine_specialist_keeps_every_int8_kernel_of_the_base(tmp_path, _train):
  config = _train(tmp_path, qat=True, qat_epochs=1, specialist_form="affine",
                  learning_rate=3e-3)
  base = _stage(config, run_lib.GENERALIST_QAT)
  specialist = _stage(config, run_lib.specialist(4))
  pairs = list(zip(compression.backbone_variables(specialist),
                   compression.backbone_variables(base)))
  kernels = [(s, b) for s, b in pairs if compression.is_kernel(s)]
  assert len(kernels) >= 9
  for s, b in kernels:
    np.testing.assert_array_equal(s.numpy(), b.numpy(), err_msg=s.name)
  for name in ("gamma", "beta", "moving_mean"):  # what an affine specialist learns
    assert any(not np.array_equal(s.numpy(), b.numpy()) for s, b in pairs if name in s.name)
  # In TFLite BatchNorm folds into the scales and biases: the int8 kernels stay the base's.
  base_obj, spec_obj = (flatbuffer.parse_model(tflite.to_tflite(m, None))
                        for m in (base, specialist))
  int8_weights = changed_biases = 0
  for t, u in zip(spec_obj.subgraphs[0].tensors, base_obj.subgraphs[0].tensors):
    a, b = spec_obj.buffers[t.buffer].data, base_obj.buffers[u.buffer].data
    if a is None or b is None or list(t.shape) != list(u.shape) or t.shape[0] == 5:
      continue  # activations, and the head (5 subclasses of "dots" against 5 superclasses)
    if t.type == schema.TensorType.INT8 and len(t.shape) == 4:
      int8_weights += 1
      np.testing.assert_array_equal(a, b, err_msg=str(t.name))
    elif t.type == schema.TensorType.INT32:
      changed_biases += not np.array_equal(a, b)
  assert int8_weights >= 8 and changed_biases >= 4


@pytest.mark.slow
def test_sign_specialist_moves_int8_kernels_by_whole_steps_per_channel(tmp_path, _train):
  config = _train(tmp_path, qat=True, qat_epochs=1, specialist_form="sign",
                  learning_rate=3e-3)
  base, specialist = _stage(config, run_lib.GENERALIST_QAT), _stage(config, run_lib.specialist(4))
  base_tflite, spec_tflite = (tflite.to_tflite(m, None) for m in (base, specialist))
  base_obj, spec_obj = (flatbuffer.parse_model(m) for m in (base_tflite, spec_tflite))
  kernels = moved = clipped = weights = off = 0
  for t, u in zip(spec_obj.subgraphs[0].tensors, base_obj.subgraphs[0].tensors):
    a, b = spec_obj.buffers[t.buffer].data, base_obj.buffers[u.buffer].data
    if (a is None or b is None or t.type != schema.TensorType.INT8 or len(t.shape) != 4
        or list(t.shape) != list(u.shape)):
      continue
    kernels += 1
    # [C_out, H, W, C_in]: in each output channel every int8 weight is the base's +-k, the
    # same k, except the base's largest (held, `range_setters`), where either is clipped at
    # +-127 (the pinned range is the kernel's one
    # step before QAT ended, so a few base weights lie past it) and, rarely, one step off
    # where W / scale lies within float32 rounding of a half (the converter's scale is not
    # bit for bit the float32 step the training moved by). The bundle's residual holds both.
    a, b = (np.asarray(x, np.uint8).view(np.int8).astype(np.int16) for x in (a, b))
    diff = np.abs(a - b).reshape(t.shape[0], -1)
    levels = np.abs(b).reshape(diff.shape)
    largest = levels == levels.max(axis=1, keepdims=True)
    assert np.all(diff[largest] == 0)  # so TFLite did not requantize any channel
    unclipped = (np.maximum(np.abs(a), np.abs(b)) < 127).reshape(diff.shape) & ~largest
    k = np.array([np.bincount(row[keep]).argmax() if keep.any() else 0
                  for row, keep in zip(diff, unclipped)])
    wrong = unclipped & (diff != k[:, None])
    assert np.all(np.abs(diff[wrong] - np.broadcast_to(k[:, None], diff.shape)[wrong]) <= 1)
    off += np.count_nonzero(wrong)
    moved += np.count_nonzero(k)
    clipped += np.count_nonzero(~unclipped)
    weights += diff.size
  assert kernels >= 9 and moved > 0
  assert clipped < 0.05 * weights  # at least one weight per channel is +-127 in the base
  assert off <= 1e-4 * weights, off
  skeleton, arrays = delta_lib.make_delta(base_tflite, spec_tflite)  # auto: the signed encoding
  assert "runs" in arrays and len(arrays["runs"]) >= 9
  # Exceptions to +-k: held and clipped weights, biases, the head; few beside the sign bits.
  assert len(arrays["values"]) < 0.1 * 8 * arrays["signs"].size
  assert delta_lib.apply_delta(base_tflite, skeleton, arrays) == spec_tflite


def test_sign_delta_hand_computed():
  latent = np.array([[0.30, -0.01], [-0.10, 0.02], [0.05, 0.00]], np.float32)  # 2 channels
  step = np.array([0.1, 0.04], np.float32)
  # Channel 0: mean |latent| = 0.15 = 1.5 steps -> k = 2; channel 1: 0.01 = 0.25 steps -> 0.
  np.testing.assert_allclose(projection.sign_delta(latent, step),
                             [[0.2, 0.0], [-0.2, 0.0], [0.2, 0.0]], atol=1e-7)
  # Per tensor: mean 0.08 = 2 steps of 0.04, zero counts as +.
  np.testing.assert_allclose(projection.sign_delta(latent, np.float32(0.04))[2], [0.08, 0.08],
                             atol=1e-7)


def test_range_setters_hand_computed():
  # 2 channels (last axis), steps 0.1 and 0.01: int8 levels [[3, 50], [-5, -50], [5, 20]].
  base = np.array([[0.3, 0.5], [-0.5, -0.5], [0.46, 0.2]], np.float32)
  np.testing.assert_array_equal(projection.range_setters(base, np.array([0.1, 0.01])),
                                [[False, True], [True, True], [True, False]])  # ties: both
  # Per tensor (step 0.1): levels 3, 5, 5, 5, 5, 2; past +-127 counts as 127.
  np.testing.assert_array_equal(projection.range_setters(base, np.float32(0.1)),
                                [[False, True], [True, True], [True, False]])
  np.testing.assert_array_equal(projection.range_setters(base, np.float32(0.001))[:, 0],
                                [True, True, True])


def test_pinned_ranges_hold_each_channels_largest_weight():
  """A delta specialist may move any weight but the one that sets its channel's int8 range: TFLite
  requantizes a BatchNorm-folded channel from its largest |weight|, so moving that one inward
  would change every int8 weight of the channel."""
  model, variables, owners, (lo, hi) = _qat_model_and_ranges(first=True)
  kernel = variables[owners[hi]]
  extent = np.abs(kernel.numpy()).max(axis=(0, 1, 2))
  variables[lo].assign(-extent)
  variables[hi].assign(extent)
  base = [v.numpy() for v in variables]
  flat = base[owners[hi]][..., 0].reshape(-1)
  top, other = int(np.abs(flat).argmax()), int(np.abs(flat).argmin())
  moved = base[owners[hi]].copy()
  moved[..., 0].flat[top] *= 0.5  # inward
  moved[..., 0].flat[other] += 0.1 * extent[0]
  kernel.assign(moved)
  compression.DeltaToBase(base, 0.0, pin_batchnorm=False).project(model, threshold=0.0)
  delta = (kernel.numpy() - base[owners[hi]])[..., 0].reshape(-1)
  assert delta[top] == 0.0
  np.testing.assert_allclose(delta[other], 0.1 * extent[0], rtol=1e-5)
  assert np.count_nonzero(delta) == 1


def test_sign_channel_masks_spend_the_budget_on_the_channels_that_move_most():
  # Kernel 0: 2 channels of 3 weights, step 0.1; kernel 5: 3 channels of 2 weights, step 0.5;
  # kernel 7: per tensor (one channel of 4 weights), step 1.
  latents = {0: np.array([[0.3, 0.0], [0.3, -0.1], [-0.3, 0.1]], np.float32),  # k 3.0, 0.67
             5: np.array([[1.0, 0.0, -0.5], [-1.0, 0.0, 0.5]], np.float32),  # k 2.0, 0, 1.0
             7: np.full((2, 2), 0.5, np.float32)}  # k 0.5
  steps = {0: np.array([0.1, 0.1], np.float32), 5: np.full(3, 0.5, np.float32),
           7: np.float32(1.0)}
  # 16 weights; keep 0.5 = 8: channels by k: (0,0) 3 weights, (5,0) 2, (5,2) 2 -> 7; next
  # (0,1) has 3 and would make 10.
  masks = projection.sign_channel_masks(latents, steps, 0.5)
  np.testing.assert_array_equal(masks[0], [True, False])
  np.testing.assert_array_equal(masks[5], [True, False, True])
  assert masks[7].shape == () and not masks[7]
  masks = projection.sign_channel_masks(latents, steps, 1.0)
  assert all(np.all(m) for m in masks.values())
  # The mask zeroes k of the channels left out.
  np.testing.assert_allclose(projection.sign_delta(latents[0], steps[0], np.array([True, False])),
                             [[0.3, 0.0], [0.3, 0.0], [-0.3, 0.0]], atol=1e-7)
  np.testing.assert_allclose(projection.sign_delta(latents[7], steps[7], np.array(False)),
                             np.zeros((2, 2)))


def _qat_model_and_ranges(first: bool):
  """A small QAT model, its backbone variables, `range_owners`, and the (min, max) range
  variable indices of its first or last quantized kernel."""
  model = qat_lib.quantize(classifiers.build_classifier("small_resnet", (8, 8, 1), 3,
                                                        "specialist", "s"))
  owners = compression.range_owners(model)
  kernel = (min if first else max)(owners.values())
  return (model, compression.backbone_variables(model), owners,
          tuple(sorted(i for i, k in owners.items() if k == kernel)))


def _model_with_steps_of_a_hundredth():
  """`_qat_model_and_ranges(first=True)` with the first kernel's range pinned at +-1.27 (an int8
  step of 0.01 in every channel), and the backbone's values as the base."""
  model, variables, owners, (lo, hi) = _qat_model_and_ranges(first=True)
  extent = np.full(variables[owners[hi]].shape[-1], 1.27, np.float32)
  variables[lo].assign(-extent)
  variables[hi].assign(extent)
  return model, variables, owners, hi, extent, [v.numpy() for v in variables]


def test_specialists_below_a_frozen_trunk_keep_batchnorm_out_of_training_mode(tmp_path):
  """The 224-px divergence (bench/results/qat_divergence.md) on MobileNetV2 at 32 px: a frozen
  trunk whose BatchNorm statistics do not describe its activations (forced here: moving
  variance 1e6) gives nearly the same output for every image. The specialist's own stages, in
  training mode, divide that by sqrt(batch variance + epsilon) ~ sqrt(epsilon): the first
  step's gradient grows up to 31.6x a BatchNorm, to ~1e8 here and ~1e27 at 224 px, where Adam's
  second moment overflowed float32. `fit.prepare_specialist` keeps their BatchNorm in inference
  mode, as the trunk's."""
  config = config_lib.TrainConfig(model_dir=str(tmp_path), qat=True, freeze_stages=3)
  assert config.specialist_form == "sign"
  generalist = classifiers.build_classifier("mobilenet_v2", (32, 32, 3), 4, "generalist",
                                            "generalist")
  model = qat_lib.quantize(classifiers.make_specialist(generalist, 3, "specialist_0",
                                                       freeze_stages=3))
  for layer in model.layers:
    bn = getattr(layer, "layer", layer)
    if isinstance(bn, keras.layers.BatchNormalization):
      # Trained shifts are not all 0 (at 0 a constant input dies at the next ReLU).
      bn.beta.assign(tf.fill(bn.beta.shape, 0.1))
      if not bn.trainable:
        bn.moving_variance.assign(tf.fill(bn.moving_variance.shape, 1e6))
  x = tf.random.stateless_uniform((16, 32, 32, 3), seed=(0, 1))
  y = np.arange(16) % 3

  def largest_gradient():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
          y, model(x, training=True), from_logits=True))
    return max(float(tf.reduce_max(tf.abs(g)))
               for g in tape.gradient(loss, model.trainable_variables) if g is not None)

  assert largest_gradient() > 1e6  # the condition: training-mode BatchNorm below the trunk
  assert fit.prepare_specialist(model, config)
  assert largest_gradient() < 1.0


def test_sign_form_accumulates_updates_below_half_a_step():
  """The straight-through update: a change too small to move a whole step is kept in the
  latent delta (the model holds the base), and moves the channel once the changes add up."""
  model, variables, owners, hi, extent, base = _model_with_steps_of_a_hundredth()
  kernel = variables[owners[hi]]
  callback = compression.DeltaToBase(base, 0.0, pin_batchnorm=False, form="sign")
  nudge = np.zeros_like(base[owners[hi]])
  nudge[..., 0] = 0.004  # 0.4 steps in channel 0, every weight
  nudge[0, 0, 0, 0] = -0.004
  kernel.assign(base[owners[hi]] + nudge)  # as an optimizer step would
  callback.project(model, threshold=0.0)
  np.testing.assert_array_equal(kernel.numpy(), base[owners[hi]])  # k = round(0.4) = 0
  latents = {i: latent for i, latent, _, _ in callback.sign_latents()}
  np.testing.assert_allclose(latents[owners[hi]], nudge, atol=1e-7)  # kept, not applied
  kernel.assign(kernel.numpy() + nudge)  # the next step: latent 0.8 steps -> k = 1
  callback.project(model, threshold=0.0)
  expected = np.zeros_like(nudge)
  expected[..., 0] = 0.01
  expected[0, 0, 0, 0] = -0.01
  held = projection.range_setters(base[owners[hi]], extent / 127)  # each channel's largest
  assert 1 <= np.count_nonzero(held[..., 0]) < held[..., 0].size
  np.testing.assert_allclose(kernel.numpy() - base[owners[hi]], np.where(held, 0.0, expected),
                             atol=1e-6)
  np.testing.assert_array_equal(variables[hi].numpy(), extent)  # ranges stay pinned


def test_sign_form_with_a_budget_moves_only_the_channels_that_fit():
  model, variables, owners, hi, extent, base = _model_with_steps_of_a_hundredth()
  kernel = variables[owners[hi]]
  total = sum(base[k].size for k in set(owners.values()))
  per_channel = kernel.numpy()[..., 0].size
  callback = compression.DeltaToBase(base, 0.0, pin_batchnorm=False, form="sign",
                                     keep=1.5 * per_channel / total, epochs=1)
  callback.on_epoch_begin(0)
  nudge = np.zeros_like(base[owners[hi]])
  nudge[..., 0] = 0.03  # 3 steps
  nudge[..., 1] = -0.01  # 1 step: a whole channel, but the budget holds only one and a half
  kernel.assign(base[owners[hi]] + nudge)
  callback.project(model, threshold=0.0)
  moved = kernel.numpy() - base[owners[hi]]
  held = projection.range_setters(base[owners[hi]], extent / 127)
  np.testing.assert_allclose(moved[..., 0], np.where(held[..., 0], 0.0, 0.03), atol=1e-6)
  np.testing.assert_array_equal(moved[..., 1:], 0.0)
  # The channel left out keeps its latent change: with a budget of all, it moves.
  callback.keep_now = 1.0
  callback.project(model, threshold=0.0)
  np.testing.assert_allclose(kernel.numpy()[..., 1] - base[owners[hi]][..., 1],
                             np.where(held[..., 1], 0.0, -0.01), atol=1e-6)


def test_sign_specialist_needs_qat_and_refuses_l1(tmp_path):
  with pytest.raises(ValueError, match=r"specialist_form='sign' .* needs qat=True .* got "
                     r"qat=False$"):
    config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="sign")
  with pytest.raises(ValueError, match=r"specialist_form='sign' .* cannot be combined with "
                     r"--delta_l1; got qat=True, --delta_l1$"):
    config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="sign", qat=True,
                           delta_l1=1.0)
  assert config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="sign", qat=True,
                                delta_keep=0.7).delta_keep == 0.7  # a budget of channels
  with pytest.raises(ValueError, match="delta_ranges='grow' .* specialist_form='delta'"):
    config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="sign", qat=True,
                           delta_ranges="grow")
  assert config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="sign",
                                qat=True).specialist_form == "sign"


@pytest.mark.parametrize("options, form", [
    ({}, "delta"),
    ({"qat": True}, "sign"),
    ({"qat": True, "delta_keep": 0.02}, "delta"),
    ({"qat": True, "delta_l1": 1e-4}, "delta"),
    ({"qat": True, "delta_ranges": "grow"}, "delta"),
    ({"qat": True, "specialist_form": "delta"}, "delta"),
    ({"qat": True, "specialist_form": "lowrank"}, "lowrank"),
    ({"specialist_form": "affine"}, "affine"),
])
def test_specialist_form_defaults_to_sign_with_qat(tmp_path, options, form):
  config = config_lib.TrainConfig(model_dir=str(tmp_path), **options)
  assert config.specialist_form == form
  files.write_json(str(tmp_path / "config.json"), config.to_dict())
  assert config_lib.load_config(str(tmp_path)).specialist_form == form  # saved resolved


def test_runs_saved_before_specialist_form_load_as_delta(tmp_path):
  saved = config_lib.TrainConfig(model_dir=str(tmp_path), qat=True).to_dict()
  del saved["specialist_form"]
  files.write_json(str(tmp_path / "config.json"), saved)
  assert config_lib.load_config(str(tmp_path)).specialist_form == "delta"


def test_low_rank_factors_hand_computed():
  rows = np.outer([1, -2, 3], [2, -1, 4, 0]).astype(np.float32)  # rank 1, in int8 steps
  left, right, scales = projection.low_rank_factors(rows, rank=1)
  assert left.dtype == right.dtype == np.int8 and scales.dtype == np.float32
  assert (left.shape, right.shape) == ((3, 1), (1, 4))
  np.testing.assert_array_equal(encodings.factored_product(left, right, scales), rows)
  # Rank 2 of a rank-2 matrix; a rank above min(m, n) is capped there.
  rows = rows + np.outer([0, 1, 0], [5, 5, -5, 5])
  left, right, scales = projection.low_rank_factors(rows, rank=8)
  assert left.shape == (3, 3)
  np.testing.assert_array_equal(encodings.factored_product(left, right, scales), rows)


def test_rows_are_the_tflite_kernel_layout():
  kernel = np.arange(3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)  # [H, W, C_in, C_out]
  rows = projection.as_rows(kernel)
  assert rows.shape == (4, 18)
  np.testing.assert_array_equal(rows[1], kernel[..., 1].reshape(-1))  # [C_out, H, W, C_in]
  np.testing.assert_array_equal(projection.from_rows(rows, kernel.shape), kernel)


def test_low_rank_form_holds_the_integer_product_of_its_factors():
  model, variables, owners, (lo, hi) = _qat_model_and_ranges(first=False)
  kernel = variables[owners[hi]]
  step = np.abs(kernel.numpy()).max(axis=(0, 1, 2)) / 127
  variables[lo].assign(-127 * step)
  variables[hi].assign(127 * step)
  base = [v.numpy() for v in variables]
  callback = compression.DeltaToBase(base, 0.0, pin_batchnorm=False, form="lowrank", rank=2)
  rng = np.random.default_rng(0)
  shape = base[owners[hi]].shape
  rank2 = rng.normal(0, 2, (shape[-1], 2)) @ rng.normal(0, 2, (2, int(np.prod(shape[:-1]))))
  noise = rng.normal(0, 0.05, rank2.shape)  # in int8 steps; the rank-2 part ~4 steps
  kernel.assign(base[owners[hi]] + projection.from_rows(
      (rank2 + noise) * step[:, None], shape).astype(np.float32))  # as optimizer steps would
  callback.project(model, threshold=0.0)
  factors = callback.factors[owners[hi]]
  assert factors[0].shape[1] == 2
  steps = projection.as_rows(kernel.numpy() - base[owners[hi]]) / step[:, None]
  product = encodings.factored_product(*factors)
  held = projection.as_rows(projection.range_setters(base[owners[hi]], step))
  assert held.any()
  # Whole int8 steps: the product, except where each channel's largest weight stays.
  np.testing.assert_allclose(steps, np.where(held, 0, product), atol=1e-3)
  assert np.abs(product - rank2).max() <= 1.0  # the rank-2 part, rounded (noise dropped)
  assert np.mean(product == np.rint(rank2)) > 0.9
  with pytest.raises(ValueError, match=r"delta_rank=1000 is larger than any kernel allows: the "
                     r"largest min\(output channels, kernel size\) of this model is 128"):
    compression.DeltaToBase(base, 0.0, form="lowrank", rank=1000).project(model, 0.0)


def test_low_rank_specialist_needs_qat_and_a_rank_the_bundle_can_hold(tmp_path):
  with pytest.raises(ValueError, match=r"specialist_form='lowrank' .* needs qat=True"):
    config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="lowrank")
  for rank in (0, 1025):
    with pytest.raises(ValueError, match=rf"delta_rank must be in \[1, 1024\] .* got {rank}"):
      config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="lowrank", qat=True,
                             delta_rank=rank)


@pytest.mark.slow
def test_low_rank_specialists_export_as_their_factors(tmp_path, smoke_config):
  config = fit.train(smoke_config(tmp_path / "run", qat=True, qat_epochs=1,
                                  specialist_form="lowrank", delta_rank=3, learning_rate=3e-3),
                     log=lambda _: None)
  run = run_lib.Run(config)
  export_dir = tmp_path / "export"
  export_lib.export(run, str(export_dir), log=lambda _: None)  # checks every rebuild
  for k, stage in run.specialists().items():
    factors = run.load_factors(stage)
    assert len(factors) >= 9 and all(f[0].shape[1] <= 3 for f in factors)
    name = files.safe_name(run.hierarchy.superclasses[k].name)
    with np.load(export_dir / "tflite" / "specialists" / f"{k}_{name}.delta.npz",
                 allow_pickle=False) as arrays:
      assert len(arrays["factored"]) == len(factors) and int(arrays["version"]) == 2
      np.testing.assert_array_equal(arrays["left"][:factors[0][0].size],
                                    factors[0][0].reshape(-1))
      kernel_bytes = int(arrays["factored"][:, 1:3].prod(axis=1).sum())
      assert len(arrays["values"]) < 0.05 * kernel_bytes  # clipped bytes, biases, scales
  bundle = runtime.load_bundle(str(export_dir / "tflite"))
  for k in run.specialists():
    assert bundle.specialist(k)  # rebuilt and checked against the recorded sha256


def test_affine_specialist_refuses_kernel_delta_options(tmp_path):
  for option in (dict(delta_keep=0.02), dict(delta_l1=1.0), dict(freeze_bn=True)):
    with pytest.raises(ValueError, match=r"specialist_form='affine' keeps every kernel .* "
                       r"cannot be combined with --(delta_keep|delta_l1|freeze_bn)"):
      config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="affine", **option)
  with pytest.raises(ValueError, match=r"specialist_form must be one of \('delta', 'affine', "
                     r"'sign', 'lowrank'\)"):
    config_lib.TrainConfig(model_dir=str(tmp_path), specialist_form="bogus")


def test_grow_range_widens_only_the_channels_that_outgrew_it():
  kernel = np.zeros((3, 3, 2, 3), np.float32)
  kernel[0, 0, 0, :] = [1.5, -0.5, -3.0]  # channel 0 grew past 1, channel 2 past -2 (|W|)
  np.testing.assert_array_equal(
      projection.grow_range(np.array([1.0, 2.0, 2.0], np.float32), kernel, is_min=False),
      [1.5, 2.0, 3.0])
  np.testing.assert_array_equal(
      projection.grow_range(np.array([-1.0, -2.0, -2.0], np.float32), kernel, is_min=True),
      [-1.5, -2.0, -3.0])
  assert projection.grow_range(np.float32(2.5), kernel, is_min=False) == 3.0  # per tensor


@pytest.mark.parametrize("ranges", ["pinned", "grow"])
def test_delta_to_base_pins_or_grows_weight_quantizer_ranges(ranges):
  model = qat_lib.quantize(classifiers.build_classifier("small_resnet", (8, 8, 1), 3,
                                                        "specialist", "s"))
  variables = compression.backbone_variables(model)
  owners = compression.range_owners(model)
  assert len(owners) == 2 * sum(compression.is_kernel(v) for v in variables
                                if "input_norm" not in v.name)
  lo, hi = sorted(i for i, k in owners.items() if k == min(owners.values()))
  kernel = variables[owners[hi]]
  extent = np.abs(kernel.numpy()).max(axis=(0, 1, 2))
  variables[lo].assign(-extent)
  variables[hi].assign(extent)  # the base's ranges: its kernel's, as after QAT
  base = [v.numpy() for v in variables]
  moved = base[owners[hi]].copy()
  # Channel 0 outgrows its range (to 3x its largest weight); channel 1 moves inside it (to half
  # its largest weight, whatever the initial draw put there), so only channel 0's range grows.
  moved[0, 0, 0, 0] = 3 * extent[0]
  moved[1, 1, 0, 1] = 0.5 * extent[1]
  kernel.assign(moved)
  for i in (lo, hi):
    variables[i].assign(np.full_like(base[i], 9.0))  # as a training step's batch ranges leave them
  compression.DeltaToBase(base, 0.0, ranges=ranges).project(model, threshold=0.0)
  expected = extent.copy()
  if ranges == "grow":
    expected[0] = 3 * extent[0]
  np.testing.assert_array_equal(variables[hi].numpy(), expected)
  np.testing.assert_array_equal(variables[lo].numpy(), -expected)
  if ranges == "pinned":  # each channel's largest weight stays: its range is the base's
    moved = np.where(projection.range_setters(base[owners[hi]], extent / 127), base[owners[hi]],
                     moved)
  np.testing.assert_array_equal(kernel.numpy(), moved)


def test_delta_ranges_grow_needs_qat_delta_specialists(tmp_path):
  with pytest.raises(ValueError, match="delta_ranges='grow' .* needs qat=True"):
    config_lib.TrainConfig(model_dir=str(tmp_path), delta_ranges="grow")
  with pytest.raises(ValueError, match="delta_ranges='grow' .* specialist_form='delta'"):
    config_lib.TrainConfig(model_dir=str(tmp_path), delta_ranges="grow", qat=True,
                           specialist_form="affine")
  assert config_lib.TrainConfig(model_dir=str(tmp_path), delta_ranges="grow",
                                qat=True).delta_ranges == "grow"


def test_delta_keep_must_be_a_fraction(tmp_path):
  with pytest.raises(ValueError, match=r"delta_keep .* in \[0, 1\]; got 2"):
    config_lib.TrainConfig(model_dir=str(tmp_path), delta_keep=2)


@pytest.mark.slow
def test_qat_specialists_keep_weight_ranges_and_adapt_activation_ranges(tmp_path, _train):
  config = _train(tmp_path, qat=True, qat_epochs=1)
  base = _stage(config, run_lib.GENERALIST_QAT)
  specialist = _stage(config, run_lib.specialist(4))
  assert specialist.output_shape == (None, 5)
  pairs = list(zip(compression.backbone_variables(specialist),
                   compression.backbone_variables(base)))
  short = lambda v: v.name.split("/")[-1]  # noqa: E731
  weights = [(s, b) for s, b in pairs if short(s).startswith("kernel_m")]
  activations = [(s, b) for s, b in pairs if short(s).startswith("output_m")]
  assert len(weights) > 10 and len(activations) > 10
  for s, b in weights:
    np.testing.assert_array_equal(s.numpy(), b.numpy(), err_msg=s.name)
  assert any(not np.array_equal(s.numpy(), b.numpy()) for s, b in activations)
  with open(tmp_path / "specialists" / "4_dots" / "metrics.json", encoding="utf-8") as f:
    assert '"delta"' in f.read()


@pytest.mark.slow
def test_qat_flag_is_part_of_the_model_dir_identity(tmp_path, _train):
  _train(tmp_path, stage="flat")
  with pytest.raises(ValueError, match="qat: model_dir has False, asked for True"):
    _train(tmp_path, stage="flat", qat=True)


@pytest.mark.slow
def test_generalist_can_keep_the_flat_backbone(tmp_path, _train):
  config = _train(tmp_path, stage="flat")
  config = _train(tmp_path, stage="generalist", generalist_init="flat",
                  generalist_freeze_stages=4)
  flat = _stage(config, run_lib.FLAT)
  generalist = _stage(config, run_lib.GENERALIST)
  for a, b in zip(compression.backbone_variables(flat),
                  compression.backbone_variables(generalist)):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  assert generalist.output_shape == (None, 5)


def test_generalist_freeze_stages_needs_the_flat_init(tmp_path):
  with pytest.raises(ValueError, match="needs generalist_init='flat'"):
    config_lib.TrainConfig(model_dir=str(tmp_path), generalist_init="scratch",
                           generalist_freeze_stages=2)


def test_generalist_from_an_untrained_flat_is_refused_before_training(tmp_path, smoke_config):
  config = smoke_config(tmp_path / "run", stage="generalist")  # generalist_init="flat" default
  with pytest.raises(FileNotFoundError, match="--generalist_init=flat \\(the default\\)"):
    fit.train(config, log=lambda _: None)
  assert not (tmp_path / "run" / "generalist").exists()
