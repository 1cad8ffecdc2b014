"""Tests for super_sub.wordnet and the super-sub-hierarchy entry point.

The fixture tests/testdata/wordnet/data.noun is a hand-written WordNet in the real
data.noun format (offsets are byte offsets); its tree, with ImageNet-style classes
marked by their label in tests/testdata/wordnet/classes.txt:

  entity
    organism
      animal
        bird: finch: brambling [0], goldfinch [1]; crane [2]
        dog: hunting dog: beagle [3]; Maltese dog [4]; Laika [10] (instance, @i)
      fungus: agaric [6]
      child (12 lemmas, w_cnt 0c)
    artifact
      device: crane [5]
      vehicle
        car: cab [7]; minivan [8]
        truck: van: minivan [8]; fire engine [9]
"""

import importlib.resources
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from super_sub import hierarchy
from super_sub.hierarchy import wordnet

TESTDATA = pathlib.Path(__file__).parent / "testdata" / "wordnet"
CLASSES = TESTDATA / "classes.txt"
SYSTEM_WORDNET = pathlib.Path("/usr/share/wordnet")

ENTITY, ORGANISM, ANIMAL = "n00000356", "n00000506", "n00000708"
BIRD, FINCH, BRAMBLING, GOLDFINCH, CRANE_BIRD = (
    "n00000901", "n00001099", "n00001268", "n00001365", "n00001512")
DOG, HUNTING_DOG, BEAGLE, MALTESE, LAIKA = (
    "n00001642", "n00001885", "n00001987", "n00002089", "n00002232")
FUNGUS, AGARIC, CHILD = "n00002359", "n00002482", "n00002617"
ARTIFACT, DEVICE, CRANE_MACHINE = "n00002794", "n00002930", "n00003053"
VEHICLE, CAR, CAB, TRUCK, VAN, MINIVAN, FIRE_ENGINE = (
    "n00003134", "n00003270", "n00003429", "n00003603", "n00003746", "n00003850", "n00004005")


@pytest.fixture(scope="module")
def wn():
  return wordnet.read_wordnet(TESTDATA)


@pytest.fixture(scope="module")
def classes():
  return wordnet.read_class_list(CLASSES)


def groups(h):
  """{superclass name: [(subclass name, source label)]} of a hierarchy."""
  return {s.name: [(c.name, c.source_label) for c in s.subclasses] for s in h.superclasses}


# --- reading ------------------------------------------------------------------------
def test_read_parses_lemmas_and_hypernyms(wn):
  assert len(wn) == 26
  assert wn.synset(DOG).lemmas == ("dog", "domestic_dog", "Canis_familiaris")
  assert wn.synset(DOG).hypernyms == (ANIMAL,)  # "#m" and "~" pointers are not hypernyms
  assert wn.synset(MINIVAN).hypernyms == (VAN, CAR)
  assert wn.synset(LAIKA).hypernyms == (DOG,)  # "@i" instance hypernym
  assert wn.synset(BIRD).hypernyms == (ANIMAL,)  # the "+ ... v" verb pointer is skipped
  assert wn.synset(ENTITY).hypernyms == ()


def test_w_cnt_is_hexadecimal(wn):
  lemmas = wn.synset(CHILD).lemmas
  assert len(lemmas) == 12 and lemmas[-1] == "nestling"


def test_offsets_are_byte_offsets_as_in_real_wordnet():
  data = (TESTDATA / "data.noun").read_bytes()
  for line in data.splitlines():
    if not line.startswith(b"  "):
      offset = int(line[:8])
      assert data[offset:offset + 8] == line[:8]


def test_name_is_first_lemma_with_spaces(wn):
  assert wn.name(MALTESE) == "Maltese dog"
  assert wn.name(FIRE_ENGINE) == "fire engine"


def test_read_accepts_dict_subfolder_and_file_path(tmp_path, wn):
  (tmp_path / "dict").mkdir()
  shutil.copy(TESTDATA / "data.noun", tmp_path / "dict" / "data.noun")
  assert len(wordnet.read_wordnet(tmp_path)) == len(wn)  # Princeton's WordNet-3.0/dict layout
  assert len(wordnet.read_wordnet(TESTDATA / "data.noun")) == len(wn)


def test_read_missing_data_noun_names_the_paths(tmp_path):
  with pytest.raises(wordnet.WordNetError) as e:
    wordnet.read_wordnet(tmp_path)
  assert str(tmp_path / "data.noun") in str(e.value)
  assert str(tmp_path / "dict" / "data.noun") in str(e.value)


def test_read_bad_line_names_file_and_line(tmp_path):
  text = (TESTDATA / "data.noun").read_text().splitlines(keepends=True)
  text[7] = "00000708 03 n 06 animal 0 | truncated\n"
  (tmp_path / "data.noun").write_text("".join(text))
  with pytest.raises(wordnet.WordNetError, match=r"data\.noun:8: not a WordNet data line"):
    wordnet.read_wordnet(tmp_path)


