r"""Could a small head on the shared trunk's features route instead of the generalist's tail?

With a shared trunk (`--freeze_stages=K`), two-stage inference runs the trunk once and then
two tails: the generalist's, to route, and the routed specialist's. The second tail is what
keeps it above one network at 224 px (ResNet-50 k4: stage 4, 60% of the weights; BENCHMARKS.md).
A router head on the trunk's features, a few percent of a tail's work, would make
it about one network, if it routes as well. This bench measures both sides before training,
export and runtime carry such a head:

  accuracy  on a trained run (e.g. Fashion-MNIST): the generalist's trunk features (the output
            of stage K-1) for the train and evaluation splits; heads `conv 3x3 stride 2 (width
            w) + BatchNorm + ReLU + global average + linear`, and a linear probe on globally
            averaged features, trained on the train features alone (kept as float16; Adam
            1e-3, batch 256, a fixed number of epochs, no augmentation, seed 0); superclass
            top-1 on the
            evaluation split against the generalist's own, with parameter counts.
  speed     at 224 px (random weights: speed does not depend on them): the generalist's tail
            and router heads of several widths as int8 TFLite models that take the trunk's
            int8 features, against the whole int8 network: ms per image at batch 1 and 32
            (LiteRT, 2 threads, median of --repeats), and weight bytes. Two-stage with every
            specialist cached costs about one network + the router (or + the generalist's
            tail, as today).

  .venv/bin/python bench/router_head.py --run=/work/bench_fmnist/seed0/e2/supersub \
      --run_shared_stages=3 --backbone=resnet50 --out=bench/results/router_head

Writes <out>.json and <out>.md.
"""

import shlex
import sys

from absl import app
from absl import flags
import numpy as np

from _common import median_ms
from _common import write_results
from super_sub import keras
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

from super_sub.analysis.tables import markdown_table
from super_sub.bundles import tflite
from super_sub.data import pipeline
from super_sub.models import backbones
from super_sub.models import classifiers
from super_sub.models import trunk as trunk_lib
from super_sub.runtime import predictor
from super_sub.training import run as run_lib

_RUN = flags.DEFINE_string("run", None, "A trained run (model_dir) for the accuracy part; "
                           "none: skip it.")
_RUN_SHARED = flags.DEFINE_integer("run_shared_stages", 3, "K of the run's trunk: the heads "
                                   "read the output of stage K-1.", lower_bound=1)
_WIDTHS = flags.DEFINE_list("widths", ["16", "32", "64", "128"], "Router conv widths for the "
                            "accuracy part.")
_HEAD_EPOCHS = flags.DEFINE_integer("head_epochs", 15, "Epochs of each router head.",
                                    lower_bound=1)
_BACKBONE = flags.DEFINE_string("backbone", "resnet50", "Backbone for the speed part; '' "
                                "skips it.")
_SHARED = flags.DEFINE_integer("shared_stages", 4, "K of the 224-px trunk.", lower_bound=1)
_SPEED_WIDTHS = flags.DEFINE_list("speed_widths", ["128", "256", "512"], "Router conv widths "
                                  "for the speed part.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed passes per model and batch size.",
                                lower_bound=1)
_OUT = flags.DEFINE_string("out", "bench/results/router_head", "Output path without suffix.")

_SHAPE = (224, 224, 3)
_SUPERCLASSES = 10  # superclassed_imagenet


def router_head(features_shape, width: int, num_superclasses: int, name: str) -> keras.Model:
  """conv 3x3 stride 2 + BatchNorm + ReLU + global average + linear, on the trunk's features."""
  x = inputs = keras.Input(features_shape, name="features")
  x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False)(x)
  x = keras.layers.BatchNormalization()(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(num_superclasses, name="head")(x), name=name)


def linear_probe(features_shape, num_superclasses: int) -> keras.Model:
  x = inputs = keras.Input(features_shape, name="features")
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(num_superclasses, name="head")(x),
                     name="linear")


