"""The image contract: what every super-sub model takes, and how images become that.

  dtype and range   float32 in [0, 1] (uint8 images are divided by 255), shape [N, H, W, C]
  resize            bilinear (a triangle filter), antialiased when shrinking: in TensorFlow
                    `tf.image.resize(method="bilinear", antialias=True)` (the input pipeline),
                    without it Pillow's `Image.Resampling.BILINEAR` (the runtime), which is the
                    same filter; the two agree to within one grey level (tested)
  framing           "resize": the whole image, squashed to H x W (small datasets, whose images
                    are stored at or near the model's size); "center_crop": the central square
                    whose side is 7/8 of the shorter side (`center_crop_box`), then resized:
                    the evaluation view of large natural images (ImageNet) trained on random
                    resized crops (super_sub.data.crops)

Training and evaluation (super_sub.data.pipeline), export calibration (super_sub.bundles) and
both routers (super_sub.routing, super_sub.runtime) take images through this module. Needs
only numpy and Pillow: no TensorFlow.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from super_sub.errors import SuperSubError

DTYPE = np.float32
RANGE = (0.0, 1.0)
RESIZE_METHOD = "bilinear"  # the `method` of tf.image.resize
RESIZE_ANTIALIAS = True     # tf.image.resize's `antialias`; Pillow always antialiases shrinking
FRAMINGS = ("resize", "center_crop")
# The center crop keeps 7/8 of the shorter side: resizing the shorter side to image_size / 0.875
# and cropping image_size, ResNet's and Inception's evaluation view, in integers.
CENTER_CROP_FRACTION = (7, 8)
# Stored images at least this large (or of varying size) are "large natural images": they train
# on random-resized crops and are evaluated on the center crop (`is_large`).
LARGE_IMAGES = 128
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR}
_MODES = {1: "L", 3: "RGB"}


class ImageError(SuperSubError, ValueError):
  """An image file that cannot be read or decoded; the message names the file.

  Attributes:
    path: the file.
    reason: what is wrong with it, without the file's name (a batch tool's per-file line).
  """

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path, self.reason = os.fspath(path), reason
    super().__init__(f"{self.path}: {reason}")

  def __reduce__(self):  # pickles with both arguments, not the joined message
    return type(self), (self.path, self.reason)


def center_crop_box(height, width):
  """(top, left, side) of the square that the "center_crop" framing keeps of a height x width
  image: side = 7/8 of the shorter side (rounded up, so never 0), centred (an odd leftover
  pixel goes to the top or left margin, as in Model Garden's center crop).

  Integer arithmetic only, so the same function gives the box for Python ints (the runtime) and
  for int32 tensors (the input pipeline).
  """
  shorter = (height + width - abs(height - width)) // 2
  numerator, denominator = CENTER_CROP_FRACTION
  side = shorter - shorter * (denominator - numerator) // denominator
  return (height - side + 1) // 2, (width - side + 1) // 2, side


def is_large(height: int | None, width: int | None) -> bool:
  """Whether images stored at `height` x `width` (None: sizes vary) are large natural images,
  the rule behind a dataset's default augmentation and framing (training.config) and the
  encoding a folder of images is stored in (super_sub.data.folders)."""
  return height is None or width is None or min(height, width) >= LARGE_IMAGES


def load_images(paths: Sequence[str | os.PathLike], shape: Sequence[int],
                framing: str = "resize") -> np.ndarray:
  """Decodes image files, converts them to the models' channels and frames them (`load_image`
  for each file).

  Args:
    paths: image files in any format Pillow decodes (JPEG, PNG, BMP, GIF's first frame, ...).
    shape: (H, W, C) of the bundle's input, C 1 or 3.
    framing: "resize" or "center_crop", as the bundle's manifest says its models were
      evaluated.

  Returns:
    uint8 array [len(paths), H, W, C]; `to_model_input` divides it by 255.

  Raises:
    ImageError: naming the first file that is missing, unreadable or does not decode (a batch
      tool that must answer the other files calls `load_image` per file instead).
    ValueError: a shape whose channel count is not 1 or 3.
  """
  height, width, channels = _check_shape(shape, framing)
  out = np.zeros((len(paths), height, width, channels), np.uint8)
  for i, path in enumerate(paths):
    out[i] = load_image(path, shape, framing)
  return out


def load_image(path: str | os.PathLike, shape: Sequence[int],
               framing: str = "resize") -> np.ndarray:
  """Decodes one image file as a uint8 [H, W, C] array, as `load_images` does for each file.

  Images are converted to grayscale ("L") for C == 1 or RGB for C == 3 (alpha is dropped),
  cropped to their central square for framing "center_crop" (`center_crop_box`), then resized
  to H x W by the contract's method (`resize`).

  Raises:
    ImageError: naming the file, when it is missing, unreadable or does not decode.
    ValueError: a shape whose channel count is not 1 or 3, or an unknown framing.
  """
  height, width, channels = _check_shape(shape, framing)
  try:
    with Image.open(path) as img:
      img = img.convert(_MODES[channels])  # decodes the whole file: errors surface here
  except FileNotFoundError:
    raise ImageError(path, "no such image file") from None
  except IsADirectoryError:
    raise ImageError(path, "is a folder, not an image file") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # Pillow reports undecodable data as UnidentifiedImageError (an OSError), truncated data
    # as OSError, and some corrupt headers as ValueError or SyntaxError.
    raise ImageError(path, f"cannot decode as an image ({e})") from None
  if framing == "center_crop":
    top, left, side = center_crop_box(img.height, img.width)
    img = img.crop((left, top, left + side, top + side))
  return np.asarray(_resize_pil(img, (height, width)), np.uint8).reshape(
      height, width, channels)


def _check_shape(shape: Sequence[int], framing: str) -> tuple[int, int, int]:
  height, width, channels = (int(d) for d in shape)
  if channels not in _MODES:
    raise ValueError(f"images can be loaded as 1 (grayscale) or 3 (RGB) channels; the shape "
                     f"asks for {channels}")
  if framing not in FRAMINGS:
    raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
  return height, width, channels


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """A uint8 image [H, W, C] (C 1 or 3) resized to `size` (height, width) by the contract's
  method; returned unchanged when it already has that size."""
  height, width = (int(d) for d in size)
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[2]
  img = _resize_pil(Image.fromarray(image[..., 0] if channels == 1 else image), (height, width))
  return np.asarray(img, np.uint8).reshape(height, width, channels)


def _resize_pil(img: Image.Image, size: Sequence[int]) -> Image.Image:
  """A decoded Pillow image resized to (height, width) by the contract's method."""
  height, width = size
  if img.size == (width, height):
    return img
  return img.resize((width, height), _PIL_FILTERS[RESIZE_METHOD])


def to_model_input(images, shape: Sequence[int | None]) -> np.ndarray:
  """Images as the models take them: float32 [N, *shape] in [0, 1].

  Args:
    images: array-like [N, H, W, C], uint8 (divided by 255) or floating point in [0, 1].
    shape: (H, W, C) the models take (None matches any size).

  Raises:
    ValueError: images of another shape, naming expected against got.
    TypeError: images that are neither uint8 nor floating point.
  """
  images = np.asarray(images)
  want = tuple(shape)
  if images.ndim != len(want) + 1 or any(
      w is not None and g != w for g, w in zip(images.shape[1:], want)):
    hint = ""
    if images.ndim == 4 and len(want) == 3 and images.shape[1:3] == want[:2]:
      hint = f" ({want[2]}-channel images expected, got {images.shape[3]} channels)"
    raise ValueError(f"images must have shape (N, {', '.join(map(str, want))}) to fit the "
                     f"models; got {images.shape}{hint}")
  if images.dtype == np.uint8:
    return images.astype(DTYPE) / DTYPE(255.0)
  if not np.issubdtype(images.dtype, np.floating):
    raise TypeError(f"images must be uint8 or floating point with values in [0, 1]; got "
                    f"{images.dtype}")
  return images.astype(DTYPE, copy=False)