def test_unknown_wnid(wn):
  with pytest.raises(wordnet.WordNetError, match=r"unknown WordNet noun id 'n09999999'"):
    wn.synset("n09999999")
  with pytest.raises(wordnet.WordNetError, match=r"expected 'n' \+ 8 digits"):
    wn.ancestors("bird")


def test_read_class_list(classes, tmp_path):
  assert classes[0] == BRAMBLING and classes[10] == LAIKA and len(classes) == 11
  (tmp_path / "bad.txt").write_text("n00001268\nbird\n")
  with pytest.raises(wordnet.WordNetError, match=r"entry 1 is 'bird'"):
    wordnet.read_class_list(tmp_path / "bad.txt")


# --- closure and LCA ------------------------------------------------------------------
def test_ancestors(wn):
  assert wn.ancestors(BRAMBLING) == {BRAMBLING, FINCH, BIRD, ANIMAL, ORGANISM, ENTITY}
  assert wn.ancestors(LAIKA) == {LAIKA, DOG, ANIMAL, ORGANISM, ENTITY}
  assert wn.ancestors(MINIVAN) == {MINIVAN, VAN, TRUCK, CAR, VEHICLE, ARTIFACT, ENTITY}
  assert wn.ancestors(ENTITY) == {ENTITY}


def test_lowest_common_ancestors(wn):
  assert wn.lowest_common_ancestors(BRAMBLING, GOLDFINCH) == {FINCH}
  assert wn.lowest_common_ancestors(MINIVAN, CAB) == {CAR}
  assert wn.lowest_common_ancestors(MINIVAN, FIRE_ENGINE) == {TRUCK}
  assert wn.lowest_common_ancestors(BEAGLE, CAB) == {ENTITY}
  assert wn.lowest_common_ancestors(BIRD, BRAMBLING) == {BIRD}


def test_lca_height(wn, classes):
  assert wn.lca_height(BEAGLE, BEAGLE) == 0
  assert wn.lca_height(BRAMBLING, GOLDFINCH) == 1  # finch
  assert wn.lca_height(BRAMBLING, CRANE_BIRD) == 2  # bird; its longest path down is to brambling
  assert wn.lca_height(BEAGLE, BRAMBLING) == 3  # animal
  assert wn.lca_height(LAIKA, MALTESE) == 1  # dog, when only these two are leaves
  # With all classes as leaves, a node's height counts its deepest class: dog -> beagle.
  assert wn.lca_height(LAIKA, MALTESE, leaves=classes) == 2
  assert wn.lca_height(CAB, FIRE_ENGINE, leaves=classes) == 3  # vehicle -> truck -> van -> minivan
  with pytest.raises(wordnet.WordNetError, match="not among the leaves"):
    wn.lca_height(BEAGLE, CHILD, leaves=classes)
  heights = wn.heights(classes)
  assert (heights[BRAMBLING], heights[FINCH], heights[ANIMAL], heights[ENTITY]) == (0, 1, 3, 5)


# --- derivation -------------------------------------------------------------------------
def test_derive(wn, classes):
  h = wordnet.derive_hierarchy([BIRD, ("doggies", DOG), FUNGUS], classes, wn, "tiny")
  assert groups(h) == {
      "bird": [("brambling", 0), ("goldfinch", 1), ("crane", 2)],  # one crane: no suffix
      "doggies": [("beagle", 3), ("Maltese dog", 4), ("Laika", 10)],
      "fungus": [("agaric", 6)],
  }
  assert [s.wnid for s in h.superclasses] == [BIRD, DOG, FUNGUS]
  assert h.superclasses[0].subclasses[0].wnid == BRAMBLING
  assert h.num_source_labels == 11
  assert h.source_to_global.tolist() == [0, 1, 2, 3, 4, -1, 6, -1, -1, -1, 5]


def test_duplicate_names_get_their_wnid_only_when_needed(wn, classes):
  h = wordnet.derive_hierarchy([BIRD, DEVICE], classes, wn, "cranes")
  assert groups(h) == {
      "bird": [("brambling", 0), ("goldfinch", 1), (f"crane ({CRANE_BIRD})", 2)],
      "device": [(f"crane ({CRANE_MACHINE})", 5)],
  }


def test_subclass_named_like_a_superclass_is_disambiguated(wn):
  h = wordnet.derive_hierarchy([("beagle", DOG)], [BEAGLE, MALTESE], wn, "clash")
  assert groups(h) == {"beagle": [(f"beagle ({BEAGLE})", 0), ("Maltese dog", 1)]}