# --- accuracy ------------------------------------------------------------------------------
def trunk_features(run: run_lib.Run, generalist: keras.Model, shared: int, split: str):
  """(features, generalist superclass logits, superclass labels) over one split."""
  cut = trunk_lib.cut_index(generalist, shared)
  both = keras.Model(generalist.input, [generalist.layers[cut].output, generalist.output])
  spec = pipeline.InputSpec(role="generalist", batch_size=500,
                            image_size=run.config.image_size, augment="none",
                            framing=run.config.framing, cache_budget=0)
  feats, logits, labels = [], [], []
  for x, y in pipeline.make_dataset(run.builder, split, spec, training=False):
    f, p = both(x, training=False)
    feats.append(f.numpy().astype(np.float16))  # half the memory; heads train in float32
    logits.append(p.numpy())
    labels.append(np.asarray(y))
  return np.concatenate(feats), np.concatenate(logits), np.concatenate(labels)


def _batches(x: np.ndarray, y: np.ndarray | None, batch: int, shuffle: bool) -> tf.data.Dataset:
  """Float16 features as float32 batches, sliced as they go: `fit` on the whole array would
  copy it (60,000 x 14 x 14 x 64 float32 is 3 GB)."""
  def gen():
    order = np.random.default_rng(0).permutation(len(x)) if shuffle else np.arange(len(x))
    for i in range(0, len(x), batch):
      rows = np.sort(order[i:i + batch])
      yield (x[rows].astype(np.float32),) + ((y[rows],) if y is not None else ())
  spec = (tf.TensorSpec((None, *x.shape[1:]), tf.float32),) + (
      (tf.TensorSpec((None,), tf.int64),) if y is not None else ())
  return tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(2)


def train_head(head: keras.Model, x, y, x_eval, y_eval, epochs: int) -> float:
  """Superclass top-1 on the evaluation features after training on the train features."""
  keras.utils.set_random_seed(0)
  head.compile(keras.optimizers.Adam(1e-3),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               metrics=["accuracy"])
  head.fit(_batches(x, y.astype(np.int64), 256, shuffle=True), epochs=epochs, verbose=0)
  logits = head.predict(_batches(x_eval, None, 1000, shuffle=False), verbose=0)
  return float(np.mean(logits.argmax(-1) == y_eval))


def accuracy_part(model_dir: str, shared: int, widths, epochs: int) -> dict:
  run = run_lib.Run.open(model_dir)
  generalist = run.load_model(run.generalist)
  x, logits, y = trunk_features(run, generalist, shared, "train")
  x_eval, logits_eval, y_eval = trunk_features(run, generalist, shared, run.evaluation_split)
  trunk, tail = trunk_lib.split(generalist, shared)
  s = run.hierarchy.num_superclasses
  rows = [{"router": "generalist tail (today)", "params": tail.count_params(),
           "superclass_top1": float(np.mean(logits_eval.argmax(-1) == y_eval)),
           "train_superclass_top1": float(np.mean(logits.argmax(-1) == y))}]
  probe = linear_probe(x.shape[1:], s)
  rows.append({"router": "linear on averaged features", "params": probe.count_params(),
               "superclass_top1": train_head(probe, x, y, x_eval, y_eval, epochs)})
  for w in widths:
    head = router_head(x.shape[1:], int(w), s, f"router_{w}")
    rows.append({"router": f"conv width {w}", "params": head.count_params(),
                 "superclass_top1": train_head(head, x, y, x_eval, y_eval, epochs)})
  return {"run": model_dir, "dataset": run.config.dataset, "backbone": run.config.backbone,
          "image_size": run.config.image_size, "generalist_epochs": run.config.epochs,
          "shared_stages": shared, "features_shape": list(x.shape[1:]),
          "trunk_params": trunk.count_params(), "head_epochs": epochs,
          "train_images": int(len(x)), "evaluation_split": run.evaluation_split,
          "evaluation_images": int(len(x_eval)), "rows": rows}


# --- speed ---------------------------------------------------------------------------------
def ms_per_image(model: bytes, inputs: np.ndarray, batch: int, repeats: int) -> float:
  """Median ms per image; float inputs are quantized first, as the trunk hands a tail its
  int8 features, so that only the model is timed."""
  lite = predictor.LiteModel(model, 2, "timed")
  chunk = lite.quantize(inputs[:batch])
  return median_ms(lambda: lite(chunk), repeats) / batch  # the warm-up allocates the batch


