"""The image contract (super_sub.data.images): one dtype and range, one resize method for
training (TensorFlow) and the runtime (Pillow)."""

import numpy as np
import pytest

from super_sub.data import images as images_lib


def test_to_model_input_divides_uint8_and_keeps_floats():
  out = images_lib.to_model_input(np.full((2, 3, 3, 1), 255, np.uint8), (3, 3, 1))
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, 1.0)
  floats = np.full((1, 3, 3, 1), 0.25, np.float64)
  np.testing.assert_array_equal(images_lib.to_model_input(floats, (3, 3, 1)), 0.25)


def test_to_model_input_refusals_name_the_problem():
  with pytest.raises(ValueError, match=r"shape \(N, 4, 4, 3\).*got \(2, 4, 4, 1\).*3-channel"):
    images_lib.to_model_input(np.zeros((2, 4, 4, 1), np.uint8), (4, 4, 3))
  with pytest.raises(TypeError, match="uint8 or floating point.*got int32"):
    images_lib.to_model_input(np.zeros((2, 4, 4, 3), np.int32), (4, 4, 3))


def test_tf_and_pillow_resize_the_same_way():
  """Training resizes with tf.image.resize, the runtime with Pillow: the contract's method
  (bilinear, antialiased when shrinking) must give the same pixels to within rounding."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  # Smooth content (a blurred random field), as photographs are, plus an edge.
  image = rng.integers(0, 256, (96, 80, 3)).astype(np.float32)
  image = tf.nn.avg_pool2d(image[None], 5, 1, "SAME")[0].numpy()
  image[:, 40:] += 60
  image = np.clip(image, 0, 255).astype(np.uint8)
  for size in ((32, 32), (48, 40), (24, 60), (128, 112)):
    ours = images_lib.resize(image, size).astype(int)
    theirs = tf.image.resize(image, size, method=images_lib.RESIZE_METHOD,
                             antialias=images_lib.RESIZE_ANTIALIAS)
    theirs = np.clip(np.round(theirs.numpy()), 0, 255).astype(int)
    diff = np.abs(ours - theirs)
    assert diff.mean() < 0.3 and diff.max() <= 1, (size, diff.mean(), diff.max())


def test_load_images_resizes_by_the_contract(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(1).integers(0, 256, (20, 30, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / "x.png")
  loaded = images_lib.load_images([tmp_path / "x.png"], (10, 15, 3))
  np.testing.assert_array_equal(loaded[0], images_lib.resize(pixels, (10, 15)))