def test_overlap_is_refused_with_every_class_listed(wn, classes):
  with pytest.raises(wordnet.WordNetError) as e:
    wordnet.derive_hierarchy([CAR, TRUCK, VEHICLE], classes, wn, "vehicles")
  message = str(e.value)
  assert "3 class(es) lie under more than one superclass" in message
  assert (f"{MINIVAN} 'minivan' (label 8) is under car ({CAR}), truck ({TRUCK}), "
          f"vehicle ({VEHICLE})") in message
  assert f"{CAB} 'cab' (label 7) is under car ({CAR}), vehicle ({VEHICLE})" in message
  assert f"{FIRE_ENGINE} 'fire engine' (label 9)" in message
  assert "nearest, first, drop" in message


@pytest.mark.parametrize("resolve, expected", [
    (wordnet.Resolution("nearest"), {"car": [("cab", 7), ("minivan", 8)],
                                     "truck": [("fire engine", 9)]}),
    (wordnet.Resolution("first"), {"car": [("cab", 7), ("minivan", 8)],
                                   "truck": [("fire engine", 9)]}),
    (wordnet.Resolution("drop"), {"car": [("cab", 7)], "truck": [("fire engine", 9)]}),
    (wordnet.Resolution(overrides={MINIVAN: TRUCK}),
     {"car": [("cab", 7)], "truck": [("minivan", 8), ("fire engine", 9)]}),
    (wordnet.Resolution.parse(f"first, {MINIVAN}=drop"), {"car": [("cab", 7)],
                                                          "truck": [("fire engine", 9)]}),
])
def test_overlap_resolution(wn, classes, resolve, expected):
  assert groups(wordnet.derive_hierarchy([CAR, TRUCK], classes, wn, "v", resolve)) == expected


def test_first_rule_follows_superclass_order(wn, classes):
  h = wordnet.derive_hierarchy([TRUCK, CAR], classes, wn, "v", wordnet.Resolution("first"))
  assert groups(h) == {"truck": [("minivan", 8), ("fire engine", 9)], "car": [("cab", 7)]}


def test_nearest_picks_the_most_specific_of_nested_superclasses(wn, classes):
  h = wordnet.derive_hierarchy([VEHICLE, CAR], classes, wn, "v", wordnet.Resolution("nearest"))
  assert groups(h) == {"vehicle": [("fire engine", 9)], "car": [("cab", 7), ("minivan", 8)]}


def test_nearest_tie_is_still_an_error(wn, classes):
  # minivan is one step below both van and car.
  with pytest.raises(wordnet.WordNetError, match=r"(?s)with a tie for nearest.*'minivan'"):
    wordnet.derive_hierarchy([CAR, VAN], classes, wn, "v", wordnet.Resolution("nearest"))


@pytest.mark.parametrize("overrides, match", [
    ({MINIVAN: BIRD}, r"minivan' is not under 'n00000901'"),
    ({CHILD: CAR}, r"'n00002617': that class is not in the class list"),
    ({CRANE_MACHINE: CAR}, r"'n00003053': that class is under none of the superclasses"),
])
def test_bad_overrides(wn, classes, overrides, match):
  with pytest.raises(wordnet.WordNetError, match=match):
    wordnet.derive_hierarchy([CAR, TRUCK], classes, wn, "v",
                             wordnet.Resolution(overrides=overrides))


def test_resolution_parse():
  assert wordnet.Resolution.parse("") == wordnet.Resolution()
  assert wordnet.Resolution.parse(f"nearest,{MINIVAN}={CAR}") == wordnet.Resolution(
      "nearest", {MINIVAN: CAR})
  with pytest.raises(wordnet.WordNetError, match="two rules"):
    wordnet.Resolution.parse("nearest,first")
  with pytest.raises(wordnet.WordNetError, match="unknown overlap rule 'newest'"):
    wordnet.Resolution.parse("newest")


@pytest.mark.parametrize("supers, class_list, match", [
    ([BIRD, "n09999999"], None, r"unknown WordNet noun id 'n09999999'"),
    ([BIRD, BIRD], None, r"superclass 'n00000901' is given twice"),
    ([BIRD, CHILD], None, r"no class of the class list under them: child \(n00002617\)"),
    ([BIRD], [BRAMBLING, "n07777777"], r"not noun synsets in .*: n07777777 \(label 1\)"),
    ([BIRD], [BRAMBLING, BRAMBLING], r"class list entry 'n00001268' is given twice"),
])
def test_derive_errors(wn, classes, supers, class_list, match):
  with pytest.raises(wordnet.WordNetError, match=match):
    wordnet.derive_hierarchy(supers, class_list or classes, wn, "bad")


