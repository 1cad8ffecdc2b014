"""The compiled projection of `DeltaToBase.project` against its numpy reference, on every form,
and inside Keras's train step (every step, whatever steps_per_execution)."""

import numpy as np
import pytest

from super_sub._internal.compat import keras
from super_sub.formats import encodings
from super_sub.models import classifiers
from super_sub.training import deltas
from super_sub.training import projection
from super_sub.training import qat as qat_lib

# Tolerance of the parity: the graph reduces in another order than numpy (a channel's mean
# |latent|, an SVD in Eigen instead of LAPACK), so its float32 values may differ by a few ulps
# (ATOL for weights of size ~0.1-1), and a whole-step rounding (a sign's k, a low-rank factor)
# may land on the other side of a half on a tie. Such a flip moves a weight by one int8 step of
# its channel, and at most FLIPS of all kernel weights may flip.
ATOL = 1e-6
FLIPS = 1e-3

# (name, QAT, DeltaToBase options, L1 threshold of each step, budget, frozen first conv)
FORMS = [
    ("delta_dense", False, dict(pin_batchnorm=False), 0.0, None, False),
    ("delta_l1_pinned_bn", False, dict(), 2e-3, None, False),
    ("delta_budget_l1", False, dict(keep=0.2, epochs=3), 1e-3, 0.2, False),
    ("delta_frozen_stage", False, dict(), 1e-3, None, True),
    ("affine", False, dict(pin_batchnorm=False), 0.0, None, "kernels"),
    ("qat_delta_pinned", True, dict(), 0.0, None, False),
    ("qat_delta_pinned_budget_l1", True, dict(keep=0.1, epochs=3), 1e-3, 0.1, False),
    ("qat_delta_grow", True, dict(ranges="grow", pin_batchnorm=False), 1e-3, None, False),
    ("qat_sign", True, dict(form="sign"), 0.0, None, False),
    ("qat_sign_budget", True, dict(form="sign", keep=0.3, epochs=3), 0.0, 0.3, False),
    ("qat_sign_frozen_stage", True, dict(form="sign"), 0.0, None, True),
    ("qat_lowrank", True, dict(form="lowrank", rank=3), 0.0, None, False),
]


def _model(qat: bool, size: int, frozen) -> keras.Model:
  model = classifiers.build_classifier("small_resnet", (size, size, 1), 3, "specialist", "s")
  if frozen == "kernels":
    deltas.freeze_kernels(model)
  elif frozen:  # the first convolution, as --freeze_stages freezes a stage
    next(layer for layer in model.layers if "conv" in layer.name).trainable = False
  return qat_lib.quantize(model) if qat else model


def _twins(qat: bool, size: int, frozen):
  """Two models with the same weights, QAT ranges set as QAT leaves them (each kernel's own
  extent per channel), and the base's values."""
  a, b = _model(qat, size, frozen), _model(qat, size, frozen)
  variables = deltas.backbone_variables(a)
  for r, k in deltas.range_owners(a).items():
    channel = projection.per_channel(
        variables[k].numpy(), variables[r].numpy())
    extent = np.abs(variables[k].numpy()).max(axis=channel[1])
    variables[r].assign(-extent if deltas.short_name(variables[r]).endswith("_min") else extent)
  b.set_weights(a.get_weights())
  return a, b, [v.numpy() for v in variables]


def _step(rng, models, base, owners):
  """The same pseudo optimizer step on both models: every trainable backbone variable moves
  (kernels by ~0.6 int8 steps of their channel, so signs accumulate and ranges are outgrown
  now and then), and non-trainable ones drift as batch statistics and QAT ranges would."""
  steps = {k: np.abs(base[r]) / 127 for r, k in owners.items()}
  for i, values in enumerate(base):
    if not np.issubdtype(values.dtype, np.floating):
      continue
    scale = 0.6 * steps[i] if i in steps else 0.05 * (np.abs(values).mean() + 1e-3)
    bias = 0.3 * scale * rng.choice([-1.0, 1.0], size=np.shape(values)[-1:] or None)
    move = (rng.normal(0.0, 1.0, values.shape) * scale + bias).astype(values.dtype)
    for model in models:
      var = deltas.backbone_variables(model)[i]
      var.assign(var.numpy() + move)


