"""The two-level label tree (superclasses -> subclasses) that every part of super-sub shares.

A `Hierarchy` fixes the *global subclass index*: subclasses numbered in file order,
superclass by superclass. Models, datasets and reports all speak in that index; the
source dataset's own label ids (e.g. ImageNet-1k's 0..999) are mapped through it.
This module needs only numpy, so the edge runtime can use it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import textwrap
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from super_sub._internal import files
from super_sub.errors import SuperSubError

_TOP_KEYS = {"name", "superclasses", "num_source_labels"}
_SUPER_KEYS = {"name", "wnid", "subclasses"}
_SUB_KEYS = {"name", "wnid", "source_label"}
# Source labels index `Hierarchy.source_to_global`, a table of that many int64 entries (at most
# 128 MiB); ImageNet-21k has about 22,000 labels.
MAX_SOURCE_LABELS = 2**24


class HierarchyError(SuperSubError, ValueError):
  """A hierarchy description that does not validate; the message names the entry."""


@dataclasses.dataclass(frozen=True)
class Subclass:
  """A leaf class: its name, optional WordNet id, and its label id in the source dataset."""
  name: str
  wnid: str | None
  source_label: int


@dataclasses.dataclass(frozen=True)
class Superclass:
  """A group of subclasses that a generalist predicts and one specialist separates."""
  name: str
  wnid: str | None
  subclasses: tuple[Subclass, ...]


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  """An ordered, validated two-level hierarchy.

  Attributes:
    name: short identifier, e.g. "fashion_mnist".
    superclasses: superclasses in order; their order is the superclass index.
    num_source_labels: how many labels the source dataset has, when known; source
      labels must then lie in [0, num_source_labels).
  """
  name: str
  superclasses: tuple[Superclass, ...]
  num_source_labels: int | None = None

  def __post_init__(self):
    _validate(self)

  def __repr__(self) -> str:
    # One short line: the dataclass's own repr would list every subclass.
    return (f"Hierarchy({self.name!r}: {self.num_superclasses} superclasses, "
            f"{self.num_subclasses} subclasses"
            + ("" if self.num_source_labels is None
               else f" of {self.num_source_labels} source labels") + ")")

  # --- sizes and names -------------------------------------------------------
  @property
  def num_superclasses(self) -> int:
    return len(self.superclasses)

  @property
  def num_subclasses(self) -> int:
    return len(self.subclasses)

  @functools.cached_property
  def subclasses(self) -> tuple[Subclass, ...]:
    """All subclasses in global index order."""
    return tuple(s for sup in self.superclasses for s in sup.subclasses)

  @property
  def superclass_names(self) -> list[str]:
    return [s.name for s in self.superclasses]

  @property
  def subclass_names(self) -> list[str]:
    """Subclass names in global index order."""
    return [s.name for s in self.subclasses]

  # --- index maps (numpy arrays, so callers can map whole label vectors) -----
  @functools.cached_property
  def superclass_of(self) -> np.ndarray:
    """int array: global subclass index -> superclass index."""
    return np.repeat(np.arange(self.num_superclasses),
                     [len(s.subclasses) for s in self.superclasses]).astype(np.int64)

  @functools.cached_property
  def index_in_superclass(self) -> np.ndarray:
    """int array: global subclass index -> position within its superclass."""
    return np.concatenate([np.arange(len(s.subclasses)) for s in self.superclasses]
                          ).astype(np.int64)

  @functools.cached_property
  def superclass_offsets(self) -> np.ndarray:
    """int array of length num_superclasses + 1: superclass k owns [offsets[k], offsets[k+1])."""
    return np.concatenate([[0], np.cumsum([len(s.subclasses) for s in self.superclasses])]
                          ).astype(np.int64)

  def global_index(self, superclass: int, index_in_superclass: int) -> int:
    """Global subclass index of the `index_in_superclass`-th subclass of `superclass`."""
    size = len(self.superclasses[superclass].subclasses)
    if not 0 <= index_in_superclass < size:
      raise IndexError(f"superclass {self.superclasses[superclass].name!r} has {size} "
                       f"subclasses; got index {index_in_superclass}")
    return int(self.superclass_offsets[superclass] + index_in_superclass)

  def subclass_range(self, superclass: int) -> range:
    """Global subclass indices belonging to `superclass`."""
    return range(int(self.superclass_offsets[superclass]),
                 int(self.superclass_offsets[superclass + 1]))

  # --- the one rule of which superclasses get a specialist --------------------
  def has_specialist(self, superclass: int) -> bool:
    """Whether `superclass` gets a specialist: it has at least 2 subclasses.

    A one-subclass superclass needs none: routing an image to it is the answer.
    """
    return len(self.superclasses[superclass].subclasses) >= 2

  def specialist_superclasses(self) -> list[int]:
    """The superclasses that get a specialist (see `has_specialist`), in index order."""
    return [k for k in range(self.num_superclasses) if self.has_specialist(k)]

  @functools.cached_property
  def source_to_global(self) -> np.ndarray:
    """int array: source label -> global subclass index, -1 for labels outside the hierarchy."""
    size = self.num_source_labels or (max(s.source_label for s in self.subclasses) + 1)
    table = np.full(size, -1, dtype=np.int64)
    table[[s.source_label for s in self.subclasses]] = np.arange(self.num_subclasses)
    return table

  @functools.cached_property
  def global_to_source(self) -> np.ndarray:
    """int array: global subclass index -> source label."""
    return np.array([s.source_label for s in self.subclasses], dtype=np.int64)

  # --- lookup ------------------------------------------------------------------
  @functools.cached_property
  def _keys(self) -> dict[str, tuple[str, int]]:
    keys = {}
    for i, sup in enumerate(self.superclasses):
      keys[sup.name] = ("superclass", i)
      if sup.wnid:
        keys[sup.wnid] = ("superclass", i)
    for i, sub in enumerate(self.subclasses):
      keys[sub.name] = ("subclass", i)
      if sub.wnid:
        keys[sub.wnid] = ("subclass", i)
    return keys

  def lookup(self, key: str) -> tuple[str, int]:
    """Finds a class by name or WordNet id.

    Returns:
      ("superclass", superclass index) or ("subclass", global subclass index).
    Raises:
      KeyError: naming the key, when nothing in the hierarchy has it.
    """
    try:
      return self._keys[key]
    except KeyError:
      raise KeyError(f"{key!r} is neither a class name nor a WordNet id in hierarchy "
                     f"{self.name!r}") from None

  # --- JSON ----------------------------------------------------------------------
  def to_dict(self) -> dict[str, Any]:
    out: dict[str, Any] = {"name": self.name}
    if self.num_source_labels is not None:
      out["num_source_labels"] = self.num_source_labels
    out["superclasses"] = [
        {"name": sup.name, "wnid": sup.wnid,
         "subclasses": [dataclasses.asdict(s) for s in sup.subclasses]}
        for sup in self.superclasses]
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any], where: str = "hierarchy") -> "Hierarchy":
    """Builds and validates a hierarchy from its JSON form; `where` prefixes error messages."""
    _check_keys(data, _TOP_KEYS, {"name", "superclasses"}, where)
    if not isinstance(data["superclasses"], list):
      raise HierarchyError(f"{where}: 'superclasses' must be a list")
    supers = []
    for i, sup in enumerate(data["superclasses"]):
      at = f"{where}: superclasses[{i}]"
      _check_keys(sup, _SUPER_KEYS, {"name", "subclasses"}, at)
      if not isinstance(sup["subclasses"], list):
        raise HierarchyError(f"{at} ({sup['name']!r}): 'subclasses' must be a list")
      subs = []
      for j, sub in enumerate(sup["subclasses"]):
        sub_at = f"{at} ({sup['name']!r}).subclasses[{j}]"
        _check_keys(sub, _SUB_KEYS, {"name", "source_label"}, sub_at)
        subs.append(Subclass(sub["name"], sub.get("wnid"), sub["source_label"]))
      supers.append(Superclass(sup["name"], sup.get("wnid"), tuple(subs)))
    try:
      return cls(data["name"], tuple(supers), data.get("num_source_labels"))
    except HierarchyError as e:
      raise HierarchyError(f"{where}: {e}") from None

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> "Hierarchy":
    """Reads and validates a hierarchy JSON file; HierarchyError names the file."""
    data = files.read_json(path, HierarchyError, expect_object=True)
    return cls.from_dict(data, where=str(path))

  def to_json(self, path: str | os.PathLike) -> None:
    """Writes the hierarchy atomically (temporary file, then rename)."""
    files.write_json(path, self.to_dict())


def format_tree(hierarchy: Hierarchy, width: int = 100) -> str:
  """The hierarchy as text for a person: one paragraph per superclass with its index, name,
  WordNet id and subclass count, then its subclasses wrapped to `width` columns."""
  h = hierarchy
  lines = [f"{h.name}: {h.num_superclasses} superclasses, {h.num_subclasses} subclasses"
           + ("" if h.num_source_labels is None else
              f" (of {h.num_source_labels} source labels)")
           + f", {len(h.specialist_superclasses())} with a specialist"]
  digits = len(str(h.num_superclasses - 1))
  for k, sup in enumerate(h.superclasses):
    count = len(sup.subclasses)
    lines.append(f"{k:>{digits}}  {sup.name}" + (f"  {sup.wnid}" if sup.wnid else "")
                 + f"  ({count} subclass{'' if count == 1 else 'es'})")
    indent = " " * (digits + 4)
    # A no-break space inside each name: lines break between names, never within one.
    text = ", ".join(s.name.replace(" ", "\xa0") for s in sup.subclasses)
    lines.extend(line.replace("\xa0", " ") for line in textwrap.wrap(
        text, width=max(width, len(indent) + 20), initial_indent=indent,
        subsequent_indent=indent, break_on_hyphens=False))
  return "\n".join(lines)


def shipped_hierarchies() -> list[str]:
  """Names of the hierarchies that ship inside the package."""
  folder = importlib.resources.files("super_sub") / "hierarchies"
  return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_hierarchy(name_or_path: str | os.PathLike) -> Hierarchy:
  """Loads a shipped hierarchy by name (e.g. "superclassed_imagenet") or a JSON file by path.

  Anything that ends in ".json" or contains a path separator is a path; a bare word is
  the name of a shipped hierarchy (so a folder of that name in the working directory
  never shadows it).
  """
  text = os.fspath(name_or_path)
  if text.endswith(".json") or os.sep in text or (os.altsep and os.altsep in text):
    return Hierarchy.from_json(text)
  resource = importlib.resources.files("super_sub") / "hierarchies" / f"{text}.json"
  try:
    shipped = resource.is_file()
  except OSError:  # e.g. a name too long for a file name
    shipped = False
  if not shipped:
    raise HierarchyError(f"no hierarchy file at {text!r} and no shipped hierarchy of that name; "
                         f"shipped: {', '.join(shipped_hierarchies())}")
  with importlib.resources.as_file(resource) as path:
    return Hierarchy.from_json(path)


def _check_keys(entry: Any, allowed: set[str], required: set[str], where: str) -> None:
  if not isinstance(entry, Mapping):
    raise HierarchyError(f"{where}: expected a JSON object, got {type(entry).__name__}")
  unknown = sorted(set(entry) - allowed)
  if unknown:
    raise HierarchyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
  missing = sorted(required - set(entry))
  if missing:
    raise HierarchyError(f"{where}: missing key(s) {missing}")


def _validate(h: Hierarchy) -> None:
  """Checks types, emptiness and uniqueness; raises HierarchyError naming the entry."""
  if not isinstance(h.name, str) or not h.name:
    raise HierarchyError(f"hierarchy name must be a non-empty string, got {h.name!r}")
  n_src = h.num_source_labels
  if n_src is not None and (not _is_int(n_src) or not 0 < n_src <= MAX_SOURCE_LABELS):
    raise HierarchyError(f"hierarchy {h.name!r}: num_source_labels must be a positive "
                         f"integer up to {MAX_SOURCE_LABELS}, got {n_src!r}")
  if not h.superclasses:
    raise HierarchyError(f"hierarchy {h.name!r} has no superclasses")
  names: dict[str, str] = {}
  wnids: dict[str, str] = {}
  labels: dict[int, str] = {}

  def claim(table: dict, key: Any, owner: str, what: str) -> None:
    if key in table:
      raise HierarchyError(f"hierarchy {h.name!r}: duplicate {what} {key!r} "
                           f"(in {table[key]} and {owner})")
    table[key] = owner

  for sup in h.superclasses:
    where = f"superclass {sup.name!r}"
    _check_name_and_wnid(h.name, where, sup.name, sup.wnid)
    claim(names, sup.name, where, "name")
    if sup.wnid:
      claim(wnids, sup.wnid, where, "wnid")
    if not sup.subclasses:
      raise HierarchyError(f"hierarchy {h.name!r}: {where} has no subclasses")
    for sub in sup.subclasses:
      sub_where = f"subclass {sub.name!r} of {where}"
      _check_name_and_wnid(h.name, sub_where, sub.name, sub.wnid)
      # A subclass listed under two superclasses shows up as a duplicate name/wnid/label.
      claim(names, sub.name, sub_where, "name")
      if sub.wnid:
        claim(wnids, sub.wnid, sub_where, "wnid")
      if not _is_int(sub.source_label) or not 0 <= sub.source_label < MAX_SOURCE_LABELS:
        raise HierarchyError(f"hierarchy {h.name!r}: {sub_where} has source_label "
                             f"{sub.source_label!r}; expected a non-negative integer below "
                             f"{MAX_SOURCE_LABELS}")
      if n_src is not None and sub.source_label >= n_src:
        raise HierarchyError(f"hierarchy {h.name!r}: {sub_where} has source_label "
                             f"{sub.source_label}, which does not exist in a source dataset "
                             f"of {n_src} labels (valid: 0..{n_src - 1})")
      claim(labels, sub.source_label, sub_where, "source_label")


def _check_name_and_wnid(hname: str, where: str, name: Any, wnid: Any) -> None:
  if not isinstance(name, str) or not name:
    raise HierarchyError(f"hierarchy {hname!r}: {where} needs a non-empty string name")
  if wnid is not None and not (isinstance(wnid, str) and len(wnid) == 9 and wnid[0] == "n"
                               and wnid[1:].isascii() and wnid[1:].isdigit()):
    raise HierarchyError(f"hierarchy {hname!r}: {where} has wnid {wnid!r}; expected null or "
                         f"a WordNet noun id like 'n01503061'")


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def from_groups(name: str, groups: Sequence[tuple[str, Iterable[tuple[str, int]]]],
                num_source_labels: int | None = None) -> Hierarchy:
  """Builds a hierarchy without WordNet ids from `[(superclass, [(subclass, source_label)])]`."""
  return Hierarchy(name, tuple(
      Superclass(sup, None, tuple(Subclass(n, None, lbl) for n, lbl in subs))
      for sup, subs in groups), num_source_labels)
