"""Large natural images: the crops of super_sub.data.crops and the pipeline that reads
ImageNet-shaped data (superclassed_imagenet/full built from dummy_data/, JPEGs of varying size).

Geometry against hand-computed boxes; decoding only a box equal to decoding everything and
cropping; the runtime's center crop seeing the pipeline's pixels; a specialist that never
decodes another superclass's image; the cache budget; superclass counts from metadata.
"""

import os

from etils import epath
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from super_sub.data import crops
from super_sub.data import images as images_lib
from super_sub.data import pipeline
from super_sub.data import prepare
from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder as sib
from super_sub.training import config as config_lib

from conftest import SMOKE

DUMMY = epath.Path(sib.__file__).parent / "dummy_data" / "extracted"


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  """superclassed_imagenet/full on the dummy ILSVRC2012 tree: 7 train, 4 validation JPEGs."""
  builder = sib.Builder(data_dir=str(tmp_path_factory.mktemp("tfds")), config="full")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY)))
  return builder


def _stored_jpegs(builder, split):
  """file_name -> (stored JPEG bytes, superclass) of a split."""
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return {ex["file_name"].decode(): (ex["image"], int(ex["superclass"]))
          for ex in tfds.as_numpy(ds)}


# --- geometry --------------------------------------------------------------------------------
@pytest.mark.parametrize("height,width,box", [
    # 7/8 of 375 = 328.1 -> 329 (rounded up); margins 46 -> 23 top, 171 -> 86 left.
    (375, 500, (23, 86, 329)),
    (500, 375, (86, 23, 329)),
    (224, 224, (14, 14, 196)),  # 7/8 of 224 = 196 exactly; margins 28 -> 14 each side
    (8, 9, (1, 1, 7)),          # margins 1 and 2 -> the odd pixel to the top, 1 left
    (1, 100, (0, 50, 1)),       # never an empty box
])
def test_center_crop_box(height, width, box):
  assert images_lib.center_crop_box(height, width) == box
  # The same function on int32 tensors, as the input pipeline calls it.
  got = images_lib.center_crop_box(tf.constant(height), tf.constant(width))
  assert tuple(int(v) for v in got) == box


def test_random_crop_windows_cover_8_to_100_percent_with_aspect_3_4_to_4_3():
  tf.random.set_seed(0)
  shape = tf.constant([375, 500, 3])
  windows = np.array([crops.random_crop_window(shape).numpy() for _ in range(300)])
  top, left, height, width = windows.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 375).all() and (left + width <= 500).all()
  area = height * width / (375 * 500)
  aspect = width / height
  assert area.min() >= 0.08 - 0.005 and area.max() <= 1.0
  # The sampler rounds sides to whole pixels: a pixel of slack on the ratio.
  assert (aspect >= 3 / 4 * (1 - 2 / height)).all() and (aspect <= 4 / 3 * (1 + 2 / height)).all()
  # The whole range is used, and boxes move around.
  assert area.min() < 0.2 and area.max() > 0.8
  assert len({(t, l) for t, l in zip(top, left)}) > 250


def test_random_crop_falls_back_to_the_center_crop_when_no_box_fits():
  # A 2 x 400 strip has no box of >= 8% of its area with aspect ratio 3/4-4/3.
  window = crops.random_crop_window(tf.constant([2, 400, 3])).numpy()
  assert tuple(window) == (0, 199, 2, 2) == (*images_lib.center_crop_box(2, 400)[:2], 2, 2)


# --- pixels ----------------------------------------------------------------------------------
def test_decoding_only_the_box_equals_decoding_all_then_cropping(imagenet):
  """Pixel for pixel, except that libjpeg upsamples the colour of a box's first and last
  column from its decoded neighbours only: a few grey levels there (measured: <= 8)."""
  for name, (jpeg, _) in _stored_jpegs(imagenet, "train").items():
    whole = tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    height, width = whole.shape[:2]
    for top, left, h, w in [(0, 0, height, width), (height // 3, width // 5, height // 2, 17),
                            (*images_lib.center_crop_box(height, width)[:2],
                             *images_lib.center_crop_box(height, width)[2:] * 2)]:
      box = crops._decode_window(tf.constant(jpeg), tf.constant([top, left, h, w]), 3)  # pylint: disable=protected-access
      want = whole[top:top + h, left:left + w]
      np.testing.assert_array_equal(box.numpy()[:, 1:-1], want[:, 1:-1], name)
      assert np.abs(box.numpy().astype(int) - want).max() <= 8, name


def test_png_bytes_are_cropped_after_a_whole_decode():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 40, 3), np.uint8)
  png = tf.io.encode_png(image)
  np.testing.assert_array_equal(crops.crop(png, "center_crop", 27, 3).numpy(),
                                image[2:29, 7:34])  # box (2, 7, 27): already 27 px, no resize


