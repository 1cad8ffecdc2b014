"""How builders store an image: sniffed by content, kept as it is or re-encoded in one format.

Every builder that reads user files (superclassed_imagenet, superclassed_folder) stores them
through `reencode`, so a CMYK JPEG, a PNG named .JPEG, a palette GIF or a 16-bit TIFF all end
up in the one encoding the dataset declares, and an undecodable file stops the build with
its path instead of failing later in training.
"""

from __future__ import annotations

import io

from absl import logging
from PIL import Image

from super_sub.data import sources

JPEG_QUALITY = 95
FORMATS = ("jpeg", "png")
# The modes TensorFlow's decoders read as they are (any channel count is converted on decode).
_PLAIN_MODES = ("RGB", "L")
# Pillow's names of the formats that are already in a target encoding (MPO: a JPEG with extras).
_PIL_FORMATS = {"jpeg": ("JPEG", "MPO"), "png": ("PNG",)}


class UndecodableFileError(sources.DatasetError):
  """A source image a builder cannot store: it does not decode (the message names it)."""


def reencode(data: bytes, where: str, encoding: str = "jpeg", channels: int = 3,
             size: int | None = None) -> tuple[bytes, bool]:
  """Decodes `data` fully; returns (bytes in `encoding`, whether the file was odd).

  An RGB or grayscale file already in `encoding` is kept byte for byte when `size` is None;
  anything else that decodes (CMYK JPEGs, PNGs named .JPEG, palette, alpha or 16-bit images,
  BMP, GIF's first frame, WebP, TIFF, ...) is odd and is converted to RGB (grayscale for
  `channels` 1; alpha is dropped) and re-encoded. This sniffs the content (Pillow reads the
  magic bytes and the colour space) rather than trusting file names.

  Args:
    data: the file's bytes.
    where: the file, as error messages and logs name it.
    encoding: "jpeg" (quality 95) or "png" (lossless).
    channels: 3 (RGB) or 1 (grayscale), what re-encoded images are converted to.
    size: None keeps the image's size; S resizes its shorter side to S (bicubic) and
      center-crops S x S.

  Raises:
    UndecodableFileError: naming `where`, when the image cannot be decoded.
  """
  if encoding not in FORMATS or channels not in (1, 3):
    raise ValueError(f"encoding must be one of {FORMATS} and channels 1 or 3; got "
                     f"{encoding!r}, {channels}")
  try:
    with Image.open(io.BytesIO(data)) as image:
      if size:
        image.draft("RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale, still >= size.
      image.load()  # Decodes everything, so truncated files fail here, not in training.
      odd = not (image.format in _PIL_FORMATS[encoding] and image.mode in _PLAIN_MODES)
      if odd:
        logging.info("re-encoding %s (%s, %s) as %s %s.", where, image.format, image.mode,
                     "grayscale" if channels == 1 else "RGB", encoding.upper())
      elif not size:
        return data, False
      image = image.convert("L" if channels == 1 else "RGB")
      if size:
        image = _resize_and_center_crop(image, size)
      out = io.BytesIO()
      if encoding == "jpeg":
        image.save(out, "JPEG", quality=JPEG_QUALITY)
      else:
        image.save(out, "PNG")
      return out.getvalue(), odd
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types.
    raise UndecodableFileError(f"cannot decode image {where}: {type(e).__name__}: {e}; remove "
                               "or replace the file") from e


def _resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Scales the shorter side to `size` (bicubic, antialiased), then crops the center."""
  w, h = image.size
  scale = size / min(w, h)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return image.crop((left, top, left + size, top + size))
