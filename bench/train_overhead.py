"""What super-sub's training costs over a bare Keras `fit`: images per second of a stage trained
by `super_sub.training.fit.train` (its NaN guard, BackupAndRestore, CSV and TensorBoard logs, and
a specialist's projection inside every step) against `model.fit` of the same model, optimizer,
batch and tf.data pipeline with none of those, and a profile of the step that says where any
difference goes.

    python bench/train_overhead.py --data_dir=/tmp/tfds --out=bench/results/train_overhead_small

Settings: flat, generalist, a dense specialist, a sign specialist (QAT) and a QAT delta
specialist (pinned ranges), small_resnet at 28 px on superclassed_synthetic/32px (resized;
superclass 4's specialist; --superclass picks another).

Timing: the two sides alternate, `--repeats` pairs per setting, each pair a fresh training of
the stage by super-sub (its prerequisite stages copied from one prepared run) and then a bare
`fit`. A side's throughput is the median over the epochs after the first (tracing, cache
filling) of the training part of an epoch (validation and the epoch-end hooks excluded), timed
by a callback with no batch hooks (one would make Keras wait for every step's logs). A
setting's ratio is the median of its pairs' ratios: the CPU may be shared, and pairs taken
minutes apart see different load.

Profile: the last epoch of each side in the last pair runs under cProfile, which splits the
host time of a step into the compiled train step (the `tf.function` call Keras makes from
`fit`, projection included when it runs in-graph), the batch hooks of the callbacks (per
callback), and the rest of Keras' loop. A ratio below 1 is the sum of those differences; the
profiled epoch is slower than the timed ones by cProfile's own cost, so the profile explains
shares, not absolute rates. On a GPU a step's call returns once the step is queued, and the
NaN guard's read of the step before's loss waits for the device: there the guard's time is the
device's compute showing up on the host, not overhead.

MobileNetV2 at 224 px (superclassed_imagenet on an ImageNet-shaped tree, with
--mixed_precision --jit_compile) is a GPU's question: bench/gpu.sh runs it.
"""

import cProfile
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(__file__))
import _common  # pylint: disable=wrong-import-position

flags.DEFINE_string("data_dir", None, "TFDS folder (superclassed_synthetic/32px is built there).")
flags.DEFINE_string("out", "bench/results/train_overhead_small", "Results path, no extension.")
flags.DEFINE_integer("epochs", 4, "Epochs of every measured stage (>= 3: the first traces, the "
                     "last is profiled).")