def speed_part(backbone: str, shared: int, widths, repeats: int) -> dict:
  rng = np.random.default_rng(0)
  images = rng.random((32, *_SHAPE), dtype=np.float32)
  generalist = classifiers.build_classifier(backbones.build_backbone(backbone, _SHAPE), _SHAPE,
                                            _SUPERCLASSES, "generalist", "generalist")
  trunk, tail = trunk_lib.split(generalist, shared)
  features = trunk.predict(images, batch_size=8, verbose=0)
  calibration = features[:16]
  whole = tflite.to_tflite(generalist, images[:16])
  models = {"whole network (int8)": (whole, images),
            "generalist tail (today)": (tflite.to_tflite(tail, calibration, int8_input=True),
                                        features)}
  for w in widths:
    head = router_head(features.shape[1:], int(w), _SUPERCLASSES, f"router_{w}")
    models[f"router conv width {w}"] = (tflite.to_tflite(head, calibration, int8_input=True),
                                        features)
  rows = []
  for name, (model, inputs) in models.items():
    rows.append({"model": name, "tflite_bytes": len(model),
                 "ms_batch_1": ms_per_image(model, inputs, 1, repeats),
                 "ms_batch_32": ms_per_image(model, inputs, 32, repeats)})
  return {"backbone": backbone, "image_size": _SHAPE[0], "shared_stages": shared,
          "features_shape": list(features.shape[1:]), "threads": 2, "repeats": repeats,
          "rows": rows}


def markdown(result: dict) -> str:
  lines = [f"`{result['command']}`", ""]
  a = result.get("accuracy")
  if a:
    lines += [f"Accuracy: {a['dataset']}, {a['backbone']} at {a['image_size']} px, generalist "
              f"trained {a['generalist_epochs']} epochs ({a['run']}); heads on the output of "
              f"stage {a['shared_stages'] - 1} ({'x'.join(map(str, a['features_shape']))}), "
              f"trained {a['head_epochs']} epochs on {a['train_images']} train images' "
              f"features, scored on {a['evaluation_images']} {a['evaluation_split']} images.",
              ""]
    lines += markdown_table(
        ["router", "parameters", "superclass top-1 (%)"],
        [[r["router"], f"{r['params']:,}", f"{100 * r['superclass_top1']:.2f}"]
         for r in a["rows"]])
    lines.append("")
  s = result.get("speed")
  if s:
    whole = s["rows"][0]
    lines += [f"Speed: {s['backbone']} at {s['image_size']} px, random weights, int8, trunk "
              f"of {s['shared_stages']} stages (features "
              f"{'x'.join(map(str, s['features_shape']))}), LiteRT {s['threads']} threads, "
              f"median of {s['repeats']}.", ""]
    lines += markdown_table(
        ["model", "int8 MB", "ms/image batch 1 (x whole)", "ms/image batch 32 (x whole)"],
        [[r["model"], f"{r['tflite_bytes'] / 1e6:.2f}",
          f"{r['ms_batch_1']:.2f} ({r['ms_batch_1'] / whole['ms_batch_1']:.3f})",
          f"{r['ms_batch_32']:.2f} ({r['ms_batch_32'] / whole['ms_batch_32']:.3f})"]
         for r in s["rows"]])
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not _RUN.value and not _BACKBONE.value:
    raise app.UsageError("nothing to measure: give --run and/or --backbone")
  if _BACKBONE.value and _BACKBONE.value not in backbones.BACKBONES:
    raise app.UsageError(f"--backbone={_BACKBONE.value}: expected one of "
                         f"{list(backbones.BACKBONES)}")
  command = "python bench/router_head.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  result = {"command": command}
  if _RUN.value:
    result["accuracy"] = accuracy_part(_RUN.value, _RUN_SHARED.value, _WIDTHS.value,
                                       _HEAD_EPOCHS.value)
  if _BACKBONE.value:
    result["speed"] = speed_part(_BACKBONE.value, _SHARED.value, _SPEED_WIDTHS.value,
                                 _REPEATS.value)
  write_results(_OUT.value, result, markdown(result))


if __name__ == "__main__":
  tf.get_logger().setLevel("ERROR")
  app.run(main)
