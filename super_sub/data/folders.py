"""Your own images as a dataset: a folder tree read into a plan of labelled files.

  <path>/<split>/<class>/<image>               flat layout: a --hierarchy maps class folders
                                               (by name or WordNet id); without one, every
                                               class goes in one superclass (the flat network)
  <path>/<split>/<superclass>/<class>/<image>  superclass layout: the folders are the hierarchy

with <split> one of train, validation (or val) and test, the layout of TFDS's and torchvision's
`ImageFolder` plus one level. `scan` checks the whole tree and reads only image headers, so a bad
tree is refused, with one message naming the problem and the fix, before anything is prepared;
the superclassed_folder builder (datasets/superclassed_folder/) then stores the plan's files.
Builders use `epath` (TFDS's test harness mocks it), never `os`; nothing in the user's folder
is ever written.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re

from etils import epath
from PIL import Image

from super_sub import hierarchy as hierarchy_lib
from super_sub.data import images as images_lib
from super_sub.data import sources

# TFDS split -> the folder names that hold it (one of them).
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UNMAPPED = ("error", "skip")
# Pillow modes that hold one grey channel; any other image makes the dataset RGB.
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
FLAT_SUPERCLASS = "all"


class FolderError(sources.DatasetError):
  """An image folder that cannot become a dataset; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a folder of images becomes.

  Attributes:
    root: the folder.
    hierarchy: the dataset's hierarchy (label = its global subclass index).
    splits: TFDS split -> [(path relative to root, label)], sorted by path.
    shape: (H, W, C) of the stored images; H and W are None when sizes vary.
    encoding: "jpeg" for large natural images (images.is_large: their random-resized crops
      decode only the box), else "png" (lossless, as the other small datasets store).
    skipped: class folder -> images left out (not in the hierarchy, --unmapped_labels=skip).
    notes: lines for the build summary (held-out validation, skipped folders).
  """
  root: epath.Path
  hierarchy: hierarchy_lib.Hierarchy
  splits: dict[str, list[tuple[str, int]]]
  shape: tuple[int | None, int | None, int]
  encoding: str
  skipped: dict[str, int]
  notes: tuple[str, ...]


def scan(path: str | epath.Path, hierarchy: str | None = None, unmapped_labels: str = "error",
         validation_share: float = 0.1, seed: int = 0) -> Plan:
  """Reads a folder tree of images into a `Plan` (image headers only, nothing decoded).

  Args:
    path: the folder holding the split folders.
    hierarchy: for the flat layout, a hierarchy JSON path or shipped name whose subclasses
      match class folders by name or WordNet id; None puts every class in one superclass.
      The superclass layout takes none (its folders are the hierarchy).
    unmapped_labels: "error" refuses class folders outside `hierarchy`; "skip" leaves them out
      and counts them.
    validation_share: with no validation folder, this share of each train class (at least
      one image of a class with two or more) is held out as the validation split.
    seed: the seed of that draw.

  Raises:
    FolderError: the path is missing or not a folder; no split folders or unknown ones; an
      empty class folder; mixed layouts; a class under two superclasses; class folders
      outside the hierarchy; an image whose header cannot be read (named).
    hierarchy_lib.HierarchyError: a hierarchy file that does not load.
  """
  if unmapped_labels not in UNMAPPED:
    raise ValueError(f"unmapped_labels must be one of {UNMAPPED}; got {unmapped_labels!r}")
  root = epath.Path(path)
  if not root.exists():
    raise FolderError(f"{root} does not exist: give --dataset=folder:<PATH> the folder that "
                      "holds train/ (and validation/ or val/, test/)")
  if not root.is_dir():
    raise FolderError(f"{root} is not a folder: give --dataset=folder:<PATH> the folder that "
                      "holds train/ (and validation/ or val/, test/)")
  split_dirs = _split_folders(root)
  trees = {split: _read_split(folder) for split, folder in split_dirs.items()}
  layouts = {split: layout for split, (layout, _, _) in trees.items()}
  if len(set(layouts.values())) > 1:
    raise FolderError(f"{root} mixes layouts across splits ("
                      + ", ".join(f"{s}: {l}" for s, l in sorted(layouts.items()))
                      + "); every split must be <split>/<class>/<image> or every split "
                      "<split>/<superclass>/<class>/<image>")
  layout = next(iter(layouts.values()))
  # (superclass or None, class folder) -> split -> files (paths relative to root)
  classes: dict[tuple[str | None, str], dict[str, list[str]]] = collections.defaultdict(dict)
  for split, (_, found, _) in trees.items():
    for (sup, name), files in found.items():
      classes[(sup, name)][split] = files
  if layout == "superclass":
    if hierarchy is not None:
      raise FolderError(f"{root} is in the superclass layout (<split>/<superclass>/<class>/), "
                        f"whose folders are the hierarchy; drop --hierarchy={hierarchy}")
    h, label_of = _hierarchy_from_folders(root, classes)
    skipped: dict[str, int] = {}
  else:
    h, label_of, skipped = _map_classes(root, classes, hierarchy, unmapped_labels)
  splits = {split: sorted((f, label_of[key]) for key, per_split in classes.items()
                          if key in label_of for f in per_split.get(split, ()))
            for split in trees}
  notes = []
  if ignored := sorted(f for _, _, files in trees.values() for f in files):
    notes.append(f"ignored {len(ignored)} files that are not images by their suffix "
                 f"({', '.join(IMAGE_SUFFIXES)}): {', '.join(ignored[:3])}"
                 + (", ..." if len(ignored) > 3 else ""))
  if skipped:
    notes.append(f"skipped {sum(skipped.values())} images of {len(skipped)} class folders "
                 "outside the hierarchy (--unmapped_labels=skip): "
                 + ", ".join(f"{name} ({n})" for name, n in sorted(skipped.items())))
  if "train" not in splits:
    raise FolderError(f"{root} has no train/ folder (found "
                      f"{', '.join(sorted(p.name for p in split_dirs.values()))}/); training "
                      "needs one")
  if "validation" not in splits:
    splits["train"], splits["validation"] = hold_out(splits["train"], validation_share, seed)
    notes.append(f"no validation folder: {len(splits['validation'])} of the train images "
                 f"({validation_share:.0%} of each class, seed {seed}) are the validation split")
  shape = _stored_shape(root, [f for items in splits.values() for f, _ in items])
  return Plan(root=root, hierarchy=h, splits=splits, shape=shape,
              encoding="jpeg" if images_lib.is_large(*shape[:2]) else "png",
              skipped=skipped, notes=tuple(notes))


def fingerprint(path: str | epath.Path) -> str:
  """A digest of the visible files under the split folders (relative path and size): what
  changes when images are added, removed, renamed or replaced by others of another size."""
  root = epath.Path(path)
  digest = hashlib.sha1()
  pending = sorted(_split_folders(root).values())
  while pending:  # a walk by iterdir: epath's rglob refuses `**` (GCS)
    folder = pending.pop(0)
    for entry in _visible(folder):
      if entry.is_dir():
        pending.append(entry)
      else:
        digest.update(f"{_relative(entry, root)}\0{entry.stat().length}\n".encode())
  return digest.hexdigest()


def _visible(folder: epath.Path) -> list[epath.Path]:
  return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _is_image(path: epath.Path) -> bool:
  return path.suffix.lower() in IMAGE_SUFFIXES


def _split_folders(root: epath.Path) -> dict[str, epath.Path]:
  """TFDS split -> its folder under root."""
  found, unknown = {}, []
  names = {n: s for s, ns in SPLIT_FOLDERS.items() for n in ns}
  for entry in _visible(root):
    if not entry.is_dir():
      continue
    split = names.get(entry.name)
    if split is None:
      unknown.append(entry.name)
    elif split in found:
      raise FolderError(f"{root} holds both {found[split].name}/ and {entry.name}/; keep one "
                        "validation folder")
    else:
      found[split] = entry
  expected = ", ".join("|".join(ns) for ns in SPLIT_FOLDERS.values())
  if unknown:
    raise FolderError(f"{root} holds folders that are not splits: {', '.join(unknown)}; the "
                      f"split folders are {expected} (<split>/<class>/<image> or "
                      "<split>/<superclass>/<class>/<image>)")
  if not found:
    raise FolderError(f"{root} holds no split folder ({expected}); lay images out as "
                      f"{root}/train/<class>/<image>")
  return found


def _read_split(split_dir: epath.Path):
  """(layout, {(superclass or None, class): [files relative to the dataset root]})."""
  base = split_dir.parent
  entries = _visible(split_dir)
  if loose := [e.name for e in entries if not e.is_dir()]:
    raise FolderError(f"{split_dir} holds files outside class folders ({', '.join(loose[:5])});"
                      " put each image in a <class>/ folder")
  if not entries:
    raise FolderError(f"{split_dir} is empty; put images in {split_dir}/<class>/ folders or "
                      "remove it")
  kinds, found, ignored = {}, {}, []
  for entry in entries:
    children = _visible(entry)
    images = [c for c in children if not c.is_dir() and _is_image(c)]
    folders = [c for c in children if c.is_dir()]
    ignored += [_relative(c, base) for c in children if not c.is_dir() and not _is_image(c)]
    if images and folders:
      raise FolderError(f"{entry} holds both images and folders (mixed layouts); a class "
                        "folder holds images, a superclass folder only class folders")
    if not images and not folders:
      raise FolderError(f"{entry} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some or "
                        "remove the folder")
    kinds[entry.name] = "superclass" if folders else "flat"
    if folders:
      for folder in folders:
        if inner := [c.name for c in _visible(folder) if c.is_dir()]:
          raise FolderError(f"{folder} holds folders ({', '.join(inner[:5])}); images go at "
                            "most two levels below the split folder")
        files = [c for c in _visible(folder) if _is_image(c)]
        ignored += [_relative(c, base) for c in _visible(folder) if not _is_image(c)]
        if not files:
          raise FolderError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                            "some or remove the folder")
        found[(entry.name, folder.name)] = [_relative(f, base) for f in files]
    else:
      found[(None, entry.name)] = [_relative(f, base) for f in images]
  if len(set(kinds.values())) > 1:
    flat = sorted(k for k, v in kinds.items() if v == "flat")
    sup = sorted(k for k, v in kinds.items() if v == "superclass")
    raise FolderError(f"{split_dir} mixes layouts: {', '.join(flat[:5])} hold images (class "
                      f"folders), {', '.join(sup[:5])} hold folders (superclass folders); use "
                      "one layout")
  return next(iter(kinds.values())), found, ignored


def _relative(path: epath.Path, base: epath.Path) -> str:
  return path.relative_to(base).as_posix()


def _hierarchy_from_folders(root, classes):
  """(hierarchy, (superclass, class) -> label) of the superclass layout: superclasses and
  classes in name order."""
  owner: dict[str, set[str]] = collections.defaultdict(set)
  for sup, name in classes:
    owner[name].add(sup)
  if twice := sorted(n for n, sups in owner.items() if len(sups) > 1):
    raise FolderError(f"{root}: classes under two superclasses: "
                      + "; ".join(f"{n} in {', '.join(sorted(owner[n]))}" for n in twice[:5])
                      + "; each class folder belongs to one superclass in every split")
  groups = collections.defaultdict(list)
  for sup, name in sorted(classes):
    groups[sup].append(name)
  names = sorted(owner)
  source = {n: i for i, n in enumerate(names)}
  ordered = sorted(groups.items())
  try:
    h = hierarchy_lib.from_groups(
        _name(root), [(sup, [(n, source[n]) for n in subs]) for sup, subs in ordered],
        num_source_labels=len(names))
  except hierarchy_lib.HierarchyError as e:  # e.g. a class folder named as a superclass
    raise FolderError(f"{root}: the folders do not make a hierarchy ({e}); rename the "
                      "folder") from None
  labels = [(sup, n) for sup, subs in ordered for n in subs]
  return h, {key: i for i, key in enumerate(labels)}


def _map_classes(root, classes, hierarchy, unmapped_labels):
  """(hierarchy, (None, class) -> label, skipped class -> count) of the flat layout."""
  names = sorted({name for _, name in classes})
  if hierarchy is None:  # one superclass (named apart from every class): the flat network
    sup = FLAT_SUPERCLASS
    while sup in names:
      sup = "_" + sup
    h = hierarchy_lib.from_groups(_name(root), [(sup, [(n, i) for i, n in enumerate(names)])],
                                  num_source_labels=len(names))
    return h, {(None, n): i for i, n in enumerate(names)}, {}
  h = hierarchy_lib.load_hierarchy(hierarchy)
  label_of, outside = {}, []
  for name in names:
    try:
      kind, index = h.lookup(name)
    except KeyError:
      kind, index = None, None
    if kind == "subclass":
      label_of[(None, name)] = index
    else:
      outside.append(name)
  if outside and unmapped_labels == "error":
    raise FolderError(f"{root}: {len(outside)} class folders are not subclasses (by name or "
                      f"WordNet id) of hierarchy {h.name!r}: {', '.join(outside[:10])}"
                      + (", ..." if len(outside) > 10 else "")
                      + "; add them to the hierarchy or pass --unmapped_labels=skip")
  twice = collections.defaultdict(list)
  for (_, name), label in label_of.items():
    twice[label].append(name)
  if clash := [names for names in twice.values() if len(names) > 1]:
    raise FolderError(f"{root}: class folders {' and '.join(clash[0])} are the same subclass of "
                      f"hierarchy {h.name!r} (one by name, one by WordNet id); merge them")
  skipped = {name: sum(len(f) for key, per in classes.items() if key[1] == name
                       for f in per.values()) for name in outside}
  if not label_of:
    raise FolderError(f"{root}: no class folder is a subclass of hierarchy {h.name!r}")
  return h, label_of, skipped


def hold_out(train: list[tuple[str | int, int]], share: float, seed: int):
  """(train, validation): `share` of each label's (key, label) items, at least one of a label
  with two or more; both sorted. A key is a file's path or a source dataset's index.

  An item is held out when the digest of (seed, its key) is among the lowest of its label's,
  so the draw depends on the seed and the label's own keys alone, not on the label numbers
  (which follow the hierarchy) or the other labels. A folder read with no hierarchy, with a
  hierarchy, or with some classes skipped gives its classes the same validation images: a
  Super-Sub run that reuses a flat-only run's network (--flat_from) never validates on images
  that network trained on.
  """
  if not 0.0 < share < 1.0:
    raise ValueError(f"validation_share must lie in (0, 1); got {share}")
  by_label = collections.defaultdict(list)
  for item in train:
    by_label[item[1]].append(item)
  keep, held = [], []
  for items in by_label.values():
    n = max(1, round(share * len(items))) if len(items) > 1 else 0
    ranked = sorted(items,
                    key=lambda item: hashlib.sha256(f"{seed}\0{item[0]}".encode()).digest())
    held += ranked[:n]
    keep += ranked[n:]
  return sorted(keep), sorted(held)


def _stored_shape(root: epath.Path, files: list[str]) -> tuple[int | None, int | None, int]:
  """(H, W, C) from the image headers: C 1 when every image is grayscale, else 3."""
  sizes, gray = set(), True
  for rel in files:
    path = root / rel
    try:
      with path.open("rb") as f, Image.open(f) as image:
        sizes.add(image.size)
        gray = gray and image.mode in _GRAY_MODES
    except Exception as e:  # pylint: disable=broad-except  # PIL raises many types.
      raise FolderError(f"cannot read image {path}: {type(e).__name__}: {e}; remove or "
                        "replace the file") from None
  channels = 1 if gray else 3
  if len(sizes) == 1:
    width, height = next(iter(sizes))
    return height, width, channels
  return None, None, channels


def _name(root: epath.Path) -> str:
  """A hierarchy name from the folder's name."""
  return re.sub(r"[^\w.-]+", "_", root.resolve().name) or "folder"
