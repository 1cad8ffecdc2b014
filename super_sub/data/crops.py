"""Encoded image -> uint8 model-size crop: the crops of the input pipeline.

  center_crop    decode only the central square `images.center_crop_box` names, resize it
                 (evaluation of large natural images)
  random_crop    Inception's random-resized crop for training on large natural images: a box
                 of 8-100% of the area with aspect ratio 3/4-4/3, sampled on the encoded
                 image's shape, only that box decoded, resized (bilinear, not antialiased),
                 flipped left-right half the time

For JPEG bytes the crops decode only their box (`tf.io.decode_and_crop_jpeg`), which is what
makes full-size ImageNet affordable; other formats are decoded whole, then cropped. The center
crop's resize follows super_sub.data.images' contract (bilinear, antialiased), so `center_crop`
here and `images.load_images(framing="center_crop")` in the runtime see the same pixels (to a
few grey levels: Pillow decodes the whole file, libjpeg's colour upsampling at a box's edge
differs).
"""

from __future__ import annotations

import tensorflow as tf

from super_sub.data import images as images_lib

AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
_MAX_ATTEMPTS = 10
# libjpeg's accurate integer IDCT, the one Pillow (the runtime) uses; TF's default is the fast
# one, a grey level or so off.
_DCT_METHOD = "INTEGER_ACCURATE"


def crop(image_bytes: tf.Tensor, kind: str, image_size: int, channels: int,
         seed: tf.Tensor | None = None) -> tf.Tensor:
  """uint8 [image_size, image_size, channels]: the `kind` ("center_crop" or "random_crop")
  crop of one encoded image, resized. `seed`: a [2] seed that makes a random crop and its flip
  stateless (the same seed, the same crop); None: stateful draws."""
  shape = _shape(image_bytes, channels)
  if kind == "center_crop":
    window = tf.stack(center_crop_window(shape))
  elif kind == "random_crop":
    window = random_crop_window(shape, seed)
  else:
    raise ValueError(f"crop kind must be center_crop or random_crop; got {kind!r}")
  image = _decode_window(image_bytes, window, channels)
  if kind == "center_crop":
    return resize(image, image_size)
  # Training crops skip antialiasing, as Model Garden's ImageNet input does: the antialiased
  # resize cost more than the crop's decoding, and the crop's random scale already varies
  # what a pixel covers. Evaluation keeps the contract's resize, so the runtime sees the same
  # pixels.
  image = resize(image, image_size, antialias=False)
  if seed is None:
    return tf.image.random_flip_left_right(image)
  return tf.image.stateless_random_flip_left_right(image, seed[::-1])


def center_crop_window(shape: tf.Tensor) -> tuple[tf.Tensor, ...]:
  """(top, left, height, width) of the center crop of an image of `shape` [H, W, ...]."""
  top, left, side = images_lib.center_crop_box(shape[0], shape[1])
  return top, left, side, side


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
  """[top, left, height, width] of a random-resized crop of an image of `shape` [H, W, C]:
  `AREA_RANGE` of the area, aspect ratio in `ASPECT_RATIO_RANGE` (Szegedy et al. 2015);
  the center crop when ten draws find no such box (as Model Garden's ImageNet input does).
  `seed`: a [2] seed of a stateless draw; None: a stateful one."""
  options = dict(bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
                 min_object_covered=AREA_RANGE[0], aspect_ratio_range=ASPECT_RATIO_RANGE,
                 area_range=AREA_RANGE, max_attempts=_MAX_ATTEMPTS,
                 use_image_if_no_bounding_boxes=True)
  if seed is None:
    begin, size, _ = tf.image.sample_distorted_bounding_box(shape, **options)
  else:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(shape, seed=seed,
                                                                       **options)
  sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
  failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))  # the sampler's "no box found"
  return tf.where(failed, tf.stack(center_crop_window(shape)), sampled)


def decode(image_bytes: tf.Tensor, shape) -> tf.Tensor:
  """The whole uint8 image of any format TensorFlow decodes, with `shape` [H, W, C] (H and W
  may be None; C is the channel count to decode to)."""
  image = tf.io.decode_image(image_bytes, channels=shape[-1], expand_animations=False)
  return tf.ensure_shape(image, shape)


def _shape(image_bytes, channels):
  """[H, W, C] of an encoded image, from the JPEG header alone when it is a JPEG."""
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.image.extract_jpeg_shape(image_bytes),
                 lambda: tf.shape(decode(image_bytes, (None, None, channels))))


def _decode_window(image_bytes, window, channels):
  """The `window` [top, left, height, width] of an encoded image, decoding only that box of a
  JPEG."""
  def crop_whole():
    return tf.image.crop_to_bounding_box(decode(image_bytes, (None, None, channels)),
                                         *tf.unstack(window))
  image = tf.cond(tf.io.is_jpeg(image_bytes),
                  lambda: tf.io.decode_and_crop_jpeg(image_bytes, window, channels=channels,
                                                     dct_method=_DCT_METHOD),
                  crop_whole)
  return tf.ensure_shape(image, [None, None, channels])


def resize(image: tf.Tensor, image_size: int,
           antialias: bool = images_lib.RESIZE_ANTIALIAS) -> tf.Tensor:
  """A uint8 image [H, W, C] resized to image_size x image_size by the contract's method
  (`antialias=False` only for training crops); returned as it is when its static shape
  already has that size."""
  if image.shape[0] == image_size and image.shape[1] == image_size:
    return image
  image = tf.image.resize(image, (image_size, image_size), method=images_lib.RESIZE_METHOD,
                          antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