def _flips(got, want, step):
  """How many weights differ by more than ATOL, and whether each such is one step off."""
  off = np.abs(got - want) > ATOL + 1e-5 * np.abs(want)
  one_step = np.abs(np.abs(got - want) - step) <= 1e-5 + 1e-4 * step
  return int(off.sum()), bool(np.all(one_step[off]))


@pytest.mark.slow  # 12 compiled projections of QAT models: ~30 s
@pytest.mark.parametrize("name, qat, options, threshold, keep, frozen", FORMS,
                         ids=[f[0] for f in FORMS])
def test_compiled_projection_matches_the_numpy_reference(name, qat, options, threshold, keep,
                                                         frozen):
  size = 16 if "lowrank" in name else 8
  ref_model, tf_model, base = _twins(qat, size, frozen)
  l1 = options.pop("l1", 0.0)
  reference = deltas.DeltaToBase(base, l1, **options)
  compiled = deltas.DeltaToBase(base, l1, **options)
  owners = deltas.range_owners(ref_model)
  steps = {k: np.abs(base[r]) / 127 for r, k in owners.items()}
  rng = np.random.default_rng(0)
  kernels = [i for i, v in enumerate(deltas.backbone_variables(ref_model)) if deltas.is_kernel(v)]
  total = sum(base[i].size for i in kernels)
  flipped = 0
  for epoch in range(3):
    if keep is not None:  # what on_epoch_begin does, with the budget recomputed from the weights
      for callback, model, project in ((reference, ref_model, reference.project_reference),
                                       (compiled, tf_model, compiled.project)):
        callback.keep_now = deltas.keep_schedule(epoch, 3, keep)
        if callback.form != "sign":
          callback.masks = deltas.budget_masks(deltas.backbone_variables(model), base,
                                               callback.keep_now)
          project(model, threshold=0.0)
    for _ in range(2):
      _step(rng, (ref_model, tf_model), base, owners)
      reference.project_reference(ref_model, threshold)
      compiled.project(tf_model, threshold)
      for i, (want, got) in enumerate(zip(deltas.backbone_variables(ref_model),
                                          deltas.backbone_variables(tf_model))):
        want, got = want.numpy(), got.numpy()
        if i in steps and compiled.form in ("sign", "lowrank"):
          step = projection.per_channel(want, steps[i])[0]
          n, one_step = _flips(got, want, np.broadcast_to(step, want.shape))
          assert one_step, f"{name}: variable {i} differs by other than one int8 step"
          flipped += n
        else:
          np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL,
                                     err_msg=f"{name}: variable {i}")
  print(f"{name}: {len(base)} backbone variables, {len(kernels)} kernels ({total} weights), "
        f"6 projections, {flipped} weight-steps one int8 step apart")
  assert flipped <= FLIPS * total * 6, f"{name}: {flipped} of {total} weights x 6 steps flipped"
  # The projection did something: kernels moved, and where the form keeps them, only so far.
  after = [v.numpy() for v in deltas.backbone_variables(tf_model)]
  changed = sum(np.count_nonzero(after[i] != base[i]) for i in kernels)
  if frozen == "kernels":
    assert changed == 0
  else:
    assert changed > 0
  if keep is not None and compiled.form != "sign":
    assert changed <= keep * total
  if compiled.form == "lowrank":
    for i, (left, right, scales) in compiled.factors.items():
      ref_left, ref_right, ref_scales = reference.factors[i]
      np.testing.assert_array_equal(  # the products agree (the factors' signs may not)
          np.abs(encodings.factored_product(left, right, scales)
                 - encodings.factored_product(ref_left, ref_right, ref_scales)) > 1,
          False)
