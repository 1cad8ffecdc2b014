"""What super-sub's training costs over a bare Keras `fit`: images per second of a stage trained
by `super_sub.training.fit.train` (its NaN guard, BackupAndRestore, CSV and TensorBoard logs, and
a specialist's projection after every step) against `model.fit` of the same model, optimizer,
batch and tf.data pipeline with none of those.

    python bench/train_overhead.py --data_dir=/tmp/tfds --out=bench/results/train_overhead_small

Settings: flat, generalist, a dense specialist, a sign specialist (QAT) and a QAT delta
specialist (pinned ranges), small_resnet at 28 px on superclassed_synthetic/32px (resized;
superclass 4's specialist; --superclass picks another). Each throughput is the median over the epochs after the first
(tracing, cache filling) of the training part of an epoch (validation excluded), both sides
timed by the same callback. Ratios compare runs within one invocation only: the CPU may be
shared. MobileNetV2 at 224 px (superclassed_imagenet on an ImageNet-shaped tree, with
--mixed_precision --jit_compile) is a GPU's job: bench/gpu.sh runs it.
"""

import os
import platform
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
flags.DEFINE_integer("epochs", 4, "Epochs of every measured stage.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("image_size", 28, "Image side.")
flags.DEFINE_string("backbone", "small_resnet", "Backbone (mobilenet_v2 at 224 px: a GPU's job).")
flags.DEFINE_string("dataset", "superclassed_synthetic/32px", "TFDS dataset; its superclass 4 "
                    "must have a specialist.")
flags.DEFINE_string("manual_dir", None, "Manually downloaded source files (ImageNet).")
flags.DEFINE_string("note", "", "What else shared the machine (written into the result).")
flags.DEFINE_integer("superclass", 4, "The superclass whose specialists are measured.")
flags.DEFINE_boolean("mixed_precision", False, "Train every stage in mixed precision.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile every stage's step.")
FLAGS = flags.FLAGS


def _timer():
  from super_sub import keras  # pylint: disable=import-outside-toplevel

  class EpochTimer(keras.callbacks.Callback):
    """Seconds of the training part of each epoch (first batch start to last batch end), per
    Keras model name (a stage's key)."""

    def __init__(self):
      super().__init__()
      self.seconds = {}

    def on_epoch_begin(self, epoch, logs=None):
      self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.seconds.setdefault(self.model.name, []).append(self._end - self._start)
  return EpochTimer()


def _accelerator() -> str:
  """The GPUs TensorFlow sees, by name, or "no GPU"."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
  return ", ".join(names) if names else "no GPU"


def _bare_keras(run, stage, images: int) -> float:
  """Images per second of a plain `fit` of `stage`'s model on its pipeline and optimizer."""
  from super_sub import keras  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  from super_sub.models import classifiers  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  config = run.config
  # Built and compiled under the precision policy the stage was trained with.
  with fit.precision(config, tf.distribute.get_strategy()):
    model = run.build_model(stage)
    if stage.role == "specialist":
      classifiers.copy_backbone_weights(run.load_model(run.generalist), model)
      fit.prepare_specialist(model, config)
    spec = pipeline.InputSpec(role=stage.role, batch_size=config.batch_size,
                              image_size=config.image_size, superclass=stage.superclass,
                              augment=config.augment, framing=config.framing, seed=config.seed,
                              cache_budget=int(config.cache_budget_gb * 2**30))
    train_ds = pipeline.make_dataset(run.builder, "train", spec, training=True)
    epochs, lr = fit.schedule(config, stage, config.batch_size)
    steps = int(train_ds.cardinality())
    warmup = int(config.warmup_epochs * steps)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=keras.optimizers.schedules.CosineDecay(
                lr / 10, max(1, epochs * steps - warmup), warmup_target=lr, warmup_steps=warmup),
            weight_decay=config.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")]
        + ([keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")]
           if model.output_shape[-1] > 5 else []),
        jit_compile=config.jit_compile)
  timer = _timer()
  model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[timer])
  return images / statistics.median(timer.seconds[model.name][1:])


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  from super_sub.data import pipeline  # pylint: disable=import-outside-toplevel
  from super_sub.training import config as config_lib  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel

  root = tempfile.mkdtemp(prefix="train_overhead_")
  common = dict(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                backbone=FLAGS.backbone, image_size=FLAGS.image_size,
                batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                specialist_epochs=FLAGS.epochs, qat_epochs=2, specialists=(FLAGS.superclass,),
                mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile, seed=0)
  k = FLAGS.superclass
  # (setting, run folder, extra options, stages measured there: (run's stage name, Stage))
  settings = [
      ("float", dict(specialist_form="delta"),
       [("flat", run_lib.FLAT), ("generalist", run_lib.GENERALIST),
        ("dense specialist", run_lib.specialist(k))]),
      ("qat_sign", dict(qat=True, specialist_form="sign"),
       [("sign specialist (QAT)", run_lib.specialist(k))]),
      ("qat_delta", dict(qat=True, specialist_form="delta", freeze_bn=True),
       [("QAT delta specialist, pinned ranges", run_lib.specialist(k))]),
  ]
  rows = []
  for folder, options, measured in settings:
    model_dir = os.path.join(root, folder)
    if folder != "float":  # the float stages (and the QAT generalist) are trained once
      os.makedirs(model_dir, exist_ok=True)
      _common.copy_stages(os.path.join(root, "float"), model_dir, ["flat", "generalist"])
      if folder == "qat_delta":
        _common.copy_stages(os.path.join(root, "qat_sign"), model_dir, ["generalist_qat"])
    timer = _timer()
    config = fit.train(config_lib.TrainConfig(model_dir=model_dir, **common, **options),
                       log=print, callbacks=[timer])
    run = run_lib.Run(config)
    for setting, stage in measured:
      spec = pipeline.InputSpec(role=stage.role, batch_size=config.batch_size,
                                image_size=config.image_size, superclass=stage.superclass)
      images = pipeline.epoch_examples(run.builder, "train", spec)
      ours = images / statistics.median(timer.seconds[stage.key][1:])
      keras_rate = _bare_keras(run, stage, images)
      rows.append({"setting": setting, "backbone": config.backbone,
                   "image_size": config.image_size, "batch_size": config.batch_size,
                   "images_per_epoch": images,
                   "super_sub_images_per_s": round(ours, 1),
                   "keras_images_per_s": round(keras_rate, 1),
                   "ratio": round(ours / keras_rate, 3)})
      print(rows[-1], flush=True)
  result = {
      "command": " ".join(["python", "bench/train_overhead.py"] + sys.argv[1:]),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_accelerator()}; "
                 f"{FLAGS.note}",
      "mixed_precision": FLAGS.mixed_precision, "jit_compile": FLAGS.jit_compile,
      "dataset": common["dataset"], "epochs": FLAGS.epochs,
      "timing": "median over epochs 2.. of the training part of an epoch (validation excluded)",
      "rows": rows,
  }
  keys = ("setting", "backbone", "image_size", "batch_size", "super_sub_images_per_s",
          "keras_images_per_s", "ratio")
  lines = markdown_table(
      ["setting", "backbone", "px", "batch", "super-sub img/s", "Keras fit img/s", "ratio"],
      [[r[key] for key in keys] for r in rows])
  _common.write_results(FLAGS.out, result, "\n".join(lines) + "\n\n" + result["machine"] + "\n")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
