"""The input pipeline on the synthetic `smoke` data (16 px, 8 train / 4 validation images a class).

What the README promises of super_sub.data.pipeline and that training relies on: each role's
target, a specialist seeing only its superclass, the image contract (float32 in [0, 1], resized
like tf.image.resize with antialiasing), augmentation that never flips the synthetic data, and
evaluation batches that come out the same every time.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.training import config as config_lib

from conftest import SMOKE

TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 8, 4


@pytest.fixture(scope="module")
def builder(smoke_data_dir):
  return prepare.prepare_dataset(SMOKE, data_dir=smoke_data_dir)


@pytest.fixture(scope="module")
def raw(builder):
  """split -> file_name -> the stored example (uint8 image and label fields), read by TFDS."""
  out = {}
  for split in ("train", "validation"):
    ds = builder.as_dataset(split=split, shuffle_files=False)
    out[split] = {ex["file_name"].decode(): ex for ex in tfds.as_numpy(ds)}
  return out


def _examples(builder, split, training=False, **spec):
  """(images, targets, labels, superclasses, file names) of one pass, batches concatenated."""
  spec = pipeline.InputSpec(**{"batch_size": 16, "image_size": 16, "augment": "none", **spec})
  parts = []
  for images, targets, meta in tfds.as_numpy(
      pipeline.make_dataset(builder, split, spec, training=training, with_metadata=True)):
    parts.append((images, targets, meta["label"], meta["superclass"],
                  np.array([f.decode() for f in meta["file_name"]])))
  return tuple(np.concatenate(column) for column in zip(*parts))


@pytest.mark.parametrize("role,field", [("flat", "label"), ("generalist", "superclass")])
def test_targets_of_flat_and_generalist(builder, raw, role, field):
  """Flat learns the global `label`, the generalist the `superclass`, on every example."""
  h = builder.hierarchy
  _, targets, labels, supers, names = _examples(builder, "train", role=role)
  assert sorted(names) == sorted(raw["train"])  # every example once
  for target, label, sup, name in zip(targets, labels, supers, names):
    stored = raw["train"][name]
    assert target == stored[field], name
    assert (label, sup) == (stored["label"], stored["superclass"]), name
    assert sup == h.superclass_of[label], name
  expected = labels if role == "flat" else h.superclass_of[labels]
  np.testing.assert_array_equal(targets, expected)


@pytest.mark.parametrize("superclass", [0, 4])
@pytest.mark.parametrize("split,per_class", [("train", TRAIN_PER_CLASS),
                                             ("validation", VALIDATION_PER_CLASS)])
def test_specialist_reads_exactly_its_superclass(builder, raw, superclass, split, per_class):
  """A specialist's pipeline holds all of its superclass's examples and nothing else, with the
  subclass index within the superclass as target (what its softmax head predicts)."""
  h = builder.hierarchy
  span = h.subclass_range(superclass)  # polygon: 0..3 (4 subclasses), dots: 16..20 (5)
  assert len(span) == (4 if superclass == 0 else 5)
  _, targets, labels, supers, names = _examples(builder, split, training=(split == "train"),
                                                role="specialist", superclass=superclass)
  mine = sorted(n for n, ex in raw[split].items() if ex["superclass"] == superclass)
  assert len(mine) == len(span) * per_class
  assert sorted(names) == mine
  assert (supers == superclass).all()
  np.testing.assert_array_equal(targets, labels - span.start)  # e.g. five_dots (19) -> 3
  for target, name in zip(targets, names):
    assert target == raw[split][name]["subclass"], name
  spec = pipeline.InputSpec(role="specialist", batch_size=16, image_size=16,
                            superclass=superclass)
  assert pipeline.num_examples(builder, split, superclass) == len(span) * per_class
  ds = pipeline.make_dataset(builder, split, spec, training=(split == "train"))
  assert int(ds.cardinality()) == -(-len(span) * per_class // 16)  # whole batches, last partial


def test_missing_superclass_is_refused(builder):
  spec = pipeline.InputSpec(role="specialist", batch_size=4, image_size=16, superclass=5)
  with pytest.raises(ValueError, match=r"superclass 5 does not exist .*0\.\.4"):
    pipeline.make_dataset(builder, "train", spec, training=False)


def test_images_are_float32_in_unit_range(builder, raw):
  """Model input: float32 [B, 16, 16, 3] in [0, 1], exactly the stored uint8 / 255."""
  spec = pipeline.InputSpec(role="flat", batch_size=16, image_size=16, augment="none")
  ds = pipeline.make_dataset(builder, "train", spec, training=False, with_metadata=True)
  sizes = []
  for images, _, meta in ds:
    assert images.dtype == tf.float32 and images.shape[1:] == (16, 16, 3)
    sizes.append(int(images.shape[0]))
    images = images.numpy()
    assert images.min() >= 0.0 and images.max() <= 1.0
    for image, name in zip(images, meta["file_name"].numpy()):
      stored = raw["train"][name.decode()]["image"]
      np.testing.assert_array_equal(image, stored.astype(np.float32) / np.float32(255))
  assert sizes == [16] * 10 + [8]  # 21 subclasses x 8 = 168 = 10 x 16 + 8


@pytest.mark.parametrize("size", [24, 8])
def test_other_image_size_is_resized_like_tf_image_resize(builder, raw, size):
  """--image_size other than the stored one: bilinear with antialiasing, rounded to uint8."""
  images, _, _, _, names = _examples(builder, "validation", role="flat", image_size=size)
  assert images.shape == (21 * VALIDATION_PER_CLASS, size, size, 3)
  for image, name in zip(images, names):
    stored = raw["validation"][name]["image"]
    resized = tf.image.resize(stored, (size, size), method="bilinear", antialias=True).numpy()
    expected = np.clip(np.round(resized), 0, 255).astype(np.uint8).astype(np.float32) / 255
    np.testing.assert_array_equal(image, expected, err_msg=name)


def _translation(source, image, pad):
  """The (dx, dy) with image[y, x] = source[y + dy, x + dx] (0 outside), or None."""
  size = source.shape[0]
  padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
  for dy in range(-pad, pad + 1):
    for dx in range(-pad, pad + 1):
      if np.array_equal(padded[pad + dy:pad + dy + size, pad + dx:pad + dx + size], image):
        return dx, dy
  return None


@pytest.mark.parametrize("augment", ["crop", "flip_crop"])
def test_augmenter_translates_and_flips_only_with_flip_crop(augment):
  """"crop" translates by up to 1/8 of the side with zero fill and never mirrors (the synthetic
  classes differ by orientation); "flip_crop" also mirrors about half of the images."""
  tf.random.set_seed(0)
  rng = np.random.default_rng(0)
  sources = rng.integers(1, 256, (64, 16, 16, 3)).astype(np.float32) / 255  # no symmetry
  spec = pipeline.InputSpec(role="flat", batch_size=64, image_size=16, augment=augment)
  out = pipeline._batch_augmenter(spec)(tf.constant(sources)).numpy()  # pylint: disable=protected-access
  shifts, mirrored = [], 0
  for source, image in zip(sources, out):
    shift = _translation(source, image, pad=2)  # 16 // 8
    if shift is None:
      shift = _translation(source[:, ::-1], image, pad=2)
      mirrored += 1
    assert shift is not None, "neither a translation nor a mirrored translation"
    shifts.append(shift)
  if augment == "crop":
    assert mirrored == 0
  else:
    assert 16 <= mirrored <= 48  # p = 1/2 each; outside this range: p < 1e-4
  assert len(set(shifts)) > 5  # one draw per image, not one per batch


def test_training_pipeline_applies_crop_to_the_smoke_data(builder, raw):
  """End to end: every training image of the synthetic default is a translated stored image."""
  tf.random.set_seed(0)
  images, _, _, _, names = _examples(builder, "train", training=True, role="flat",
                                     augment="crop")
  moved = 0
  for image, name in zip(images, names):
    source = raw["train"][name]["image"].astype(np.float32) / 255
    shift = _translation(source, image, pad=2)
    assert shift is not None, name
    moved += shift != (0, 0)
  assert moved > len(names) / 2  # 24 of the 25 shifts move the image


def test_default_augment_is_crop_for_synthetic_data_only(builder, tmp_path):
  """config.resolve fills the augmentation the dataset needs: no flips for synthetic data."""
  base = config_lib.TrainConfig(model_dir=str(tmp_path), dataset=SMOKE)
  assert config_lib.resolve(base, builder).augment == "crop"
  imagenet = tfds.builder("superclassed_imagenet/32x32", data_dir=str(tmp_path))
  resolved = config_lib.resolve(
      config_lib.TrainConfig(model_dir=str(tmp_path), dataset="superclassed_imagenet/32x32"),
      imagenet)
  assert (resolved.augment, resolved.image_size) == ("flip_crop", 32)
  flagged = config_lib.TrainConfig(model_dir=str(tmp_path), dataset=SMOKE, augment="none")
  assert config_lib.resolve(flagged, builder).augment == "none"  # the flag wins


@pytest.mark.parametrize("cache_budget", [pipeline.DEFAULT_CACHE_BUDGET, 0])
def test_evaluation_pipeline_is_deterministic(builder, cache_budget):
  """Two passes over an evaluation pipeline give the same examples in the same order, even
  with augment set (evaluation never augments) -- predictions files line up with labels."""
  spec = pipeline.InputSpec(role="flat", batch_size=16, image_size=16, augment="flip_crop",
                            cache_budget=cache_budget)
  ds = pipeline.make_dataset(builder, "validation", spec, training=False, with_metadata=True)
  first, second = (list(tfds.as_numpy(ds)) for _ in range(2))
  assert len(first) == len(second) == 6  # 84 examples
  for (im1, t1, m1), (im2, t2, m2) in zip(first, second):
    np.testing.assert_array_equal(im1, im2)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(m1["file_name"], m2["file_name"])


def test_training_pipeline_reshuffles_each_epoch(builder):
  """Training gives every example once per epoch, in a new order each epoch."""
  spec = pipeline.InputSpec(role="flat", batch_size=16, image_size=16, augment="none")
  ds = pipeline.make_dataset(builder, "train", spec, training=True, with_metadata=True)
  orders = [np.concatenate([m["file_name"] for _, _, m in tfds.as_numpy(ds)]) for _ in range(2)]
  assert sorted(orders[0]) == sorted(orders[1]) and len(orders[0]) == 168
  assert list(orders[0]) != list(orders[1])