flags.DEFINE_integer("repeats", 3, "Alternating (super-sub, bare Keras) pairs per setting.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("image_size", 28, "Image side.")
flags.DEFINE_string("backbone", "small_resnet", "Backbone (mobilenet_v2 at 224 px: a GPU's job).")
flags.DEFINE_string("dataset", "superclassed_synthetic/32px", "TFDS dataset; its superclass 4 "
                    "must have a specialist.")
flags.DEFINE_string("manual_dir", None, "Manually downloaded source files (ImageNet).")
flags.DEFINE_string("note", "", "What else shared the machine (written into the result).")
flags.DEFINE_integer("superclass", 4, "The superclass whose specialists are measured.")
flags.DEFINE_string("settings", "flat,generalist,dense,sign,qat_delta",
                    "Which settings to measure (of flat, generalist, dense, sign, qat_delta).")
flags.DEFINE_boolean("mixed_precision", False, "Train every stage in mixed precision.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile every stage's step.")
FLAGS = flags.FLAGS

_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


def _clock():
  """A Keras callback that times the training part of every epoch, per model name, without
  batch hooks, and runs the last epoch under cProfile."""
  from super_sub import keras  # pylint: disable=import-outside-toplevel

  class EpochClock(keras.callbacks.Callback):
    """`seconds[name]`: the training part of each epoch (epoch start to validation start, or
    to the epoch's end); `profiles[name]`: the last epoch's `step_profile`."""

    def __init__(self):
      super().__init__()
      self.seconds, self.profiles = {}, {}
      self._profile = None

    def on_epoch_begin(self, epoch, logs=None):
      self._end = None
      if epoch == self.params["epochs"] - 1:
        self._profile = cProfile.Profile()
        self._profile.enable()
      self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
      if self._end is None:
        self._end = time.perf_counter()
        self._stop_profile()

    def on_epoch_end(self, epoch, logs=None):
      if self._end is None:
        self._end = time.perf_counter()
        self._stop_profile()
      self.seconds.setdefault(self.model.name, []).append(self._end - self._start)

    def _stop_profile(self):
      if self._profile is not None:
        self._profile.disable()
        self.profiles[self.model.name] = step_profile(
            pstats.Stats(self._profile), self.params["steps"], self._end - self._start)
        self._profile = None
  return EpochClock()


def step_profile(stats: pstats.Stats, steps: int, wall: float) -> dict:
  """Milliseconds a step of the profiled epoch (`wall` seconds of `steps` steps) spent in the
  compiled train step (the `tf.function` call `fit` makes), in the callbacks' batch hooks (in
  all, and per hook that took >= 0.01 ms a step), and in the rest of Keras' loop (iterator,
  logs, the profiler's own cost).

  The profiler starts inside `fit`, so the calls `fit` makes are the profile's top level: the
  time a function spent called from outside any profiled function. (Other TensorFlow calls
  `fit` makes itself, which TensorFlow wraps the same way, count as the step: none is
  measurable beside it.)"""
  compiled = hooks = 0.0
  per_hook = {}
  for (file, line, name), (_, _, _, cumulative, callers) in stats.stats.items():
    top_level = max(0.0, cumulative - sum(timing[3] for timing in callers.values()))
    # TensorFlow wraps a tf.function's __call__ in traceback_utils' error_handler.
    if ("polymorphic_function" in file and name == "__call__"
        or file.endswith("traceback_utils.py") and name == "error_handler"):
      compiled += top_level
    elif name in _BATCH_HOOKS and file.endswith(os.path.join("src", "callbacks.py")):
      hooks += top_level
    if (name in _BATCH_HOOKS and cumulative / steps >= 1e-5
        and any(caller[2].startswith("_call_batch_hook") for caller in callers)):
      where = os.path.join(*file.split(os.sep)[-2:])
      per_hook[f"{where}:{line} {name}"] = round(1e3 * cumulative / steps, 3)
  return {"steps": steps, "epoch_ms_per_step": round(1e3 * wall / steps, 3),
          "compiled_step_ms": round(1e3 * compiled / steps, 3),
          "batch_hooks_ms": round(1e3 * hooks / steps, 3),
          "rest_of_loop_ms": round(1e3 * max(0.0, wall - compiled - hooks) / steps, 3),
          "per_hook_ms": dict(sorted(per_hook.items(), key=lambda kv: -kv[1]))}


def _accelerator() -> str:
  """The GPUs TensorFlow sees, by name, or "no GPU"."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
  return ", ".join(names) if names else "no GPU"


def _bare_keras(run, stage, images: int) -> tuple[float, dict]:
  """(images per second, step profile) of a plain `fit` of `stage`'s model, prepared and
  compiled by the functions super-sub's training uses, on its pipeline."""
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  config = run.config
  train_ds = pipeline.make_dataset(
      run.builder, "train", fit.input_spec(config, stage, config.batch_size, training=True),
      training=True)
  epochs, lr = fit.schedule(config, stage, config.batch_size)
  # Built and compiled under the precision policy the stage was trained with.
  with fit.precision(config, tf.distribute.get_strategy()):
    model = fit.initial_model(run, stage)
    fit.compile_for_training(model, config, epochs, lr, int(train_ds.cardinality()))
  clock = _clock()
  model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[clock])
  return images / statistics.median(clock.seconds[model.name][1:-1]), clock.profiles[model.name]


