"""Why QAT sign specialists diverge at 224 px: per-step values of a specialist's training, up to
the first NaN, and the first non-finite tensor.

  .venv/bin/python bench/qat_divergence.py --base_run=/tmp/run --work_dir=/tmp/qd \
      --seeds=0,1,2 --out=bench/results/qat_divergence

`--base_run` is a finished `--stage=generalist` run (flat, generalist and generalist_qat trained,
with --qat and --deterministic). For each seed the script copies those stages to a fresh folder
and trains only the specialists there (`--stage=specialists --seed=S`), recording after every
step: the learning rate that step used, the batch loss, the sign delta's largest move in int8
steps (k) and its latent's largest |value| in steps, the weights past their pinned quantizer
range, BatchNorm statistics and the activation quantizer ranges. When a loss turns non-finite it
replays the step's forward pass from the weights before it and names the first layer whose
output is not finite. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from super_sub import keras
from super_sub.training import config as config_lib
from super_sub.training import deltas
from super_sub.training import fit
from super_sub.training import guards
from super_sub.training import projection

_BASE_RUN = flags.DEFINE_string("base_run", None, "A run whose generalist_qat is trained.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/qat_divergence", "Where the copies go.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds of the specialists-only runs.")
_SPECIALISTS = flags.DEFINE_list("specialists", [], "Superclasses (default: all).")
_OUT = flags.DEFINE_string("out", "bench/results/qat_divergence", "Results path prefix.")
_EXTRA = flags.DEFINE_list("override", [], "TrainConfig overrides, key=value (e.g. "
                           "specialist_learning_rate=1e-3).")

_INSTANCES: list[deltas.DeltaToBase] = []
_original_init = deltas.DeltaToBase.__init__


def _registering_init(self, *args, **kwargs):
  _original_init(self, *args, **kwargs)
  _INSTANCES.append(self)


deltas.DeltaToBase.__init__ = _registering_init


class Recorder(keras.callbacks.Callback):
  """Per-step values of one stage (see the module docstring)."""

  def __init__(self, rows: list, probes: list):
    super().__init__()
    self.rows, self.probes = rows, probes
    self.stage = None

  def on_train_begin(self, logs=None):
    model = self.model
    self.delta = _INSTANCES[-1]
    self.stage = model.name
    self.prev_mean = 0.0
    self.x = tf.Variable(tf.zeros([0, 0, 0, 0]), shape=tf.TensorShape(None), trainable=False)
    self.y = tf.Variable(tf.zeros([0], tf.int64), shape=tf.TensorShape(None), trainable=False)
    step = model.train_step

    def stashing_step(data):  # keeps the batch, to replay a bad step's forward pass
      x, y = data[0], data[1]
      self.x.assign(x)
      self.y.assign(tf.cast(y, tf.int64))
      return step(data)

    model.train_step = stashing_step
    self.snapshot = None
    # Each step's gradients as the optimizer receives them: all finite? largest finite |g|.
    optimizer = model.optimizer
    apply = optimizer.apply_gradients
    self.grad_names = []
    self.grad_finite = self.grad_max = None

    def recording_apply(grads_and_vars, *args, **kwargs):
      pairs = [(g, v) for g, v in grads_and_vars]
      if self.grad_finite is None:
        with tf.init_scope():
          self.grad_names = [v.name for _, v in pairs]
          self.grad_finite = tf.Variable(tf.ones([len(pairs)], tf.bool), trainable=False)
          self.grad_max = tf.Variable(tf.zeros([len(pairs)]), trainable=False)
      finite = [tf.reduce_all(tf.math.is_finite(g)) for g, _ in pairs]
      self.grad_finite.assign(tf.stack(finite))
      self.grad_max.assign(tf.stack([tf.reduce_max(tf.where(tf.math.is_finite(g), tf.abs(g), 0.0))
                                     for g, _ in pairs]))
      return apply(pairs, *args, **kwargs)

    optimizer.apply_gradients = recording_apply

  def on_train_batch_begin(self, batch, logs=None):
    self.snapshot = [v.numpy() for v in self.model.weights]

  def on_train_batch_end(self, batch, logs=None):
    model, t = self.model, batch + 1
    mean = float(logs["loss"])
    loss = mean * t - self.prev_mean * (t - 1)
    self.prev_mean = mean
    schedule = model.optimizer._learning_rate  # pylint: disable=protected-access
    lr = float(schedule(batch)) if callable(schedule) else float(schedule)
    row = {"stage": self.stage, "step": t, "lr": lr, "batch_loss": loss, "mean_loss": mean}
    row.update(self._weights())
    if self.grad_finite is not None:
      finite, gmax = self.grad_finite.numpy(), self.grad_max.numpy()
      row["nonfinite_grads"] = [n for n, f in zip(self.grad_names, finite) if not f]
      top = np.argsort(-gmax)[:3]
      row["largest_grads"] = {self.grad_names[j]: float(gmax[j]) for j in top}
    slots = [v for v in self.model.optimizer.variables()
             if v.dtype.is_floating and not np.isfinite(v.numpy()).all()]
    row["nonfinite_optimizer_slots"] = [v.name for v in slots][:20]
    row["nonfinite_optimizer_slot_count"] = len(slots)
    self.rows.append(row)
    print(json.dumps(row))
    if not math.isfinite(mean):
      self.probes.append(self._probe(t))
      print(json.dumps(self.probes[-1])[:3000])

  def _weights(self) -> dict:
    worst_k, worst_latent, past, names = 0.0, 0.0, 0, {}
    variables = deltas.backbone_variables(self.model)
    for i, lat, step, others in self._latents():
      moved = np.abs(lat).mean(axis=others, keepdims=True) / np.maximum(step, 1e-12)
      k = float(np.round(moved).max())
      if k > worst_k:
        worst_k, names["k"] = k, variables[i].name
      m = float((np.abs(lat) / np.maximum(step, 1e-12)).max())
      if m > worst_latent:
        worst_latent, names["latent"] = m, variables[i].name
      w = variables[i].numpy()
      past += int((np.abs(w) > step * 127 * (1 + 1e-6)).sum())
    bn_var, bn_mean, act_max = np.inf, 0.0, 0.0
    for layer in self.model.layers:
      for v in layer.weights:
        short = deltas.short_name(v)
        if short == "moving_variance":
          value = float(v.numpy().min())
          if value < bn_var:
            bn_var, names["bn_var"] = value, v.name
        elif short == "moving_mean":
          bn_mean = max(bn_mean, float(np.abs(v.numpy()).max()))
        elif short.startswith(("output_max", "post_activation_max")):
          value = float(np.abs(v.numpy()).max())
          if value > act_max:
            act_max, names["act_max"] = value, v.name
    bad = [v.name for v in self.model.weights
           if v.dtype.is_floating and not np.isfinite(v.numpy()).all()]
    return {"max_k_steps": worst_k, "max_latent_steps": worst_latent,
            "weights_past_range": past, "bn_moving_var_min": bn_var,
            "bn_moving_mean_absmax": bn_mean, "act_range_max": act_max,
            "nonfinite_weights": len(bad), "first_nonfinite_weight": bad[0] if bad else None,
            "nonfinite_weight_names": bad[:40],
            "where": names}

  def _latents(self):
    """(kernel index, latent delta, int8 step, other axes) of each sign kernel."""
    delta = self.delta
    if hasattr(delta, "sign_latents"):  # the compiled projection
      yield from delta.sign_latents()
    else:  # replaying an older version (b5c066d): its numpy projection's state
      latents = getattr(delta, "_latent", {}) or {}
      owners = getattr(delta, "_owners", None)  # (model, range owners, int8 steps)
      steps = owners[2] if owners else {}
      for i, (latent, _) in latents.items():
        yield (i, latent, *projection.per_channel(latent, steps[i]))

  def _probe(self, t: int) -> dict:
    """Replays step t's forward pass (training mode) from the weights before it."""
    model = self.model
    after = [v.numpy() for v in model.weights]
    model.set_weights(self.snapshot)
    layers = model.layers[1:]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outs = probe(self.x, training=True)
    trace, first = [], None
    for layer, out in zip(layers, outs):
      value = out.numpy()
      finite = bool(np.isfinite(value).all())
      trace.append({"layer": layer.name, "absmax": float(np.nanmax(np.abs(value)))
                    if np.isfinite(value).any() else float("nan"), "finite": finite})
      if not finite and first is None:
        first = layer.name
    before_bad = [v.name for v, value in zip(model.weights, self.snapshot)
                  if v.dtype.is_floating and not np.isfinite(value).all()]
    after_bad = [v.name for v, value in zip(model.weights, after)
                 if v.dtype.is_floating and not np.isfinite(value).all()]
    model.set_weights(after)
    return {"stage": self.stage, "step": t, "first_nonfinite_layer": first,
            "nonfinite_weights_before_step": before_bad[:10],
            "nonfinite_weights_after_step": after_bad[:10],
            "trace_up_to_first": trace[:[l["layer"] for l in trace].index(first) + 1]
            if first else trace[-5:]}


