"""Image files -> the uint8 [N, H, W, C] batch a bundle's models take (Pillow, no TensorFlow)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

_MODES = {1: "L", 3: "RGB"}


class ImageError(ValueError):
  """An image file that cannot be read or decoded; the message names the file."""


def load_images(paths: Sequence[str | os.PathLike], shape: Sequence[int]) -> np.ndarray:
  """Decodes image files, converts them to the models' channels and resizes them.

  Images are converted to grayscale ("L") for C == 1 or RGB for C == 3 (alpha is dropped), then
  resized to H x W with bilinear filtering, which Pillow antialiases when shrinking, as the
  training pipeline's `tf.image.resize(..., antialias=True)` does.

  Args:
    paths: image files in any format Pillow decodes (JPEG, PNG, BMP, GIF's first frame, ...).
    shape: (H, W, C) of the bundle's input, C 1 or 3.

  Returns:
    uint8 array [len(paths), H, W, C]; TwoStageLite.predict divides it by 255.

  Raises:
    ImageError: naming the file, when it is missing, unreadable or does not decode.
    ValueError: a shape whose channel count is not 1 or 3.
  """
  height, width, channels = (int(d) for d in shape)
  if channels not in _MODES:
    raise ValueError(f"images can be loaded as 1 (grayscale) or 3 (RGB) channels; the shape "
                     f"asks for {channels}")
  out = np.zeros((len(paths), height, width, channels), np.uint8)
  for i, path in enumerate(paths):
    try:
      with Image.open(path) as img:
        img = img.convert(_MODES[channels])  # decodes the whole file: errors surface here
    except FileNotFoundError:
      raise ImageError(f"{os.fspath(path)}: no such image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
      # Pillow reports undecodable data as UnidentifiedImageError (an OSError), truncated data
      # as OSError, and some corrupt headers as ValueError or SyntaxError.
      raise ImageError(f"{os.fspath(path)}: cannot decode as an image ({e})") from None
    if img.size != (width, height):
      img = img.resize((width, height), Image.Resampling.BILINEAR)
    out[i] = np.asarray(img, np.uint8).reshape(height, width, channels)
  return out