# setting -> (row label, TrainConfig options, --stage, the prepared run its earlier stages
# come from, those stages). The prepared runs: "float" (flat, generalist, dense specialist) and
# "qat" (its generalist_qat).
_SETTINGS = {
    "flat": ("flat", {}, "flat", "float", []),
    "generalist": ("generalist", {}, "generalist", "float", ["flat"]),
    "dense": ("dense specialist", dict(specialist_form="delta"), "specialists", "float",
              ["flat", "generalist"]),
    "sign": ("sign specialist (QAT)", dict(qat=True, specialist_form="sign"), "specialists",
             "qat", ["flat", "generalist", "generalist_qat"]),
    "qat_delta": ("QAT delta specialist, pinned ranges",
                  dict(qat=True, specialist_form="delta", freeze_bn=True), "specialists", "qat",
                  ["flat", "generalist", "generalist_qat"]),
}


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  from super_sub.training import config as config_lib  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel

  if FLAGS.epochs < 3:
    raise app.UsageError("--epochs must be >= 3: the first traces, the last is profiled")
  chosen = FLAGS.settings.split(",")
  unknown = sorted(set(chosen) - set(_SETTINGS))
  if unknown:
    raise app.UsageError(f"--settings: unknown {unknown}; choose from {sorted(_SETTINGS)}")
  root = tempfile.mkdtemp(prefix="train_overhead_")
  k = FLAGS.superclass
  common = dict(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                backbone=FLAGS.backbone, image_size=FLAGS.image_size,
                batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                specialist_epochs=FLAGS.epochs, qat_epochs=2, specialists=(k,),
                mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile, seed=0)
  # The stages every measured one starts from, trained once and not measured.
  for stage_flag in ("flat", "generalist"):
    fit.train(config_lib.TrainConfig(model_dir=os.path.join(root, "float"), stage=stage_flag,
                                     **common), log=print)
  if {"sign", "qat_delta"} & set(chosen):
    _common.copy_stages(os.path.join(root, "float"), os.path.join(root, "qat"),
                        ["flat", "generalist"])
    fit.train(config_lib.TrainConfig(model_dir=os.path.join(root, "qat"), stage="generalist",
                                     qat=True, **common), log=print)

  pairs = {name: [] for name in chosen}
  for repeat in range(FLAGS.repeats):
    for name in chosen:
      label, options, stage_flag, prepared, earlier = _SETTINGS[name]
      model_dir = os.path.join(root, f"{name}_{repeat}")
      os.makedirs(model_dir)
      _common.copy_stages(os.path.join(root, prepared), model_dir, earlier)
      clock = _clock()
      config = fit.train(config_lib.TrainConfig(model_dir=model_dir, stage=stage_flag,
                                                **common, **options),
                         log=print, callbacks=[clock])
      run = run_lib.Run(config)
      stage = {"flat": run_lib.FLAT, "generalist": run_lib.GENERALIST}.get(
          stage_flag, run_lib.specialist(k))
      images = pipeline.epoch_examples(
          run.builder, "train", fit.input_spec(config, stage, config.batch_size, training=True))
      ours = images / statistics.median(clock.seconds[stage.key][1:-1])
      theirs, their_profile = _bare_keras(run, stage, images)
      pairs[name].append({"images_per_epoch": images, "super_sub_images_per_s": ours, "keras_images_per_s": theirs,
                          "ratio": ours / theirs,
                          "profile": {"super_sub": clock.profiles[stage.key],
                                      "keras": their_profile}})
      print(label, f"repeat {repeat}:", {key: value for key, value in pairs[name][-1].items()
                                         if key != "profile"}, flush=True)

  rows = []
  for name in chosen:
    runs = pairs[name]
    rows.append({"setting": _SETTINGS[name][0], "backbone": FLAGS.backbone,
                 "image_size": FLAGS.image_size, "batch_size": FLAGS.batch_size,
                 "images_per_epoch": runs[0]["images_per_epoch"],
                 "super_sub_images_per_s": round(statistics.median(
                     r["super_sub_images_per_s"] for r in runs), 1),
                 "keras_images_per_s": round(statistics.median(
                     r["keras_images_per_s"] for r in runs), 1),
                 "ratio": round(statistics.median(r["ratio"] for r in runs), 3),
                 "pair_ratios": [round(r["ratio"], 3) for r in runs],
                 "profile_last_pair": runs[-1]["profile"]})
  result = {
      "command": " ".join(["python", "bench/train_overhead.py"] + sys.argv[1:]),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_accelerator()}; "
                 f"{FLAGS.note}",
      "mixed_precision": FLAGS.mixed_precision, "jit_compile": FLAGS.jit_compile,
      "dataset": common["dataset"], "epochs": FLAGS.epochs, "repeats": FLAGS.repeats,
      "timing": "per side, the median over epochs 2 to the second-last of the training part of "
                "an epoch (validation and epoch-end hooks excluded); per setting, the median "
                "over alternating pairs; the last epoch profiled (cProfile)",
      "rows": rows,
  }
  table = markdown_table(
      ["setting", "backbone", "px", "batch", "super-sub img/s", "Keras fit img/s",
       "ratio (median)", "pair ratios"],
      [[r["setting"], r["backbone"], r["image_size"], r["batch_size"],
        r["super_sub_images_per_s"], r["keras_images_per_s"], r["ratio"],
        " ".join(str(x) for x in r["pair_ratios"])] for r in rows])
  profile = markdown_table(
      ["setting", "side", "epoch ms/step", "compiled step", "batch hooks", "rest of loop",
       "largest hook"],
      [[r["setting"], side, p["epoch_ms_per_step"], p["compiled_step_ms"], p["batch_hooks_ms"],
        p["rest_of_loop_ms"],
        next((f"{k} {v}" for k, v in p["per_hook_ms"].items()), "")]
       for r in rows for side, p in r["profile_last_pair"].items()])
  _common.write_results(
      FLAGS.out, result,
      "\n".join(table) + "\n\nProfile of the last pair's last epoch (cProfile; ms a step):\n\n"
      + "\n".join(profile) + "\n\n" + result["machine"] + "\n")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
