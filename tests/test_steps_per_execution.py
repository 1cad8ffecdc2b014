"""--steps_per_execution: several train steps per call of the compiled function, with the
specialists' projections (and the router head's pinned trunk) still after every step, and the
NaN guard still stopping a diverged stage."""

import numpy as np
import pytest
import tensorflow as tf

from super_sub._internal.compat import keras
from super_sub.formats import encodings
from super_sub.models import classifiers
from super_sub.models import trunk as trunk_lib
from super_sub.training import config as config_lib
from super_sub.training import deltas
from super_sub.training import projection
from super_sub.training import determinism
from super_sub.training import fit
from super_sub.training import guards
from super_sub.training import qat as qat_lib
from super_sub.training import run as run_lib


def _sign_specialist(steps_per_execution: int, attach: bool = True, **options):
  """A QAT small_resnet sign specialist (8 px; `options`: another DeltaToBase form) with its
  projection, compiled as training does."""
  keras.utils.set_random_seed(1)
  model = qat_lib.quantize(classifiers.build_classifier("small_resnet", (8, 8, 1), 3,
                                                        "specialist", "s"))
  variables = deltas.backbone_variables(model)
  for r, k in deltas.range_owners(model).items():  # ranges as QAT leaves them
    extent = np.abs(variables[k].numpy()).max(axis=(0, 1, 2))
    variables[r].assign(-extent if deltas.short_name(variables[r]).endswith("_min") else extent)
  callback = deltas.DeltaToBase([v.numpy() for v in variables], 0.0,
                                  **(options or dict(form="sign", keep=0.5, epochs=2)))
  if attach:
    callback.attach(model)
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=steps_per_execution)
  return model, callback


def _data():
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (7 * 8, 8, 8, 1)).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices((images, rng.integers(0, 3, len(images)))).batch(8)


@pytest.mark.slow
def test_projection_runs_after_every_step_whatever_the_steps_per_execution():
  weights = {}
  for every in (1, 3):
    with determinism.deterministic_ops(seed=1):
      model, callback = _sign_specialist(every)
      model.fit(_data(), epochs=2, verbose=0, callbacks=[callback])
    # 7 steps an epoch, 2 epochs; an execution of 3 steps is projected 3 times.
    assert callback.projections == 14
    weights[every] = model.get_weights()
  for a, b in zip(weights[1], weights[3]):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_an_attached_low_rank_projection_saves_the_factors_its_model_holds(tmp_path):
  model, callback = _sign_specialist(2, form="lowrank", rank=2)
  base = list(callback.base)
  model.fit(_data(), epochs=1, verbose=0, callbacks=[callback])
  callback.save_factors(str(tmp_path / deltas.FACTORS_FILE))
  factors = deltas.load_factors(str(tmp_path / deltas.FACTORS_FILE))
  variables = deltas.backbone_variables(model)
  owners = deltas.range_owners(model)
  kernels = sorted(set(owners.values()))
  assert len(factors) == len(kernels) >= 9
  moved = 0
  for i, (left, right, scales) in zip(kernels, factors):
    step = np.abs(base[max(r for r, k in owners.items() if k == i)]) / 127
    levels = projection.as_rows(variables[i].numpy() - base[i]) / step[:, None]
    held = projection.as_rows(projection.range_setters(base[i], step))
    product = encodings.factored_product(left, right, scales)
    np.testing.assert_allclose(levels, np.where(held, 0, product), atol=1e-3)
    moved += np.count_nonzero(product)
  assert moved > 0


@pytest.mark.slow
def test_an_unattached_projection_refuses_several_steps_per_execution():
  model, callback = _sign_specialist(3, attach=False)
  with pytest.raises(ValueError, match=r"steps_per_execution=3: .* DeltaToBase.attach"):
    model.fit(_data(), epochs=1, verbose=0, callbacks=[callback])


def test_steps_per_execution_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="steps_per_execution must be a positive"):
    config_lib.TrainConfig(model_dir=str(tmp_path), steps_per_execution=0)


@pytest.mark.slow
def test_every_stage_trains_with_several_steps_per_execution(tmp_path, smoke_config):
  """flat, generalist, generalist_qat, router head and a sign specialist, 4 steps a call."""
  config = fit.train(smoke_config(tmp_path, qat=True, qat_epochs=1, specialists=(4,),
                                  router_head=8, freeze_stages=1, steps_per_execution=4),
                     log=lambda _: None)
  run = run_lib.Run(config)
  for stage in (run_lib.FLAT, run_lib.GENERALIST, run_lib.GENERALIST_QAT, run_lib.ROUTER_HEAD,
                run_lib.specialist(4)):
    assert run.is_done(stage), stage
  # The sign specialist: every changed int8 weight of a channel moved by the same whole steps.
  base = run.load_model(run_lib.GENERALIST_QAT)
  specialist = run.load_model(run_lib.specialist(4))
  base_vars = deltas.backbone_variables(base)
  spec_vars = deltas.backbone_variables(specialist)
  owners = deltas.range_owners(base)
  moved = 0
  for kernel in set(owners.values()):
    step = np.maximum.reduce([np.abs(base_vars[r].numpy()) for r, k in owners.items()
                              if k == kernel]) / 127
    levels = (spec_vars[kernel].numpy() - base_vars[kernel].numpy()) / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    k = np.abs(np.round(levels)).max(axis=(0, 1, 2))
    changed = np.round(levels) != 0
    np.testing.assert_array_equal(np.abs(np.round(levels))[changed],
                                  np.broadcast_to(k, levels.shape)[changed])
    moved += int(changed.sum())
  assert moved > 0
  # The router head's trunk stayed the generalist's, bit for bit.
  head = run.load_model(run_lib.ROUTER_HEAD)
  generalist = run.load_model(run_lib.GENERALIST_QAT)
  cut = trunk_lib.cut_index(head, 1) + 1
  trunk = [w for layer in head.layers[:cut] for w in layer.get_weights()]
  assert len(trunk) > 10
  for a, b in zip(trunk, [w for layer in generalist.layers[:cut] for w in layer.get_weights()]):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_nan_guard_stops_a_stage_with_several_steps_per_execution(tmp_path, smoke_config):
  with pytest.raises(guards.NonFiniteError, match=r"stage 'flat' diverged: the training loss "
                     r"is (nan|inf) at epoch 1/1, step \d+/11"):
    fit.train(smoke_config(tmp_path, stage="flat", learning_rate=1e30, steps_per_execution=4),
              log=lambda _: None)
  assert not (tmp_path / "flat" / "metrics.json").exists()
