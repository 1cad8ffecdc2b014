"""tf.data input pipelines over super-sub's TFDS datasets, one per training role.

Every role reads the same examples and differs only in its target: `label` (flat),
`superclass` (generalist) or `subclass` (a specialist, which sees only its own
superclass's examples). Images follow super_sub.data.images' contract.

Built for ImageNet-sized data as well as small sets:
- examples are read with their images still encoded, so a specialist drops other superclasses'
  examples before any decoding, and its size comes from the counts its superclass
  (`superclass_counts`: the dataset's metadata, or one pass over the labels);
- large natural images train on random-resized crops that decode only the cropped box and
  evaluate on a center crop (super_sub.data.crops); small ones are resized whole and
  augmented by pad-and-crop on whole batches;
- decoded images are cached in memory only when they fit `cache_budget` bytes (and the
  training crops are not random), else the still-encoded examples when those fit; otherwise
  the pipeline streams from the TFDS files with a bounded shuffle buffer of still-encoded
  examples, so memory does not grow with the dataset (`cache_stage`).
"""

from __future__ import annotations

import dataclasses

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub import hierarchy as hierarchy_lib
from super_sub.data import crops
from super_sub.data import images as images_lib
from super_sub.data import sources
from super_sub.errors import SuperSubError

ROLES = ("flat", "generalist", "specialist")
AUGMENTATIONS = ("none", "crop", "flip_crop", "random_resized_crop")
# Decoded images kept in memory at most (per dataset): Fashion-MNIST's 60k 28-px images take
# 47 MB, superclassed_imagenet/32x32 ~1.1 GB; at 224 px its ~370k images would take ~56 GB.
DEFAULT_CACHE_BUDGET = 4 << 30
# Still-encoded examples the streaming shuffle holds (~110 kB each for full-size ImageNet).
STREAM_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What the pipeline reads and how it turns examples into (image, target) batches.

  Attributes:
    role: "flat", "generalist" or "specialist".
    batch_size: examples per batch (the global batch under tf.distribute).
    image_size: side of the square images fed to the model; images are resized if the
      dataset stores another size.
    superclass: for a specialist, the superclass whose examples it reads.
    augment: "none", "crop" (pad by 1/8 and randomly crop back: translation),
      "flip_crop" (also random left-right flips; wrong for data whose classes differ by
      orientation, like superclassed_synthetic's stripes) or "random_resized_crop"
      (Inception's crops and flips, for large natural images; super_sub.data.crops).
    framing: how images without random crops become image_size x image_size: "resize" the
      whole image, or "center_crop" (the evaluation view of random_resized_crop training).
    cache_budget: bytes of memory the pipeline may fill after the first epoch with decoded
      images, or else with still-encoded examples (`cache_stage`; 0: never cache).
    seed: shuffling and augmentation seed.
    drop_remainder: drop the last, smaller batch. Several replicas need it: tf.distribute
      can hand a replica zero rows of a partial batch, and oneDNN's Conv2D fails on empty
      batches (see super_sub.routing.core).
    dustbin: for a specialist's training data, also this many images of other superclasses
      per image of its own, drawn afresh every epoch, with target "not mine" (the index after
      its subclasses). The dataset is then endless; an epoch is `epoch_examples` images.
  """
  role: str
  batch_size: int
  image_size: int
  superclass: int | None = None
  augment: str = "crop"
  framing: str = "resize"
  cache_budget: int = DEFAULT_CACHE_BUDGET
  seed: int = 0
  drop_remainder: bool = False
  dustbin: float = 0.0

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
    if (self.role == "specialist") != (self.superclass is not None):
      raise ValueError("a superclass is required for, and only for, the specialist role")
    if self.augment not in AUGMENTATIONS:
      raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
    if self.framing not in images_lib.FRAMINGS:
      raise ValueError(f"framing must be one of {images_lib.FRAMINGS}, got {self.framing!r}")
    if self.batch_size <= 0 or self.image_size <= 0:
      raise ValueError("batch_size and image_size must be positive")
    if self.dustbin and self.role != "specialist":
      raise ValueError("only a specialist has a dustbin (images of other superclasses)")
    if self.dustbin < 0:
      raise ValueError(f"dustbin must be >= 0; got {self.dustbin}")


def require_prepared(builder: tfds.core.DatasetBuilder) -> None:
  """Raises sources.DatasetError, naming the data folder and the fix, unless the dataset is
  prepared there. Without it TFDS fails deep in a pipeline (an AssertionError, or no splits),
  typically when a later shell lacks the TFDS_DATA_DIR a run was trained under."""
  if not builder.is_prepared():
    raise sources.DatasetError(
        f"{builder.info.full_name} is not prepared in {builder.data_dir_root}: pass "
        "--data_dir=<the TFDS folder it was prepared in> (or set TFDS_DATA_DIR), or prepare "
        "it there with super-sub-build")


def read_split(builder: tfds.core.DatasetBuilder, split: str, **as_dataset_args
               ) -> tf.data.Dataset:
  """`builder.as_dataset(split=split, **as_dataset_args)` of prepared data (else
  `require_prepared`'s error), images still encoded."""
  require_prepared(builder)
  return builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                            **as_dataset_args)


def num_examples(builder: tfds.core.DatasetBuilder, split: str,
                 superclass: int | None = None) -> int:
  """Examples in `split`, or in its `superclass` part (`superclass_counts`)."""
  if superclass is None:
    return builder.info.splits[split].num_examples
  return superclass_counts(builder, split)[superclass]


def superclass_counts(builder: tfds.core.DatasetBuilder, split: str) -> tuple[int, ...]:
  """Examples of each superclass in `split`: from the dataset's metadata when its builder
  recorded them (`info.metadata["superclass_counts"][split]`), else from one pass over the
  labels that never decodes an image, done once per dataset and split."""
  recorded = (builder.info.metadata or {}).get("superclass_counts", {}).get(split)
  if recorded is not None:
    return tuple(int(n) for n in recorded)
  key = (os.fspath(builder.data_dir), split)
  if key not in _COUNTED:
    ds = read_split(builder, split)
    ds = ds.map(lambda ex: ex["superclass"], num_parallel_calls=tf.data.AUTOTUNE)
    num_superclasses = builder.info.features["superclass"].num_classes
    counts = np.zeros(num_superclasses, np.int64)
    for batch in ds.batch(8192).as_numpy_iterator():
      counts += np.bincount(batch, minlength=num_superclasses)
    _COUNTED[key] = tuple(int(n) for n in counts)
  return _COUNTED[key]


_COUNTED: dict[tuple[str, str], tuple[int, ...]] = {}  # (data_dir, split) -> counts


def cache_stage(builder: tfds.core.DatasetBuilder, split: str, spec: InputSpec,
                training: bool) -> str | None:
  """What `make_dataset` keeps in memory after the first epoch, within `spec.cache_budget`
  bytes: "decoded" images when they fit and are the same every epoch (not random-resized
  crops); else the role's still-encoded examples when those fit (a specialist then reads its
  own images from memory instead of the whole split from disk); else None (streaming)."""
  own = num_examples(builder, split, spec.superclass)
  channels = builder.info.features["image"].shape[-1]
  if (not (training and spec.augment == "random_resized_crop")
      and own * spec.image_size ** 2 * channels <= spec.cache_budget):
    return "decoded"
  info = builder.info.splits[split]
  if info.num_bytes and info.num_bytes * own / max(1, info.num_examples) <= spec.cache_budget:
    return "encoded"
  return None


def epoch_examples(builder: tfds.core.DatasetBuilder, split: str, spec: InputSpec) -> int:
  """Images in one training epoch of `make_dataset`: the role's examples, plus a specialist's
  dustbin images (`spec.dustbin` per own image, at most all the other superclasses' images)."""
  own = num_examples(builder, split, spec.superclass)
  return own + _dustbin_images(builder, split, spec.dustbin, own)


def _dustbin_images(builder, split: str, dustbin: float, own: int) -> int:
  """Other superclasses' images in an epoch: `dustbin` per own image, at most all of them."""
  others = builder.info.splits[split].num_examples - own
  return int(round(min(dustbin * own, others)))


def make_dataset(builder: tfds.core.DatasetBuilder, split: str, spec: InputSpec,
                 training: bool, with_metadata: bool = False) -> tf.data.Dataset:
  """Batches of (image, target), or (image, target, metadata) for evaluation.

  Training datasets give their examples in a new order each epoch. `metadata` holds `label`, `superclass`
  and `file_name`, so predictions can be written out with their true labels.
  (`make_training_epochs` draws every epoch's order and augmentation from the seed and the
  epoch's number instead.)

  Raises:
    ValueError: if the dataset lacks the super-sub features or a specialist's superclass
      does not exist in it.
  """
  prefix, one_pass = _stages(builder, split, spec, training, with_metadata, by_epoch=False)
  return one_pass(prefix, None)


def make_training_epochs(builder: tfds.core.DatasetBuilder, split: str, spec: InputSpec,
                         first_epoch: tf.Variable, steps: int) -> tf.data.Dataset:
  """Training batches as `make_dataset` gives them, `steps` an epoch, epoch after epoch from
  `first_epoch` (read when an iterator starts), where every random choice of epoch e (its
  order, crops, flips, dustbin draws) is a function of (spec.seed, e) alone: two runs see the
  same batches, and a run resumed at epoch e sees what an uninterrupted one saw there, not
  epoch 1's order and crops again. Files are read in one fixed (seeded) order; an epoch of
  fewer steps than a pass is cut there, and one of more repeats its own order.

  Raises:
    ValueError: as `make_dataset`.
  """
  prefix, one_pass = _stages(builder, split, spec, True, False, by_epoch=True)
  epochs = tf.data.Dataset.range(2**62).map(lambda k: k + first_epoch.read_value())
  return epochs.flat_map(
      lambda epoch: one_pass(prefix, epoch).repeat().take(steps)).prefetch(tf.data.AUTOTUNE)


def _stages(builder, split: str, spec: InputSpec, training: bool, with_metadata: bool,
            by_epoch: bool):
  """(prefix, one_pass): what is the same every epoch (reading, filtering, a cache), and
  `one_pass(prefix, epoch)`, one pass of batches. With an `epoch` (an int64 scalar tensor)
  every random op of the pass is stateless, seeded by (spec.seed, epoch); with None, stateful
  ops draw anew on each pass."""
  features = builder.info.features
  missing = {"image", "label", "superclass", "subclass"} - set(features.keys())
  if missing:
    raise ValueError(f"{builder.name} lacks the features {sorted(missing)}; super-sub needs "
                     "a dataset with image, label, superclass and subclass")
  num_super = features["superclass"].num_classes
  if spec.superclass is not None and not 0 <= spec.superclass < num_super:
    raise ValueError(f"superclass {spec.superclass} does not exist in {builder.name} "
                     f"(it has {num_super}: 0..{num_super - 1})")

  # Images stay encoded until an example is kept: a specialist never decodes the other
  # superclasses' images.
  read_config = tfds.ReadConfig(shuffle_seed=spec.seed,
                                shuffle_reshuffle_each_iteration=False if by_epoch else None)
  ds = read_split(builder, split, shuffle_files=training, read_config=read_config)
  size = num_examples(builder, split, spec.superclass)
  dustbin = spec.dustbin if training else 0.0  # evaluation: the specialist's own images
  if spec.superclass is not None and not dustbin:
    ds = ds.filter(lambda ex: tf.equal(ex["superclass"], spec.superclass))
    ds = ds.apply(tf.data.experimental.assert_cardinality(size))
  target_key = {"flat": "label", "generalist": "superclass", "specialist": "subclass"}[spec.role]
  not_mine = (len(builder.hierarchy.subclass_range(spec.superclass))
              if spec.superclass is not None else None)
  framing = ("random_crop" if training and spec.augment == "random_resized_crop"
             else spec.framing)
  image_feature = features["image"]

  def target(ex):
    if not dustbin:
      return ex[target_key]
    return tf.where(tf.equal(ex["superclass"], spec.superclass), ex["subclass"],
                    tf.constant(not_mine, ex["subclass"].dtype))

  def decode(ex, seed=None):  # per example: keep uint8 (4x less memory than float in a cache)
    if framing == "resize":
      image = crops.resize(crops.decode(ex["image"], image_feature.shape), spec.image_size)
    else:
      image = crops.crop(ex["image"], framing, spec.image_size, image_feature.shape[-1],
                         seed=seed)
    if not with_metadata:
      return image, target(ex)
    meta = {"label": ex["label"], "superclass": ex["superclass"]}
    if "file_name" in ex:
      meta["file_name"] = ex["file_name"]
    return image, target(ex), meta

  keep = 0.0
  if dustbin:
    # Keep every own image and each other one with probability p, so that an epoch holds
    # `dustbin` others per own image on average; a fresh draw each pass, and endless, so an
    # epoch is `epoch_examples` images whatever one pass drew.
    keep = _dustbin_images(builder, split, dustbin, size) / max(
        1, builder.info.splits[split].num_examples - size)
  cache = cache_stage(builder, split, spec, training)
  if cache == "decoded":
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
  elif cache == "encoded":
    ds = ds.cache()
  # Whole batches after the cache: per-example work after the cache made the pipeline, not
  # the model, the bottleneck on 2 cores (bench/fashion_mnist.py measures both).
  augment = (_batch_augmenter(spec) if training and spec.augment in ("crop", "flip_crop")
             else None)

  def one_pass(ds, epoch):
    # Seeds of this epoch: one scalar (shuffle, dustbin draws), and [2]-seeds of stateless ops.
    seed = None if epoch is None else tf.cast(epoch, tf.int64) * 1_000_003 + spec.seed
    is_own = ((lambda example: example[1] < not_mine) if cache == "decoded"
              else (lambda ex: tf.equal(ex["superclass"], spec.superclass)))
    if dustbin:
      ds = (_draw_dustbin(ds, is_own, keep, spec.seed) if seed is None
            else _draw_dustbin_stateless(ds, is_own, keep, seed))
    if training:
      buffer = min(size, 20_000 if cache == "decoded" else STREAM_SHUFFLE_BUFFER)
      ds = (ds.shuffle(buffer, seed=spec.seed, reshuffle_each_iteration=True) if seed is None
            else _shuffle_stateless(ds, buffer, seed))
    if cache != "decoded":  # decode the kept, still-encoded examples
      if seed is None or framing != "random_crop":
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
      else:
        ds = ds.enumerate().map(lambda i, ex: decode(ex, tf.stack([seed, i])),
                                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(spec.batch_size, drop_remainder=spec.drop_remainder)
    if seed is not None and augment is not None:
      ds = ds.enumerate()

    def to_model(*batch):
      if seed is not None and augment is not None:
        index, (image, *rest) = batch  # (batch index, (images, targets)) of enumerate()
        return (augment(tf.cast(image, tf.float32) / 255.0, tf.stack([seed, index])), *rest)
      image, *rest = batch
      image = tf.cast(image, tf.float32) / 255.0
      return (augment(image) if augment else image, *rest)

    ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)
    return ds if epoch is not None else ds.prefetch(tf.data.AUTOTUNE)

  return ds, one_pass


def _draw_dustbin(ds: tf.data.Dataset, is_own, keep: float, seed: int) -> tf.data.Dataset:
  """Every element `is_own` accepts, each other one with probability `keep`, drawn afresh on
  each pass; repeated forever."""
  coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
  ds = tf.data.Dataset.zip((ds, coins)).filter(
      lambda example, coin: tf.logical_or(
          is_own(example), tf.cast(coin % 1_000_000, tf.float64) < keep * 1_000_000.0))
  return ds.map(lambda example, coin: example).repeat()


# Dataset.shuffle and Dataset.random take no tensor seed once a global seed is set (their
# get_seed compares the seed pair with (0, 0) in Python), so epochs seeded by a tensor draw
# with stateless ops instead.
def _shuffle_stateless(ds: tf.data.Dataset, window: int, seed: tf.Tensor) -> tf.data.Dataset:
  """`ds` in a random order that is a function of `seed`: each run of `window` elements
  permuted (a whole dataset that fits one window, fully)."""
  ds = ds.batch(window).enumerate()

  def permute(index, elements):
    n = tf.shape(tf.nest.flatten(elements)[0])[0]
    order = tf.random.experimental.stateless_shuffle(tf.range(n), tf.stack([seed, index]))
    return tf.nest.map_structure(lambda t: tf.gather(t, order), elements)

  return ds.map(permute).unbatch()


def _draw_dustbin_stateless(ds: tf.data.Dataset, is_own, keep: float,
                            seed: tf.Tensor) -> tf.data.Dataset:
  """`_draw_dustbin` with coins that are a function of `seed` and the element's position
  (the same draws on every pass of this dataset); repeated forever."""
  def kept(index, example):
    coin = tf.random.stateless_uniform([], tf.stack([seed, index]), dtype=tf.float64)
    return tf.logical_or(is_own(example), coin < keep)
  return ds.enumerate().filter(kept).map(lambda index, example: example).repeat()


def _batch_augmenter(spec: InputSpec):
  """Random translation by up to 1/8 of the side (zero fill), as pad-and-crop does, plus
  left-right flips for "flip_crop"; one draw per image of the batch."""
  pad = max(1, spec.image_size // 8)
  flip = spec.augment == "flip_crop"

  def augment(images, seed=None):
    """`seed`: a [2] seed of stateless draws (the batch's own); None: stateful draws."""
    n = tf.shape(images)[0]
    if seed is None:
      shift = tf.random.uniform([n, 2], -pad, pad + 1, dtype=tf.int32)
      mirror = tf.random.uniform([n]) < 0.5
    else:
      shift = tf.random.stateless_uniform([n, 2], seed, -pad, pad + 1, dtype=tf.int32)
      mirror = tf.random.stateless_uniform([n], seed[::-1]) < 0.5
    shift = tf.cast(shift, tf.float32)
    ones, zeros = tf.ones([n, 1]), tf.zeros([n, 1])
    # Output pixel (x, y) reads input (x + dx, y + dy).
    transforms = tf.concat([ones, zeros, shift[:, :1], zeros, ones, shift[:, 1:], zeros,
                            zeros], axis=1)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    if flip:
      images = tf.where(mirror[:, None, None, None], tf.reverse(images, axis=[2]), images)
    return images
  return augment


def check_hierarchy_matches(builder: tfds.core.DatasetBuilder,
                            hierarchy: hierarchy_lib.Hierarchy) -> None:
  """Raises ValueError unless the dataset's label and superclass names are the hierarchy's."""
  features = builder.info.features
  if (list(features["label"].names) != hierarchy.subclass_names
      or list(features["superclass"].names) != hierarchy.superclass_names):
    raise ValueError(
        f"hierarchy {hierarchy.name!r} does not match dataset {builder.info.full_name}: "
        f"expected {hierarchy.num_superclasses} superclasses {hierarchy.superclass_names[:5]}... "
        f"and {hierarchy.num_subclasses} subclasses, the dataset has "
        f"{features['superclass'].num_classes} superclasses "
        f"{list(features['superclass'].names)[:5]}... and {features['label'].num_classes} "
        "labels")


class UndecodableImageError(SuperSubError, ValueError):
  """An image of a dataset that does not decode; the message names its file."""


def find_undecodable(builder: tfds.core.DatasetBuilder, split: str,
                     superclass: int | None = None) -> UndecodableImageError | None:
  """The first image of `split` (of `superclass`, if given) that TensorFlow cannot decode, as
  an error naming its file, or None. A full pass over the split: for after a pipeline failed."""
  ds = read_split(builder, split)
  channels = builder.info.features["image"].shape[-1]
  for ex in ds:
    if superclass is not None and int(ex["superclass"]) != superclass:
      continue
    try:
      crops.decode(ex["image"], (None, None, channels))
    except tf.errors.InvalidArgumentError as e:
      name = ex["file_name"].numpy().decode("utf-8", "replace") if "file_name" in ex else "?"
      return UndecodableImageError(
          f"{builder.info.full_name}, split {split!r}: image {name!r} does not decode "
          f"({str(e.message).splitlines()[0][:200]}); every image must be a valid JPEG, PNG, "
          "GIF or BMP. Remove or re-encode it and prepare the dataset again.")
  return None