def _config(model_dir: str, seed: int) -> config_lib.TrainConfig:
  saved = json.load(open(os.path.join(_BASE_RUN.value, "config.json"), encoding="utf-8"))
  fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  config = config_lib.TrainConfig(**{k: v for k, v in saved.items() if k in fields and
                                     not isinstance(v, (list, dict))})
  overrides = {}
  for item in _EXTRA.value:
    key, value = item.split("=", 1)
    overrides[key] = ({"True": True, "False": False}[value] if value in ("True", "False")
                      else type(getattr(config, key) or 0.0)(value))
  if hasattr(config, "deterministic"):  # older versions have no --deterministic
    overrides["deterministic"] = True
  return dataclasses.replace(
      config, model_dir=model_dir, seed=seed, stage="specialists",
      specialists=tuple(int(s) for s in _SPECIALISTS.value) or None, **overrides)


def main(argv):
  del argv
  results = []
  for seed in (int(s) for s in _SEEDS.value):
    folder = os.path.join(_WORK_DIR.value, f"seed{seed}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for entry in ("flat", "generalist", "generalist_qat", "config.json"):
      source = os.path.join(_BASE_RUN.value, entry)
      (shutil.copytree if os.path.isdir(source) else shutil.copy)(
          source, os.path.join(folder, entry))
    rows, probes = [], []
    start, outcome = time.perf_counter(), "finished"
    try:
      fit.train(_config(folder, seed), callbacks=[Recorder(rows, probes)])
    except guards.NonFiniteError as e:
      outcome = f"NonFiniteError: {e.stage} step {e.step}"
    results.append({"seed": seed, "outcome": outcome,
                    "wall_s": round(time.perf_counter() - start, 1),
                    "rows": rows, "probes": probes})
    print(f"seed {seed}: {outcome}")
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump({"overrides": _EXTRA.value, "results": results}, f, indent=1)
  _write_markdown(_OUT.value, _EXTRA.value, results)


def _write_markdown(out: str, overrides: list, results: list) -> None:
  """<out>.md: per seed, one row a step, and the replayed bad step's trace."""
  lines = [f"# QAT sign specialists, step by step (overrides: {overrides or 'none'})", "",
           "Written by bench/qat_divergence.py. k: a channel's sign move in int8 steps; "
           "latent: the largest |latent delta| in int8 steps; past range: kernel weights past "
           "their pinned quantizer range; |grad|: the largest finite gradient of the step; "
           "bad grads / Adam slots / weights: how many are not finite after the step.", ""]
  for r in results:
    lines += [f"## seed {r['seed']}: {r['outcome']} ({r['wall_s']} s)", "",
              "| stage | step | lr | batch loss | max k | max latent | past range "
              "| BN var min | act range max | max abs grad | bad grads | bad Adam slots "
              "| bad weights |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
      grads = row.get("largest_grads") or {"": float("nan")}
      slots = len(row.get("nonfinite_optimizer_slots", []))  # older results: the first 20 only
      slots = f">= {slots}" if slots == 20 else slots
      lines.append(f"| {row['stage']} | {row['step']} | {row['lr']:.3g} | "
                   f"{row['batch_loss']:.4g} | {row['max_k_steps']:.0f} | "
                   f"{row['max_latent_steps']:.3g} | {row['weights_past_range']} | "
                   f"{row['bn_moving_var_min']:.3g} | {row['act_range_max']:.3g} | "
                   f"{max(grads.values()):.3g} | {len(row.get('nonfinite_grads', []))} | "
                   f"{row.get('nonfinite_optimizer_slot_count', slots)} | "
                   f"{row['nonfinite_weights']} |")
    for p in r["probes"]:
      lines += ["", f"First non-finite output at {p['stage']} step {p['step']}: "
                f"`{p['first_nonfinite_layer']}`; non-finite weights before the step: "
                f"{p['nonfinite_weights_before_step'] or 'none'}", ""]
      lines += [f"- {t['layer']}: max |out| {t['absmax']:.4g}" for t in p["trace_up_to_first"][-8:]]
    lines.append("")
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


def layers(argv):
  """`qat_divergence.py layers <model_dir> <out>`: the first step of specialist 0 of a run whose
  generalist is trained, layer by layer (one batch, center crops): each output's largest |value|,
  a BatchNorm output's smallest per-channel batch variance, and the largest |dL/d output|, with
  the specialist's BatchNorm as before the fix (training mode below the frozen trunk) and as
  `fit.prepare_specialist` leaves it. Writes <out>.md."""
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  from super_sub.models import classifiers  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  run = run_lib.Run.open(argv[2])
  stage = run_lib.specialist(0)
  spec = pipeline.InputSpec(role="specialist", batch_size=run.config.batch_size,
                            image_size=run.config.image_size, superclass=0, augment="none",
                            framing=run.config.framing, seed=0)
  x, y = next(iter(pipeline.make_dataset(run.builder, "train", spec, training=False)))
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  traces = {}
  for name, prepare in (("before", False), ("fixed", True)):
    model = run.build_model(stage)
    classifiers.copy_backbone_weights(run.load_model(run.generalist), model)
    if prepare:
      fit.prepare_specialist(model, run.config)
    probe = keras.Model(model.inputs, [layer.output for layer in model.layers[1:]])
    with tf.GradientTape() as tape:
      outs = probe(x, training=True)
      loss = loss_fn(y, outs[-1])
    grads = tape.gradient(loss, outs)
    rows = []
    for layer, out, grad in zip(model.layers[1:], outs, grads):
      out = out.numpy()
      inner = getattr(layer, "layer", layer)
      is_bn = isinstance(inner, keras.layers.BatchNormalization)
      rows.append((layer.name, ("train" if inner.trainable else "infer") if is_bn else "",
                   float(np.abs(out).max()),
                   float(out.var(axis=tuple(range(out.ndim - 1))).min()) if is_bn else None,
                   0.0 if grad is None else float(np.abs(grad.numpy()).max())))
    traces[name] = (float(loss), rows)
  lines = [f"# Specialist 0's first step, layer by layer ({argv[2]})", "",
           "Written by `bench/qat_divergence.py layers`. BN: the BatchNorm's mode; var: a "
           "BatchNorm output's smallest per-channel batch variance; |dL/dout|: the largest "
           "gradient reaching the layer's output (the backward pass runs bottom to top).", "",
           f"Loss: {traces['before'][0]:.4g} before the fix, {traces['fixed'][0]:.4g} with it.",
           "", "| layer | BN before | max abs out | var | max abs dL/dout | BN fixed | max abs out "
           "| var | max abs dL/dout |", "|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v: "" if v is None else f"{v:.3g}"  # noqa: E731
  for a, b in zip(traces["before"][1], traces["fixed"][1]):
    lines.append(f"| {a[0]} | {a[1]} | {fmt(a[2])} | {fmt(a[3])} | {fmt(a[4])} | {b[1]} | "
                 f"{fmt(b[2])} | {fmt(b[3])} | {fmt(b[4])} |")
  with open(argv[3] + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def render(argv):
  """`qat_divergence.py render <out>`: <out>.md again from <out>.json."""
  with open(argv[2] + ".json", encoding="utf-8") as f:
    saved = json.load(f)
  _write_markdown(argv[2], saved["overrides"], saved["results"])


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "render":
    render(sys.argv)
  elif len(sys.argv) == 4 and sys.argv[1] == "layers":
    layers(sys.argv)
  else:
    flags.mark_flag_as_required("base_run")
    app.run(main)