# --- the super-sub-hierarchy entry point ------------------------------------------------
def run_cli(*flags):
  return subprocess.run([sys.executable, "-m", "super_sub.train.derive_hierarchy", *flags],
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_writes_a_hierarchy_that_loads(tmp_path):
  out = tmp_path / "tiny.json"
  result = run_cli(f"--wordnet_dir={TESTDATA}", f"--class_list={CLASSES}",
                   f"--superclasses={BIRD},pups={DOG},{CAR},{TRUCK}",
                   f"--resolve={MINIVAN}={TRUCK}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  h = hierarchy.load_hierarchy(out)
  assert h.name == "tiny"  # from the file name
  assert groups(h)["truck"] == [("minivan", 8), ("fire engine", 9)]
  assert re.search(rf"pups\s+{DOG}\s+3\n", result.stdout)
  assert re.search(r"total\s+9 of 11 classes", result.stdout)


def test_cli_refuses_overlaps_without_writing(tmp_path):
  out = tmp_path / "v.json"
  result = run_cli(f"--wordnet_dir={TESTDATA}", f"--class_list={CLASSES}",
                   f"--superclasses={CAR},{TRUCK}", f"--output={out}")
  assert result.returncode != 0
  assert f"{MINIVAN} 'minivan' (label 8) is under car ({CAR}), truck ({TRUCK})" in result.stderr
  assert not out.exists()


def test_cli_requires_flags():
  result = run_cli(f"--class_list={CLASSES}", f"--superclasses={BIRD}", "--output=x.json")
  assert result.returncode != 0 and "--wordnet_dir is required" in result.stderr


# --- the shipped Superclassed ImageNet ---------------------------------------------------
SHIPPED_COUNTS = {  # name: (wnid, subclasses)
    "bird": ("n01503061", 59), "car": ("n02958343", 10), "cat": ("n02121620", 7),
    "dog": ("n02084071", 118), "fruit": ("n13134947", 16), "fungus": ("n12992868", 7),
    "insect": ("n02159955", 27), "monkey": ("n02484322", 13), "snake": ("n01726692", 17),
    "watercraft": ("n04530566", 15),
}
# The command recorded in train/derive_hierarchy.py's docstring, as argv.
SHIPPED_FLAGS = [
    "--wordnet_dir=/usr/share/wordnet",
    "--superclasses=n01503061,n02958343,n02121620,n02084071,n13134947,n12992868,n02159955,"
    "n02484322,n01726692,watercraft=n04530566",
    "--name=superclassed_imagenet",
    "--output=super_sub/hierarchies/superclassed_imagenet.json",
]


def test_shipped_superclassed_imagenet():
  h = hierarchy.load_hierarchy("superclassed_imagenet")
  assert h.name == "superclassed_imagenet" and h.num_source_labels == 1000
  assert {s.name: (s.wnid, len(s.subclasses)) for s in h.superclasses} == SHIPPED_COUNTS
  assert all(7 <= len(s.subclasses) <= 118 for s in h.superclasses)
  labels = [c.source_label for c in h.subclasses]
  assert len(labels) == len(set(labels)) == 289  # disjoint
  assert all(c.wnid for c in h.subclasses)


def test_shipped_command_is_the_documented_one():
  from super_sub.train import derive_hierarchy  # pylint: disable=import-outside-toplevel
  documented = " ".join(derive_hierarchy.__doc__.replace("\\\n", " ").split())
  assert "super-sub-hierarchy " + " ".join(SHIPPED_FLAGS) in documented


def test_shipped_superclassed_imagenet_matches_a_fresh_derivation(tmp_path):
  """Needs WordNet 3.0 in /usr/share/wordnet: skipped without it, except where
  SUPER_SUB_REQUIRE_WORDNET=1 (.ci/run sets it), where its absence is a failure."""
  if not (SYSTEM_WORDNET / "data.noun").is_file():
    message = "WordNet 3.0 not at /usr/share/wordnet (apt-get install wordnet-base)"
    if os.environ.get("SUPER_SUB_REQUIRE_WORDNET") == "1":
      pytest.fail(message + "; SUPER_SUB_REQUIRE_WORDNET=1 requires it")
    pytest.skip(message)
  out = tmp_path / "superclassed_imagenet.json"
  flags = SHIPPED_FLAGS[:-1] + [f"--output={out}"]
  result = run_cli(*flags)
  assert result.returncode == 0, result.stderr
  shipped = importlib.resources.files("super_sub") / "hierarchies" / "superclassed_imagenet.json"
  assert json.loads(out.read_text()) == json.loads(shipped.read_text())


def test_default_class_list_is_tfds_imagenet2012():
  from super_sub.train import derive_hierarchy  # pylint: disable=import-outside-toplevel
  path = derive_hierarchy.default_class_list()
  wnids = wordnet.read_class_list(path)
  assert len(wnids) == 1000 and wnids[0] == "n01440764" and os.path.basename(path) == "labels.txt"
