"""Writes superclassed_imagenet's dummy_data/: a tiny fake ILSVRC2012 in both supported layouts.

  cd /work/main && .venv/bin/python datasets/superclassed_imagenet/make_dummy_data.py

Deterministic (fixed pictures, tar mtimes and owners). The same files appear in
`archives/` (the official tars) and `extracted/` (train/<wnid>/, val/<wnid>/ plus one
flat val file), and include the odd files the builder must handle: a CMYK JPEG, a PNG
named .JPEG, a grayscale JPEG, a class outside the hierarchy (tench), and validation
files with scattered numbers, so their labels can only come from their names.
`broken/` holds one undecodable image per layout, for the error tests.
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import tarfile

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent / "dummy_data"

# (wnid, file name, (width, height), colour, kind); kind: rgb | gray | cmyk | png.
TRAIN = [
    ("n01440764", "n01440764_10026.JPEG", (64, 48), (40, 90, 160), "rgb"),  # tench: skipped
    ("n01530575", "n01530575_10018.JPEG", (80, 60), (190, 120, 60), "rgb"),
    ("n01530575", "n01530575_10086.JPEG", (60, 80), (200, 30, 30), "cmyk"),
    ("n01531178", "n01531178_1001.JPEG", (72, 72), (120, 120, 120), "gray"),
    ("n02085620", "n02085620_1073.JPEG", (96, 64), (150, 100, 70), "rgb"),
    ("n02085620", "n02085620_10074.JPEG", (64, 80), (30, 160, 60), "png"),
    ("n13037406", "n13037406_10.JPEG", (70, 90), (110, 70, 50), "rgb"),
    ("n13037406", "n13037406_11.JPEG", (90, 70), (90, 60, 40), "rgb"),
]
# Validation numbers and their wnids in TFDS's imagenet2012 validation_labels.txt (line k
# labels ILSVRC2012_val_%08d.JPEG % k). Listed out of order on purpose.
VAL = [
    (1049, "n02085620", (80, 64), (160, 110, 80)),
    (293, "n01440764", (64, 64), (50, 100, 170)),  # tench: skipped
    (651, "n01530575", (64, 96), (180, 130, 70)),
    (200, "n13037406", (72, 60), (100, 60, 40)),
    (2917, "n02085620", (60, 72), (140, 90, 60)),
]
FLAT_VAL = {2917}  # extracted/ keeps this one unsorted, directly in val/.

# Swapping the hierarchy: keeps tench, regroups the finches, drops gyromitra.
CUSTOM_HIERARCHY = {
    "name": "dummy_custom",
    "num_source_labels": 1000,
    "superclasses": [
        {"name": "fish", "wnid": None, "subclasses": [
            {"name": "tench", "wnid": "n01440764", "source_label": 0}]},
        {"name": "finch", "wnid": None, "subclasses": [
            {"name": "goldfinch", "wnid": "n01531178", "source_label": 11},
            {"name": "brambling", "wnid": "n01530575", "source_label": 10}]},
        {"name": "toy_dog", "wnid": None, "subclasses": [
            {"name": "Chihuahua", "wnid": "n02085620", "source_label": 151}]},
    ],
}


def picture(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
  """A smooth, deterministic test picture: `colour` shaded by a diagonal ramp and a disc."""
  w, h = size
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  ramp = 0.6 + 0.4 * (x / w + y / h) / 2
  disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2) < (min(w, h) / 4) ** 2
  pixels = np.asarray(colour, np.float32) * ramp[..., None]
  pixels[disc] = 255 - pixels[disc]
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(size: tuple[int, int], colour: tuple[int, int, int], kind: str = "rgb") -> bytes:
  image = picture(size, colour)
  out = io.BytesIO()
  if kind == "png":
    image.save(out, "PNG")
  else:
    image = {"rgb": image, "gray": image.convert("L"), "cmyk": image.convert("CMYK")}[kind]
    image.save(out, "JPEG", quality=75)
  return out.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size, info.mtime, info.mode = len(data), 0, 0o644
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


def write(path: pathlib.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def main() -> None:
  if ROOT.exists():
    shutil.rmtree(ROOT)
  train = {name: (wnid, encode(size, colour, kind)) for wnid, name, size, colour, kind in TRAIN}
  val = {f"ILSVRC2012_val_{n:08d}.JPEG": (wnid, encode(size, colour))
         for n, wnid, size, colour in VAL}

  # (a) The official archives: one inner tar per synset; flat validation files.
  wnids = sorted({wnid for wnid, _ in train.values()})
  write(ROOT / "archives" / "ILSVRC2012_img_train.tar", tar_bytes([
      (f"{wnid}.tar", tar_bytes([(n, d) for n, (w, d) in train.items() if w == wnid]))
      for wnid in wnids]))
  write(ROOT / "archives" / "ILSVRC2012_img_val.tar",
        tar_bytes([(n, d) for n, (_, d) in val.items()]))

  # (b) An extracted tree, validation sorted into wnid folders except FLAT_VAL.
  for name, (wnid, data) in train.items():
    write(ROOT / "extracted" / "train" / wnid / name, data)
  for (n, *_), (name, (wnid, data)) in zip(VAL, val.items()):
    folder = ROOT / "extracted" / "val" / ("" if n in FLAT_VAL else wnid)
    write(folder / name, data)

  # Undecodable files: a truncated JPEG in an archive, a non-image in a folder.
  good = encode((64, 48), (190, 120, 60))
  write(ROOT / "broken" / "archives" / "ILSVRC2012_img_train.tar", tar_bytes([
      ("n01530575.tar", tar_bytes([("n01530575_1.JPEG", good),
                                   ("n01530575_666.JPEG", good[:len(good) // 2])]))]))
  write(ROOT / "broken" / "extracted" / "train" / "n02085620" / "n02085620_666.JPEG",
        b"<html>this is not an image</html>\n")

  (ROOT / "custom_hierarchy.json").write_text(json.dumps(CUSTOM_HIERARCHY, indent=1) + "\n")


if __name__ == "__main__":
  main()
