"""Procedural images for the offline default dataset `superclassed_synthetic`.

Each superclass is a shape family and its subclasses differ in one finer attribute
(number of polygon sides, stripe orientation, ...), so confusions between sibling
subclasses are easy to make and confusions across families are not: the same
structure the paper finds in ImageNet. Position, scale, a small rotation, colours
and background noise vary per image so that a network has to learn the shapes.
Needs only numpy; every image is a pure function of (seed, split, index).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from super_sub import hierarchy as hierarchy_lib

HIERARCHY_NAME = "superclassed_synthetic"
SPLIT_IDS = {"train": 0, "validation": 1}

# A renderer maps local shape coordinates (u, v), roughly within [-1, 1], to a
# boolean foreground mask.
Renderer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon(sides: int) -> Renderer:
  def render(u, v):
    r = np.hypot(u, v)
    theta = np.mod(np.arctan2(v, u) + math.pi / 2, 2 * math.pi / sides)
    return r <= math.cos(math.pi / sides) / np.cos(theta - math.pi / sides)
  return render


def _stripes(degrees: float) -> Renderer:
  phi = math.radians(degrees)
  def render(u, v):
    along = u * math.cos(phi) + v * math.sin(phi)
    return (np.hypot(u, v) <= 1.0) & (np.sin(2 * math.pi * 1.75 * along) > 0)
  return render


def _ellipse(rx: float, ry: float, hole: float = 0.0) -> Renderer:
  def render(u, v):
    r = np.hypot(u / rx, v / ry)
    return (r <= 1.0) & (r >= hole)
  return render


def _bars(*bars: tuple[float, float, float, float]) -> Renderer:
  """Union of axis-aligned rectangles given as (u0, u1, v0, v1)."""
  def render(u, v):
    mask = np.zeros(np.broadcast(u, v).shape, dtype=bool)
    for u0, u1, v0, v1 in bars:
      mask |= (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
    return mask
  return render


def _dots(count: int) -> Renderer:
  centres = [(0.62 * math.cos(2 * math.pi * k / count + math.pi / 2),
              0.62 * math.sin(2 * math.pi * k / count + math.pi / 2)) for k in range(count)]
  def render(u, v):
    mask = np.zeros(np.broadcast(u, v).shape, dtype=bool)
    for cu, cv in centres:
      mask |= np.hypot(u - cu, v - cv) <= 0.3
    return mask
  return render


_W = 0.22  # half-width of the bars of the cross family
# Subclass name -> renderer. The hierarchy file `hierarchies/superclassed_synthetic.json`
# groups these names into superclasses; a test checks that both agree.
RENDERERS: dict[str, Renderer] = {
    "triangle": _polygon(3),
    "square": _polygon(4),
    "pentagon": _polygon(5),
    "hexagon": _polygon(6),
    "stripes_0": _stripes(0),
    "stripes_45": _stripes(45),
    "stripes_90": _stripes(90),
    "stripes_135": _stripes(135),
    "disc": _ellipse(1.0, 1.0),
    "ring": _ellipse(1.0, 1.0, hole=0.55),
    "wide_ellipse": _ellipse(1.0, 0.5),
    "tall_ellipse": _ellipse(0.5, 1.0),
    "plus": _bars((-1, 1, -_W, _W), (-_W, _W, -1, 1)),
    "tee": _bars((-1, 1, -1, -1 + 2 * _W), (-_W, _W, -1, 1)),
    "ell": _bars((-1, -1 + 2 * _W, -1, 1), (-1, 1, 1 - 2 * _W, 1)),
    "bar_pair": _bars((-1, -1 + 2 * _W, -1, 1), (1 - 2 * _W, 1, -1, 1)),
    "two_dots": _dots(2),
    "three_dots": _dots(3),
    "four_dots": _dots(4),
    "five_dots": _dots(5),
    "six_dots": _dots(6),
}


def load_hierarchy() -> hierarchy_lib.Hierarchy:
  """The synthetic dataset's shipped hierarchy, checked against the renderers."""
  h = hierarchy_lib.load_hierarchy(HIERARCHY_NAME)
  missing = sorted(set(h.subclass_names) - set(RENDERERS))
  if missing:
    raise hierarchy_lib.HierarchyError(
        f"hierarchy {h.name!r} names subclasses with no renderer: {missing}; "
        f"known: {sorted(RENDERERS)}")
  return h


def render_image(subclass_name: str, rng: np.random.Generator, size: int) -> np.ndarray:
  """Draws one `size` x `size` RGB uint8 image of `subclass_name` with random nuisances."""
  scale = rng.uniform(0.45, 0.8) * size / 2            # shape radius in pixels
  cx, cy = rng.uniform(scale, size - scale, size=2)    # keep the shape inside the image
  angle = math.radians(rng.uniform(-12, 12))
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  du, dv = (xs - cx) / scale, (ys - cy) / scale
  u = du * math.cos(angle) + dv * math.sin(angle)
  v = -du * math.sin(angle) + dv * math.cos(angle)
  mask = RENDERERS[subclass_name](u, v)

  background = rng.uniform(0, 255, size=3)
  # Foreground far enough from the background in at least one channel to stay visible.
  foreground = rng.uniform(0, 255, size=3)
  channel = rng.integers(3)
  foreground[channel] = (background[channel] + rng.uniform(110, 145)) % 256
  image = np.where(mask[..., None], foreground, background)
  image = image + rng.normal(0, 18, size=image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def generate(split: str, examples_per_class: int, size: int = 32,
             seed: int = 0) -> Iterator[tuple[str, np.ndarray, int]]:
  """Yields (key, image, global label) for a split, classes interleaved.

  Example i of a split has label i % num_subclasses and its own random stream
  seeded by (seed, split, i), so any example can be reproduced on its own.
  """
  if split not in SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
  names = load_hierarchy().subclass_names
  for index in range(examples_per_class * len(names)):
    label = index % len(names)
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    yield f"{split}/{index:06d}.png", render_image(names[label], rng, size), label
