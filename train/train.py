"""super-sub-train: trains the flat baseline, the generalist and the specialists.

  super-sub-train --model_dir=runs/fmnist --dataset=superclassed_fashion_mnist \
      --manual_dir=/usr/share/datasets/fashion-mnist --stage=all --epochs=10

Re-running the same command resumes where it stopped. `--flagfile=FILE` reads flags from
a file; `--helpfull` lists them all.
"""

from absl import app
from absl import flags

from super_sub import cli
from super_sub import training

_D = training.TrainConfig.__dataclass_fields__  # defaults live in one place: the config

MODEL_DIR = flags.DEFINE_string("model_dir", None, "Folder of the run (created; resumed if it "
                                "exists).", required=True)
DATASET = flags.DEFINE_string("dataset", _D["dataset"].default, "TFDS name[/config], e.g. "
                              "superclassed_synthetic, superclassed_fashion_mnist, "
                              "superclassed_imagenet/64x64.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: TFDS's).")
MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded source "
                                 "files (ImageNet, Fashion-MNIST).")
STAGE = flags.DEFINE_enum("stage", "all", list(training.STAGES) + ["all"],
                          "What to train; `all` trains flat, generalist, then every specialist.")
BACKBONE = flags.DEFINE_string("backbone", _D["backbone"].default,
                               "small_resnet, resnet18, resnet50 or mobilenet_v2.")
IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image side fed to the network "
                                  "(default: the dataset's).")
WEIGHTS = flags.DEFINE_string("weights", None, "Backbone initialisation: none (random) or "
                              "imagenet where Keras offers it (downloads once).")
EPOCHS = flags.DEFINE_integer("epochs", _D["epochs"].default, "Epochs of flat and generalist.")
SPECIALIST_EPOCHS = flags.DEFINE_integer("specialist_epochs", None, "Epochs of each specialist "
                                         "(default: --epochs).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", _D["batch_size"].default, "Batch size PER "
                                  "REPLICA; the global batch is this times the replicas.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", _D["learning_rate"].default, "Peak "
                                   "learning rate of AdamW: linear warm-up, then cosine decay.")
GENERALIST_FREEZE_STAGES = flags.DEFINE_integer(
    "generalist_freeze_stages", 0, "With --generalist_init=flat: the generalist keeps the flat "
    "network's first K stages frozen (K = stages + 1: the whole backbone, only the superclass "
    "head trains). Its features then still separate subclasses, so specialists fine-tuned "
    "from it need smaller deltas.")
SPECIALIST_LR = flags.DEFINE_float("specialist_learning_rate", None, "Peak learning rate of "
                                   "specialist fine-tuning (default: --learning_rate).")
GENERALIST_INIT = flags.DEFINE_enum(
    "generalist_init", "scratch", list(training.GENERALIST_INITS), "Initialise the generalist "
    "from scratch (the paper) or from the trained flat network's backbone (--stage=all trains "
    "flat first).")
WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", _D["warmup_epochs"].default,
                                   "Epochs of linear learning-rate warm-up.")
WEIGHT_DECAY = flags.DEFINE_float("weight_decay", _D["weight_decay"].default,
                                  "AdamW decoupled weight decay.")
FREEZE_STAGES = flags.DEFINE_integer("freeze_stages", 0, "Specialists keep the first K stages "
                                     "of the generalist frozen (0: fine-tune everything).")
AUGMENT = flags.DEFINE_enum("augment", None, ["none", "crop", "flip_crop"], "Augmentation "
                            "(default: crop for synthetic data, flip_crop otherwise).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and augmentation.")
STRATEGY = flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES),
                             "tf.distribute strategy; multi_worker reads TF_CONFIG.")
CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical "
                                   "devices (to try --strategy=mirrored without GPUs).")
SPECIALISTS = flags.DEFINE_list("specialists", None, "Superclass indices whose specialists "
                                "to train (default: all with >= 2 subclasses).")
DELTA_L1 = flags.DEFINE_float(
    "delta_l1", _D["delta_l1"].default, "Specialists: L1 penalty weight on "
    "W - W_generalist, applied as a proximal step after every update (soft threshold = this x "
    "learning rate). Larger: sparser, smaller deltas, less room to specialise; 0: dense "
    "deltas (plain fine-tuning).")
DELTA_KEEP = flags.DEFINE_float(
    "delta_keep", None, "Specialists: budget, the fraction of backbone kernel weights that "
    "may differ from the generalist's (e.g. 0.02). The largest changes (in int8 steps) are "
    "kept by gradual magnitude pruning over the first two thirds of the epochs, the rest "
    "recovers with the mask fixed. Pair with --freeze_bn: free BatchNorm statistics change "
    "every folded weight anyway. Default: no budget.")
FREEZE_BN = flags.DEFINE_boolean(
    "freeze_bn", False, "Specialists keep the generalist's BatchNorm (parameters and "
    "statistics): smaller deltas, since re-estimated statistics change every folded weight.")
QAT = flags.DEFINE_boolean(
    "qat", False, "Quantization-aware training (tfmot): after the float generalist, a "
    "generalist_qat stage fine-tunes its QAT version; specialists start from it with its "
    "quantizer ranges pinned, so their int8 weights differ from the base's in few places.")
QAT_EPOCHS = flags.DEFINE_integer("qat_epochs", 2, "Epochs of the generalist_qat stage.")
QAT_LR = flags.DEFINE_float("qat_learning_rate", None, "Peak learning rate of the "
                            "generalist_qat stage (default: --learning_rate / 10).")
STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", None, "Cap the steps of an epoch "
                                       "(smoke runs).")


def config_from_flags() -> training.TrainConfig:
  return training.TrainConfig(
      model_dir=MODEL_DIR.value, dataset=DATASET.value, data_dir=DATA_DIR.value,
      manual_dir=MANUAL_DIR.value, stage=STAGE.value, backbone=BACKBONE.value,
      image_size=IMAGE_SIZE.value,
      weights=None if WEIGHTS.value in (None, "none") else WEIGHTS.value,
      epochs=EPOCHS.value, specialist_epochs=SPECIALIST_EPOCHS.value,
      batch_size=BATCH_SIZE.value, learning_rate=LEARNING_RATE.value,
      specialist_learning_rate=SPECIALIST_LR.value, generalist_init=GENERALIST_INIT.value,
      generalist_freeze_stages=GENERALIST_FREEZE_STAGES.value,
      warmup_epochs=WARMUP_EPOCHS.value,
      weight_decay=WEIGHT_DECAY.value,
      freeze_stages=FREEZE_STAGES.value, augment=AUGMENT.value, seed=SEED.value,
      strategy=STRATEGY.value, steps_per_epoch=STEPS_PER_EPOCH.value,
      delta_l1=DELTA_L1.value, delta_keep=DELTA_KEEP.value, freeze_bn=FREEZE_BN.value,
      qat=QAT.value,
      qat_epochs=QAT_EPOCHS.value, qat_learning_rate=QAT_LR.value,
      specialists=(tuple(int(k) for k in SPECIALISTS.value)
                   if SPECIALISTS.value is not None else None))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if CPU_DEVICES.value:
    training.split_cpu(CPU_DEVICES.value)
  training.train(config_from_flags())


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
