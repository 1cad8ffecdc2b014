"""WordNet 3.0 noun hypernyms, read offline from `data.noun`, and superclass derivation.

`derive_hierarchy` turns a few WordNet synsets (e.g. bird, dog, fungus) into a `Hierarchy` over a
class list such as ImageNet-1k's, by asking which classes have each synset among their
hypernyms. Only the standard library and `super_sub.hierarchy` are needed, so no NLTK
download and no TensorFlow: any directory holding WordNet's `data.noun` will do.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
from typing import Iterable, Mapping, Sequence

from super_sub import hierarchy as hierarchy_lib
from super_sub.errors import SuperSubError

# Pointer symbols followed upward (`man 5 wninput`): hypernym and instance hypernym.
_HYPERNYM_POINTERS = ("@", "@i")
# Where `data.noun` lives under a WordNet directory: Debian's /usr/share/wordnet and NLTK's
# corpora/wordnet hold it directly; Princeton's WordNet-3.0 tarball keeps it in dict/.
_DATA_NOUN_PLACES = ("data.noun", os.path.join("dict", "data.noun"))

RULES = ("nearest", "first", "drop")


class WordNetError(SuperSubError, ValueError):
  """A WordNet file, synset id or derivation request that cannot be used; names the culprit."""


@dataclasses.dataclass(frozen=True)
class Synset:
  """One noun synset: its id, lemmas as written in WordNet, and its direct hypernym ids."""
  wnid: str
  lemmas: tuple[str, ...]
  hypernyms: tuple[str, ...]

  @property
  def name(self) -> str:
    """The first lemma made readable ("Maltese_dog" -> "Maltese dog")."""
    return self.lemmas[0].replace("_", " ")


class WordNet:
  """The noun synsets of one WordNet database, with hypernym closure and LCA heights."""

  def __init__(self, synsets: Mapping[str, Synset], source: str = "<memory>"):
    self._synsets = dict(synsets)
    self._up: dict[str, dict[str, int]] = {}  # memo for _longest_paths_up
    self._heights: dict[frozenset[str], dict[str, int]] = {}  # memo for heights
    self.source = source

  def __len__(self) -> int:
    return len(self._synsets)

  def __contains__(self, wnid: object) -> bool:
    return wnid in self._synsets

  def synset(self, wnid: str) -> Synset:
    """Returns the synset of `wnid`; raises WordNetError naming it when unknown."""
    try:
      return self._synsets[wnid]
    except KeyError:
      hint = "" if _looks_like_wnid(wnid) else " (expected 'n' + 8 digits, e.g. 'n01503061')"
      raise WordNetError(f"unknown WordNet noun id {wnid!r}{hint} in {self.source}") from None

  def name(self, wnid: str) -> str:
    return self.synset(wnid).name

  def ancestors(self, wnid: str) -> frozenset[str]:
    """The hypernym closure of `wnid` through `@` and `@i` pointers, including `wnid` itself."""
    return frozenset(self._longest_paths_up(wnid))

  def lowest_common_ancestors(self, a: str, b: str) -> frozenset[str]:
    """Common ancestors of `a` and `b` that have no common ancestor below them.

    Usually one synset; WordNet's multiple inheritance can give several.
    """
    common = self.ancestors(a) & self.ancestors(b)
    above = set()
    for c in common:
      above |= self.ancestors(c) - {c}
    return frozenset(common - above)

  def heights(self, leaves: Iterable[str]) -> dict[str, int]:
    """Height of every synset above `leaves`: its longest downward path to one of them."""
    key = frozenset(leaves)
    if key not in self._heights:
      out: dict[str, int] = {}
      for leaf in key:
        for anc, d in self._longest_paths_up(leaf).items():
          out[anc] = max(out.get(anc, 0), d)
      self._heights[key] = out
    return self._heights[key]

  def lca_height(self, a: str, b: str, leaves: Iterable[str] | None = None) -> int:
    """Mistake severity: the height of the lowest common ancestor of `a` and `b`.

    As in ILSVRC's hierarchical cost and Bertinetto et al., "Making Better Mistakes"
    (CVPR 2020), a node's height is its longest downward path to a leaf, within the part
    of WordNet above `leaves` (e.g. all 1000 ImageNet classes; default: just `a` and `b`).
    Height 0 means a == b. If multiple inheritance gives several LCAs, the lowest counts.

    Raises:
      WordNetError: for an unknown id, or when `a` or `b` is not among `leaves`.
    """
    leaves = frozenset((a, b) if leaves is None else leaves)
    for x in (a, b):
      if x not in leaves:
        raise WordNetError(f"{x!r} is not among the leaves that define heights")
    if a == b:
      return 0
    heights = self.heights(leaves)
    return min(heights[lca] for lca in self.lowest_common_ancestors(a, b))

  def _longest_paths_up(self, wnid: str) -> dict[str, int]:
    """ancestor -> number of edges on the longest hypernym path from `wnid` to it."""
    if wnid not in self._up:
      out = {wnid: 0}
      for parent in self.synset(wnid).hypernyms:
        for anc, d in self._longest_paths_up(parent).items():
          out[anc] = max(out.get(anc, 0), d + 1)
      self._up[wnid] = out
    return self._up[wnid]


def read_wordnet(wordnet_dir: str | os.PathLike) -> WordNet:
  """Reads the noun synsets of a local WordNet 3.0 database (format: `man 5 wndb`).

  Args:
    wordnet_dir: a directory holding `data.noun` (e.g. /usr/share/wordnet, NLTK's
      nltk_data/corpora/wordnet, or WordNet-3.0/ with dict/data.noun), or that file.
  Raises:
    WordNetError: naming the paths tried when no data.noun is found, or the line that
      does not parse.
  """
  path = os.fspath(wordnet_dir)
  candidates = [path] if os.path.isfile(path) else [os.path.join(path, p)
                                                    for p in _DATA_NOUN_PLACES]
  data_noun = next((p for p in candidates if os.path.isfile(p)), None)
  if data_noun is None:
    raise WordNetError(f"no WordNet noun database at {path!r}: expected a file "
                       f"{' or '.join(map(repr, candidates))} (WordNet 3.0's data.noun; "
                       f"on Debian: apt-get install wordnet-base -> /usr/share/wordnet)")
  synsets = {}
  with open(data_noun, encoding="utf-8", errors="replace") as f:
    for lineno, line in enumerate(f, 1):
      if line.startswith("  "):  # The license header: every line starts with two spaces.
        continue
      try:
        synset = _parse_line(line)
      except (ValueError, IndexError) as e:
        raise WordNetError(f"{data_noun}:{lineno}: not a WordNet data line ({e}): "
                           f"{line[:80]!r}") from None
      synsets[synset.wnid] = synset
  if not synsets:
    raise WordNetError(f"{data_noun} holds no synsets")
  return WordNet(synsets, source=data_noun)


def _parse_line(line: str) -> Synset:
  # synset_offset lex_filenum ss_type w_cnt(2 hex) [word lex_id]... p_cnt(3 dec)
  # [pointer_symbol synset_offset pos source/target]... | gloss
  fields = line.split(" | ", 1)[0].split()
  offset, ss_type = fields[0], fields[2]
  if len(offset) != 8 or not offset.isdigit() or ss_type != "n":
    raise ValueError(f"expected an 8-digit offset and ss_type 'n', got {offset!r} {ss_type!r}")
  w_cnt = int(fields[3], 16)
  lemmas = tuple(fields[4:4 + 2 * w_cnt:2])
  at = 4 + 2 * w_cnt
  p_cnt = int(fields[at])
  pointers = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(p_cnt)]
  if len(lemmas) != w_cnt or any(len(p) != 4 for p in pointers):
    raise ValueError(f"fewer fields than w_cnt={w_cnt} and p_cnt={p_cnt} announce")
  hypernyms = tuple("n" + p[1] for p in pointers if p[0] in _HYPERNYM_POINTERS and p[2] == "n")
  return Synset("n" + offset, lemmas, hypernyms)


def read_class_list(path: str | os.PathLike) -> list[str]:
  """Reads a class list: one wnid a line, line k (0-based) being source label k."""
  with open(path, encoding="utf-8") as f:
    wnids = [line.strip() for line in f if line.strip()]
  for i, w in enumerate(wnids):
    if not _looks_like_wnid(w):
      raise WordNetError(f"{path}: entry {i} is {w!r}; expected a WordNet noun id like "
                         f"'n01440764' on every line")
  return wnids


def imagenet_class_list() -> str | None:
  """Path of the ImageNet-1k class list (wnids, line k = label k) that tensorflow_datasets
  ships as imagenet2012's labels.txt, found without importing it; None where it is absent.
  Nothing is downloaded."""
  spec = importlib.util.find_spec("tensorflow_datasets")
  roots = list(spec.submodule_search_locations or []) if spec else []
  # TFDS >= 4.9 keeps it beside the builder; older releases in image_classification/.
  for root in roots:
    for place in (os.path.join("datasets", "imagenet2012", "labels.txt"),
                  os.path.join("image_classification", "imagenet2012_labels.txt")):
      if os.path.isfile(os.path.join(root, place)):
        return os.path.join(root, place)
  return None


def source_label_names(hierarchy: hierarchy_lib.Hierarchy,
                       wordnet: WordNet | None = None) -> list[str] | None:
  """A name for every source label of an ImageNet-1k hierarchy, or None for other ones.

  A hierarchy is taken for ImageNet-1k's when it has 1000 source labels and every subclass's
  wnid is the one TFDS's imagenet2012 class list (`imagenet_class_list`) gives its source
  label. Names are those wnids (imagenet2012's label names in TFDS), with WordNet's first
  lemma before them where `wordnet` is given ("hyena (n02117135)"); subclasses keep their own
  names.
  """
  if hierarchy.num_source_labels != 1000:
    return None
  path = imagenet_class_list()
  if path is None:
    return None
  wnids = read_class_list(path)
  if len(wnids) != 1000 or any(s.wnid != wnids[s.source_label] for s in hierarchy.subclasses):
    return None
  names = [f"{wordnet.name(w)} ({w})" if wordnet is not None and w in wordnet else w
           for w in wnids]
  for sub in hierarchy.subclasses:
    names[sub.source_label] = sub.name
  return names


@dataclasses.dataclass(frozen=True)
class Resolution:
  """How `derive_hierarchy` settles a class that lies under two or more of the chosen superclasses.

  Attributes:
    rule: applied to every overlapping class without an override:
      "nearest": the superclass with the shortest hypernym path to the class wins (the
        most specific one, e.g. "hunting dog" over "dog"); a tie is still an error;
      "first": the superclass listed first wins;
      "drop": the class is left out of the hierarchy;
      None: overlaps are an error (the default: a silent choice would hide a mistake).
    overrides: class wnid -> superclass wnid it goes to, or "drop" to leave it out.
      Overrides apply to any class under at least one chosen superclass.
  """
  rule: str | None = None
  overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.rule is not None and self.rule not in RULES:
      raise WordNetError(f"unknown overlap rule {self.rule!r}; choose one of {RULES}")

  @classmethod
  def parse(cls, text: str) -> "Resolution":
    """Parses "RULE" and/or "CLASS_WNID=SUPER_WNID|drop" items, comma separated.

    E.g. "nearest", "n03770679=n02958343" (minivan -> car), "first,n03770679=drop".
    """
    rule, overrides = None, {}
    for item in filter(None, (t.strip() for t in text.split(","))):
      if "=" in item:
        key, value = (s.strip() for s in item.split("=", 1))
        if key in overrides:
          raise WordNetError(f"--resolve names class {key!r} twice")
        overrides[key] = value
      elif rule is not None:
        raise WordNetError(f"--resolve gives two rules, {rule!r} and {item!r}")
      else:
        rule = item
    return cls(rule, overrides)


def derive_hierarchy(superclasses: Sequence[str | tuple[str, str]], class_wnids: Sequence[str],
                     wordnet: WordNet, name: str,
                     resolve: Resolution | None = None) -> hierarchy_lib.Hierarchy:
  """Groups the classes of a class list under WordNet superclasses.

  A class joins a superclass when the superclass is in its hypernym closure (the class
  itself counts). Classes under no superclass are left out; subclasses keep class-list
  order. Subclass names are WordNet first lemmas, made unique by appending the wnid only
  when two names in the hierarchy collide (ImageNet has two "crane"s and two "maillot"s).

  Args:
    superclasses: in superclass order, each a wnid (named by its first lemma) or a
      (name, wnid) pair.
    class_wnids: the source dataset's classes; index k is source label k.
    wordnet: from `read_wordnet`.
    name: the hierarchy's name.
    resolve: how to settle classes under several superclasses; None refuses them.
  Returns:
    A validated Hierarchy with num_source_labels = len(class_wnids).
  Raises:
    WordNetError: for unknown or repeated ids, an empty superclass, unresolved overlaps
      (listing every overlapping class with its superclasses) or unusable overrides.
  """
  resolve = resolve or Resolution()
  supers = [(None, s) if isinstance(s, str) else tuple(s) for s in superclasses]
  super_wnids = [w for _, w in supers]
  _check_unique(super_wnids, "superclass")
  _check_unique(class_wnids, "class list entry")
  for w in super_wnids:
    wordnet.synset(w)
  missing = [f"{w} (label {i})" for i, w in enumerate(class_wnids) if w not in wordnet]
  if missing:
    raise WordNetError(f"{len(missing)} class(es) of the class list are not noun synsets in "
                       f"{wordnet.source}: {', '.join(missing[:10])}"
                       f"{' ...' if len(missing) > 10 else ''}")

  members = {}  # label -> wnids of the chosen superclasses above it, in superclass order
  for label, wnid in enumerate(class_wnids):
    above = [s for s in super_wnids if s in wordnet.ancestors(wnid)]
    if above:
      members[label] = above
  chosen = _resolve(members, class_wnids, wordnet, resolve)

  sup_names = [n or wordnet.name(w) for n, w in supers]
  groups = {w: [] for w in super_wnids}
  for label in sorted(chosen):
    groups[chosen[label]].append(label)
  empty = [f"{n} ({w})" for n, w in zip(sup_names, super_wnids) if not groups[w]]
  if empty:
    raise WordNetError(f"superclass(es) with no class of the class list under them: "
                       f"{', '.join(empty)}")

  counts = collections.Counter(sup_names)
  counts.update(wordnet.name(class_wnids[label]) for label in chosen)
  def sub_name(wnid):
    n = wordnet.name(wnid)
    return f"{n} ({wnid})" if counts[n] > 1 else n

  return hierarchy_lib.Hierarchy(name, tuple(
      hierarchy_lib.Superclass(n, w, tuple(
          hierarchy_lib.Subclass(sub_name(class_wnids[label]), class_wnids[label], label)
          for label in groups[w]))
      for n, w in zip(sup_names, super_wnids)), num_source_labels=len(class_wnids))


def _resolve(members: Mapping[int, list[str]], class_wnids: Sequence[str], wordnet: WordNet,
             resolve: Resolution) -> dict[int, str]:
  """label -> the one superclass wnid it goes to; dropped classes are absent."""
  label_of = {w: i for i, w in enumerate(class_wnids)}
  for cls_wnid, target in resolve.overrides.items():
    label = label_of.get(cls_wnid)
    if label is None or label not in members:
      where = ("is not in the class list" if label is None
               else "is under none of the superclasses")
      raise WordNetError(f"overlap override for {cls_wnid!r}: that class {where}")
    if target != "drop" and target not in members[label]:
      raise WordNetError(f"overlap override {cls_wnid}={target}: {wordnet.name(cls_wnid)!r} "
                         f"is not under {target!r}; it is under {members[label]}")
  chosen, unresolved = {}, []
  for label, above in members.items():
    wnid = class_wnids[label]
    target = resolve.overrides.get(wnid) or (
        above[0] if len(above) == 1 else _apply_rule(resolve.rule, wnid, above, wordnet))
    if target is None:
      unresolved.append(label)
    elif target != "drop":
      chosen[label] = target
  if unresolved:
    lines = [f"  {class_wnids[i]} {wordnet.name(class_wnids[i])!r} (label {i}) is under "
             + ", ".join(f"{wordnet.name(s)} ({s})" for s in members[i]) for i in unresolved]
    raise WordNetError(
        f"{len(unresolved)} class(es) lie under more than one superclass"
        f"{' with a tie for nearest' if resolve.rule == 'nearest' else ''}:\n"
        + "\n".join(lines) + "\nresolve them with a rule (nearest, first, drop) or per class "
        "(CLASS_WNID=SUPERCLASS_WNID or CLASS_WNID=drop), or choose disjoint superclasses")
  return chosen


def _apply_rule(rule: str | None, wnid: str, above: list[str], wordnet: WordNet) -> str | None:
  """The superclass wnid (or "drop") that `rule` gives a class under `above`; None if none."""
  if rule in ("first", "drop"):
    return above[0] if rule == "first" else "drop"
  if rule == "nearest":
    dist = {s: _shortest_path_up(wordnet, wnid, s) for s in above}
    winners = [s for s in above if dist[s] == min(dist.values())]
    return winners[0] if len(winners) == 1 else None
  return None


def _shortest_path_up(wordnet: WordNet, wnid: str, ancestor: str) -> int:
  """Number of edges on the shortest hypernym path from `wnid` up to `ancestor`."""
  frontier, seen, dist = [wnid], {wnid}, 0
  while frontier:
    if ancestor in frontier:
      return dist
    frontier = [h for w in frontier for h in wordnet.synset(w).hypernyms if h not in seen]
    seen.update(frontier)
    dist += 1
  raise WordNetError(f"{ancestor!r} is not a hypernym of {wnid!r}")


def _check_unique(wnids: Sequence[str], what: str) -> None:
  seen = set()
  for w in wnids:
    if w in seen:
      raise WordNetError(f"{what} {w!r} is given twice")
    seen.add(w)


def _looks_like_wnid(text: object) -> bool:
  return isinstance(text, str) and len(text) == 9 and text[0] == "n" and text[1:].isdigit()