def test_runtime_center_crop_sees_the_pipeline_pixels(imagenet, tmp_path):
  """A bundle's runtime frames image files as evaluation framed the dataset's images."""
  spec = pipeline.InputSpec(role="flat", batch_size=8, image_size=32, augment="none",
                            framing="center_crop")
  ds = pipeline.make_dataset(imagenet, "validation", spec, training=False, with_metadata=True)
  stored = _stored_jpegs(imagenet, "validation")
  for images, _, meta in tfds.as_numpy(ds):
    for image, name in zip(images, meta["file_name"]):
      path = tmp_path / name.decode()
      path.write_bytes(stored[name.decode()][0])
      runtime = images_lib.load_images([path], (32, 32, 3), framing="center_crop")[0]
      # Pillow decodes the whole file, the pipeline only the box (its edge columns' colour
      # differs by a few grey levels, see above); the two resizes agree to a grey level.
      error = np.abs(runtime.astype(int) - np.round(image * 255))
      assert error.max() <= 8 and error.mean() <= 0.5, name


def test_load_images_refuses_an_unknown_framing(tmp_path):
  with pytest.raises(ValueError, match=r"framing must be one of \('resize', 'center_crop'\)"):
    images_lib.load_images([], (8, 8, 3), framing="squash")


# --- the pipeline on large images ------------------------------------------------------------
def test_training_takes_random_crops_evaluation_the_center(imagenet):
  spec = dict(role="flat", batch_size=8, image_size=32, augment="random_resized_crop",
              framing="center_crop")
  tf.random.set_seed(0)
  train = pipeline.make_dataset(imagenet, "train", pipeline.InputSpec(**spec), training=True,
                                with_metadata=True)
  epochs = [{n: im for im, n in zip(*[np.concatenate(c) for c in zip(
      *[(x, m["file_name"]) for x, _, m in tfds.as_numpy(train)])])} for _ in range(2)]
  assert sorted(n.decode() for n in epochs[0]) == sorted(_stored_jpegs(imagenet, "train"))
  assert all(image.shape == (32, 32, 3) for image in epochs[0].values())
  # Fresh crops every epoch; evaluation the same center crop every time.
  assert sum(not np.array_equal(epochs[0][n], epochs[1][n]) for n in epochs[0]) >= 6
  evaluation = pipeline.make_dataset(imagenet, "validation", pipeline.InputSpec(**spec),
                                     training=False)
  first, second = ([x for x, _ in tfds.as_numpy(evaluation)] for _ in range(2))
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


@pytest.mark.parametrize("augment", ["random_resized_crop", "none"])
def test_a_specialist_decodes_only_its_own_images(imagenet, monkeypatch, augment):
  """Every image is decoded by crops.decode (whole) or crops._decode_window (a box): count
  their runs while a specialist reads one epoch, streaming."""
  decoded = []

  def counting(decoder):
    def decode(*args):
      image = decoder(*args)
      def count(x):
        decoded.append(1)
        return x
      return tf.ensure_shape(tf.py_function(count, [image], tf.uint8), image.shape)
    return decode

  monkeypatch.setattr(crops, "decode", counting(crops.decode))
  monkeypatch.setattr(crops, "_decode_window", counting(crops._decode_window))  # pylint: disable=protected-access
  counts = pipeline.superclass_counts(imagenet, "train")
  assert sum(counts) == 7
  for k in np.flatnonzero(counts):
    decoded.clear()
    spec = pipeline.InputSpec(role="specialist", superclass=int(k), batch_size=4, image_size=32,
                              augment=augment, cache_budget=0)
    got = sum(len(x) for x, _ in tfds.as_numpy(
        pipeline.make_dataset(imagenet, "train", spec, training=True)))
    assert got == len(decoded) == counts[k]


# --- counts and the cache --------------------------------------------------------------------
def test_superclass_counts_come_from_metadata_or_one_label_pass(imagenet):
  stored = _stored_jpegs(imagenet, "train")
  expected = np.bincount([s for _, s in stored.values()],
                         minlength=imagenet.info.features["superclass"].num_classes)
  assert list(imagenet.info.metadata["superclass_counts"]["train"]) == expected.tolist()
  # Data prepared before builders recorded counts: one pass over the labels.
  older = tfds.builder_from_directory(os.fspath(imagenet.data_dir))
  del older.info.metadata["superclass_counts"]
  assert pipeline.superclass_counts(older, "train") == tuple(expected.tolist())


def test_cache_decoded_images_within_the_budget_else_encoded_ones(smoke_data_dir):
  builder = prepare.prepare_dataset(SMOKE, data_dir=smoke_data_dir)
  decoded = 168 * 64 * 64 * 3  # the smoke train split resized to 64 px
  encoded = builder.info.splits["train"].num_bytes  # its 16-px PNGs and labels
  assert encoded < decoded
  spec = lambda **kw: pipeline.InputSpec(**{"role": "flat", "batch_size": 8, "image_size": 64,
                                            **kw})
  stage = lambda s, training=True: pipeline.cache_stage(builder, "train", s, training)
  assert stage(spec(cache_budget=decoded)) == "decoded"
  assert stage(spec(cache_budget=decoded - 1)) == "encoded"
  assert stage(spec(cache_budget=encoded)) == "encoded"
  assert stage(spec(cache_budget=encoded - 1)) is None
  assert stage(spec(cache_budget=0)) is None
  # A specialist needs room for its own images only: superclass 4 has 40 of the 168.
  assert stage(spec(role="specialist", superclass=4, cache_budget=40 * 64 * 64 * 3)) == "decoded"
  # Random crops differ every epoch: never a decoded cache in training.
  crops_spec = spec(augment="random_resized_crop", cache_budget=decoded)
  assert stage(crops_spec) == "encoded"
  assert stage(crops_spec, training=False) == "decoded"


@pytest.mark.parametrize("dataset,augment", [
    (SMOKE, "crop"),  # classes that differ by orientation: never flipped
    ("superclassed_fashion_mnist", "flip_crop"),
    ("superclassed_imagenet/32x32", "flip_crop"),
    ("superclassed_imagenet/128x128", "random_resized_crop"),
    ("superclassed_imagenet/full", "random_resized_crop"),
])
def test_default_augmentation_follows_the_kind_of_data(dataset, augment, tmp_path):
  builder = tfds.builder(dataset, data_dir=str(tmp_path))
  assert config_lib.default_augmentation(builder) == augment
  config = config_lib.TrainConfig(model_dir=str(tmp_path), dataset=dataset, augment=augment)
  assert config.framing == ("center_crop" if augment == "random_resized_crop" else "resize")


# --- a user's dataset with an image that does not decode -------------------------------------
def test_an_undecodable_image_is_named(tmp_path):
  """A user's own TFDS data may hold an image that does not decode: the pipeline's op error
  says nothing of which; find_undecodable names the file (fit raises that on a failed epoch)."""
  import io  # pylint: disable=import-outside-toplevel
  from super_sub.data import features  # pylint: disable=import-outside-toplevel
  from super_sub.data import synthetic  # pylint: disable=import-outside-toplevel
  h = synthetic.load_hierarchy()
  good = tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy()
  examples = [(name, {"image": io.BytesIO(data), "file_name": name, **features.labels(h, label)})
              for data, name, label in ((good, "fine.png", 0),
                                        (b"\x89PNG\r\n\x1a\n truncated", "broken.png", 5),
                                        (good, "also_fine.png", 7))]
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="users_own", version="1.0.0", data_dir=str(tmp_path),
      features=features.features(h, tfds.features.Image(shape=(16, 16, 3))),
      split_datasets={"train": examples}, disable_shuffling=True)
  with pytest.raises(tf.errors.InvalidArgumentError):
    list(builder.as_dataset(split="train"))
  error = pipeline.find_undecodable(builder, "train")
  assert isinstance(error, pipeline.UndecodableImageError)
  assert "users_own/1.0.0, split 'train': image 'broken.png' does not decode" in str(error)
  assert pipeline.find_undecodable(builder, "train", superclass=h.superclass_of[0]) is None
  # Training turns the op error into that one (and re-raises other op errors untouched).
  import types  # pylint: disable=import-outside-toplevel
  from super_sub.training import fit  # pylint: disable=import-outside-toplevel
  from super_sub.training import run as run_lib  # pylint: disable=import-outside-toplevel
  run = types.SimpleNamespace(config=types.SimpleNamespace(dustbin=0.0), builder=builder,
                              evaluation_split="train")
  with pytest.raises(pipeline.UndecodableImageError, match="image 'broken.png' does not decode"):
    with fit._naming_undecodable_images(run, run_lib.FLAT):  # pylint: disable=protected-access
      list(builder.as_dataset(split="train"))
  with pytest.raises(tf.errors.InvalidArgumentError, match="something else"):
    with fit._naming_undecodable_images(run, run_lib.specialist(0)):  # pylint: disable=protected-access
      raise tf.errors.InvalidArgumentError(None, None, "something else")
