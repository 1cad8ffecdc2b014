"""Tests for super_sub.analysis and super-sub-analyze: numbers by hand, files, bad input.

The tiny hierarchy used throughout (global index: source label):
  A: a0=0 (10), a1=1 (11), a2=2 (12)
  B: b0=3 (20), b1=4 (21)        num_source_labels=30
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from super_sub import analysis
from super_sub import hierarchy as hierarchy_lib
from super_sub.hierarchy import wordnet
from super_sub.analysis import plots

WORDNET = pathlib.Path(__file__).parent / "testdata" / "wordnet"
AnalysisError = analysis.AnalysisError


@pytest.fixture(scope="module")
def tiny():
  return hierarchy_lib.from_groups(
      "tiny", [("A", [("a0", 10), ("a1", 11), ("a2", 12)]), ("B", [("b0", 20), ("b1", 21)])],
      num_source_labels=30)


def write_csv(path, header, rows):
  path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n",
                  encoding="utf-8")
  return path


# --- numbers ------------------------------------------------------------------------

def test_numbers_hand_computed(tiny):
  # Mistakes: a0->a1 (within A), a2->b0 (across), b1->a2 (across).
  p = analysis.Predictions(labels=[0, 0, 1, 2, 3, 4, 4], predictions=[0, 1, 1, 3, 3, 4, 2],
                           top5=[[0, 1], [1, 2], [1, 0], [3, 2], [3, 4], [4, 3], [2, 3]])
  r = analysis.analyze(p, tiny, top_confusions=2)
  assert (r["num_examples"], r["top1"], r["top5"]) == (7, 4 / 7, 5 / 7)
  assert r["superclass_top1"] == 5 / 7
  assert r["errors"] == {"total": 3, "within_superclass": 1, "across_superclass": 2,
                         "outside_hierarchy": 0}
  assert r["within_superclass_share"] == 1 / 3
  # By chance: a0 and a2 have 2 of 4 other classes as siblings, b1 has 1 of 4.
  assert r["within_superclass_share_chance"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
  assert r["superclass_names"] == r["superclass_confusion_columns"] == ["A", "B"]
  assert r["superclass_confusion"] == [[3, 1], [1, 2]]
  assert r["per_superclass"] == {
      "A": {"count": 4, "num_subclasses": 3, "top1": 0.5, "superclass_top1": 0.75,
            "errors_within": 1, "errors_across": 1, "errors_outside": 0},
      "B": {"count": 3, "num_subclasses": 2, "top1": 2 / 3, "superclass_top1": 2 / 3,
            "errors_within": 0, "errors_across": 1, "errors_outside": 0}}
  # Equal counts: ordered by (true, predicted); only the 2 asked for.
  assert [(c["true_name"], c["predicted_name"], c["count"], c["share_of_true"], c["kind"])
          for c in r["top_confusions"]] == [("a0", "a1", 1, 0.5, "within"),
                                            ("a2", "b0", 1, 1.0, "across")]
  a0, a1 = r["per_subclass"][:2]
  assert (a0["count"], a0["top1"], a0["most_confused_with"]) == (2, 0.5, {"name": "a1",
                                                                          "count": 1})
  assert a1["most_confused_with"] is None
  assert r["outside"] is None and r["mistake_severity"] is None and r["multilabel"] is None
  json.dumps(r)  # plain JSON types only


def test_source_label_space_and_outside_column(tiny):
  # Source ids: 29 and 5 are not in the hierarchy; 999 is beyond the source dataset.
  p = analysis.Predictions(labels=[10, 10, 11, 12, 20, 21, 21, 21],
                           predictions=[10, 11, 11, 20, 29, 21, 5, 999], label_space="source")
  r = analysis.analyze(p, tiny)
  assert r["top1"] == 3 / 8
  assert r["errors"] == {"total": 5, "within_superclass": 1, "across_superclass": 1,
                         "outside_hierarchy": 3}
  assert r["superclass_confusion_columns"] == ["A", "B", "outside"]
  assert r["superclass_confusion"] == [[3, 1, 0], [0, 1, 3]]
  assert r["per_superclass"]["B"]["errors_outside"] == 3
  assert r["outside"] == {"count": 3, "top_source_predictions": [  # names: not ImageNet's
      {"source_label": 5, "name": None, "count": 1},
      {"source_label": 29, "name": None, "count": 1},
      {"source_label": 999, "name": None, "count": 1}]}
  b1_out = r["top_confusions"][0]
  assert (b1_out["true_name"], b1_out["predicted"], b1_out["predicted_name"],
          b1_out["count"], b1_out["kind"]) == ("b1", -1, "outside", 2, "outside")
  assert r["per_subclass"][4]["most_confused_with"] == {"name": "outside", "count": 2}


def test_labels_outside_the_hierarchy_are_an_error_or_skipped(tiny):
  p = analysis.Predictions(labels=[10, 7, 20], predictions=[10, 7, 21], label_space="source")
  with pytest.raises(AnalysisError, match=r"example 1: label 7 is not a source label.*"
                     r"1 of 3.*--unmapped_labels=skip"):
    analysis.analyze(p, tiny)
  r = analysis.analyze(p, tiny, unmapped_labels="skip")
  assert (r["num_examples"], r["num_skipped"], r["top1"]) == (2, 1, 0.5)
  with pytest.raises(AnalysisError, match=r"example 2: label 5 is outside hierarchy 'tiny'.*"
                     r"0\.\.4.*label_space='source'"):
    analysis.analyze(analysis.Predictions(labels=[0, 1, 5], predictions=[0, 1, 2]), tiny)


def test_multilabels(tiny, tmp_path):
  p = analysis.Predictions(labels=[10, 10, 11, 12, 20, 21, 21],
                           predictions=[10, 11, 11, 20, 29, 21, 5], label_space="source",
                           file_names=[f"img/{i}.png" for i in range(7)])
  lists = [[10], [10, 11], [], [12], [20, 29], [21], [21]]  # example 2 unlabeled
  path = tmp_path / "real.json"
  path.write_text(json.dumps(lists))
  r = analysis.analyze(p, tiny, multilabels=analysis.read_multilabels(path, p))
  # Labeled: 6. Correct with any acceptable label: 0, 1 (a1 ok), 4 (29 ok), 5 -> 4 / 6.
  assert r["multilabel_top1"] == 4 / 6
  assert r["multilabel"] == {
      "labeled_examples": 6, "unlabeled_examples": 1, "top1": 4 / 6, "top1_original": 2 / 6,
      "errors_now_correct": {"total": 2, "within_superclass": 1, "across_superclass": 0,
                             "outside_hierarchy": 1},
      "correct_now_wrong": 0}
  assert r["per_superclass"]["A"]["multilabel_top1"] == 2 / 3
  # The same labels keyed by base file name.
  path.write_text(json.dumps({f"{i}.png": lab for i, lab in enumerate(lists)}))
  assert analysis.analyze(p, tiny, multilabels=analysis.read_multilabels(path, p))[
      "multilabel"]["top1"] == 4 / 6
  path.write_text(json.dumps(lists[:6]))
  with pytest.raises(AnalysisError, match=r"real.json: has 6 entries but <arrays> has 7"):
    analysis.read_multilabels(path, p)
  path.write_text(json.dumps([[1], [2], ["x"], [], [], [], []]))
  with pytest.raises(AnalysisError, match=r"real.json, example 2: expected a list of"):
    analysis.read_multilabels(path, p)
  path.write_text(json.dumps({"0.png": [10]}))
  with pytest.raises(AnalysisError, match=r"no entry for 'img/1.png'.*6 of 7"):
    analysis.read_multilabels(path, p)


def test_mistake_severity_with_the_wordnet_fixture():
  # Leaves brambling, goldfinch, crane (bird) and beagle, Maltese (dog): heights
  # finch 1, bird 2 (bird > finch > brambling), dog 2 (dog > hunting dog > beagle), animal 3.
  sub = hierarchy_lib.Subclass
  h = hierarchy_lib.Hierarchy("wn", (
      hierarchy_lib.Superclass("bird", "n00000901", (
          sub("brambling", "n00001268", 0), sub("goldfinch", "n00001365", 1),
          sub("crane", "n00001512", 2))),
      hierarchy_lib.Superclass("dog", "n00001642", (
          sub("beagle", "n00001987", 3), sub("Maltese", "n00002089", 4)))))
  p = analysis.Predictions(labels=[0, 0, 0, 3, 1, 2], predictions=[1, 1, 2, 4, 3, 2])
  severity = analysis.analyze(p, h, wordnet=wordnet.read_wordnet(WORDNET))["mistake_severity"]
  # brambling->goldfinch x2 (finch, 1), brambling->crane (bird, 2), beagle->Maltese (dog, 2),
  # goldfinch->beagle (animal, 3).
  assert severity["mean_lca_height"] == pytest.approx((2 * 1 + 2 + 2 + 3) / 5)
  assert (severity["mistakes"], severity["within_superclass"],
          severity["across_superclass"]) == (5, 1.5, 3.0)
  assert severity["histogram"] == {"1": 2, "2": 2, "3": 1}
  with pytest.raises(AnalysisError, match=r"WordNet id on every subclass.*'tiny'"):
    analysis.analyze(analysis.Predictions([0], [1]), hierarchy_lib.from_groups(
        "tiny", [("A", [("a0", 0), ("a1", 1)])]), wordnet=wordnet.read_wordnet(WORDNET))


def test_bins_never_straddle_superclasses():
  h = hierarchy_lib.from_groups("big", [(f"s{k}", [(f"c{k}_{j}", 1000 * k + j)
                                                   for j in range(size)])
                                        for k, size in enumerate([1, 7, 500, 492])])
  cell = plots.bins(h, max_cells=300)
  assert cell.max() + 1 <= 300 + 4 and np.all(np.diff(cell) >= 0)
  for a in np.unique(cell):
    assert len(set(h.superclass_of[cell == a])) == 1


# --- the report folder --------------------------------------------------------------

def _images(folder, names):
  folder.mkdir()
  for i, name in enumerate(names):
    Image.fromarray(np.full((24, 20, 3), 40 * i % 255, np.uint8)).save(folder / name)


def _check_folder(out):
  pngs = sorted(out.rglob("*.png"))
  for png in pngs:
    with Image.open(png) as image:
      assert image.format == "PNG"
      assert 300 <= image.width <= 2500 and 200 <= image.height <= 2500, (png, image.size)
    assert png.stat().st_size < 400_000
  page = (out / "index.html").read_text(encoding="utf-8")
  links = re.findall(r'(?:src|href)="([^"]+)"', page)
  assert not [x for x in links if re.match(r"[a-z]+:|/", x)]  # relative links only
  targets = {link for link in links if not link.startswith("#")}
  assert all((out / link).is_file() for link in targets), targets
  assert {p.relative_to(out).as_posix() for p in pngs} <= targets  # every picture shown
  for anchor in re.findall(r'href="#([^"]+)"', page):
    assert re.search(f"id={anchor}[ >]", page)
  return pngs, page


def test_write_report_with_images(tiny, tmp_path):
  names = [f"{i}.png" for i in range(8)]
  _images(tmp_path / "images", names)
  p = analysis.Predictions(labels=[10, 10, 11, 12, 20, 21, 21, 21],
                           predictions=[10, 11, 11, 20, 29, 21, 5, 28], label_space="source",
                           probs=np.eye(30)[[10, 11, 11, 20, 29, 21, 5, 28]] * 0.9,
                           file_names=names)
  out = tmp_path / "report"
  r = analysis.write_report(out, p, tiny, images=analysis.images_from_folder(tmp_path /
                                                                               "images"))
  assert json.loads((out / "report.json").read_text()) == r
  pngs, page = _check_folder(out)
  assert {p.name for p in pngs} == {
      "subclass_confusion.png", "superclass_confusion.png", "errors_per_superclass.png",
      "000_A_mistakes.png", "001_B_mistakes.png"}
  assert "<b>20.00%</b> of the 5 errors stay inside the true superclass" in page
  assert "<td>top-1</td><td>37.50%</td>" in page
  mistakes = (out / "mistakes.csv").read_text().splitlines()
  assert mistakes[0].startswith("example,file_name,true,true_name,predicted")
  assert len(mistakes) == 1 + 5 and "7,7.png,4,b1,-1,outside,28,outside,0.9" in mistakes
  assert len((out / "confusion_pairs.csv").read_text().splitlines()) == 1 + 4
  # A second report replaces the first; no temporary folders are left behind.
  analysis.write_report(out, p, tiny)
  assert not (out / "superclasses").exists()
  assert sorted(x.name for x in tmp_path.iterdir()) == ["images", "report"]


def test_many_classes_get_one_picture_per_superclass(tmp_path):
  n = plots.NAMED_LIMIT + 2  # too many names for one matrix: one picture per superclass
  h = hierarchy_lib.from_groups("many", [(f"s{k}", [(f"c{k}_{j}", 100 * k + j)
                                                    for j in range(n // 2)])
                                         for k in range(2)])
  rng = np.random.default_rng(0)
  labels = rng.integers(0, n, 2000)
  preds = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, n, 2000))
  analysis.write_report(tmp_path / "r", analysis.Predictions(labels, preds), h)
  pngs, _ = _check_folder(tmp_path / "r")
  assert sorted(p.name for p in pngs if p.parent.name == "superclasses") == [
      "000_s0_confusion.png", "001_s1_confusion.png"]


# --- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("header,rows,match", [
    (None, None, r"bad.csv: empty file"),
    (["label", "prediction"], [], r"bad.csv: holds no examples"),
    (["label", "guess"], [[0, 1]], r"bad.csv, line 1: needs the columns 'label' and "
                                   r"'prediction'.*\['label', 'guess'\]"),
    (["label", "prediction"], [[0, 1], [1, "x"]], r"bad.csv, line 3, column 'prediction': "
                                                  r"'x' is not an integer class id"),
    (["label", "prediction"], [[0, 1], [1]], r"bad.csv, line 3: 1 fields, but the header"),
    (["label", "prediction"], [[0, 1], [9, 1]], r"bad.csv, line 3: label 9 is outside"),
    (["label", "prediction", "top5"], [[0, 1, "1 0"], [1, 1, ""]],
     r"bad.csv, line 3, column 'top5': empty"),
    (["label", "logits"], [[0, "1 2 3"], [1, "1 nan 3"]],
     r"bad.csv, line 3: field 'logits' holds NaN"),
    (["label", "logits"], [[0, "1 2 3"], [1, "1 2"]],
     r"bad.csv, line 3, column 'logits': 2 values, but line 2 has 3"),
    (["label", "prob_0", "prob_1"], [[0, 0.5, 0.5], [1, "nan", 1]],
     r"bad.csv, line 3, column 'prob_0': NaN"),
])
def test_bad_csv(tiny, tmp_path, header, rows, match):
  path = tmp_path / "bad.csv"
  if header is None:
    path.write_text("")
  else:
    write_csv(path, header, rows)
  with pytest.raises(AnalysisError, match=match):
    analysis.analyze(analysis.read_predictions(path), tiny)


def test_bad_npz(tmp_path):
  path = tmp_path / "bad.npz"
  path.write_bytes(b"")
  with pytest.raises(AnalysisError, match=r"bad.npz: not a readable NPZ file"):
    analysis.read_predictions(path)
  np.savez(path, labels=np.arange(5), predictions=np.arange(4))
  with pytest.raises(AnalysisError, match=r"bad.npz: field 'predictions' has 4 entries but "
                                          r"'labels' has 5"):
    analysis.read_predictions(path)
  np.savez(path, labels=np.arange(3), logits=np.array([[0, 1.0], [np.nan, 1], [0, 1]]))
  with pytest.raises(AnalysisError, match=r"bad.npz, example 1: field 'logits' holds NaN"):
    analysis.read_predictions(path)
  np.savez(path, labels=np.arange(3), probs=np.eye(3))
  assert list(analysis.read_predictions(path).predictions) == [0, 1, 2]
  np.savez(path, labels=np.arange(3), predictions=np.arange(3), label_space="superclass")
  with pytest.raises(AnalysisError, match=r"superclass predictions"):
    analysis.read_predictions(path)
  np.savez(path, labels=np.arange(3))
  with pytest.raises(AnalysisError, match=r"needs the fields 'labels' and one of"):
    analysis.read_predictions(path)


def test_failures_leave_nothing_half_written(tiny, tmp_path):
  p = analysis.Predictions(labels=[0, 1, 2], predictions=[1, 1, 2],
                           file_names=["0.png", "1.png", "gone.png"], source="p.npz")
  _images(tmp_path / "images", ["0.png", "1.png"])
  out = tmp_path / "report"
  analysis.write_report(out, p, tiny)
  before = (out / "report.json").read_text()
  bad = analysis.Predictions(labels=[0, 1, 2], predictions=[1, 2, 0],
                             file_names=["0.png", "1.png", "gone.png"], source="p.npz")
  with pytest.raises(AnalysisError, match=r"p.npz, example 2: image 'gone.png' not found"):
    analysis.write_report(out, bad, tiny, images=analysis.images_from_folder(
        tmp_path / "images"))
  assert (out / "report.json").read_text() == before  # the previous report is untouched
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "thesis.tex").write_text("x")
  with pytest.raises(AnalysisError, match=r"mine exists and is not a report folder"):
    analysis.write_report(tmp_path / "mine", p, tiny)
  assert (tmp_path / "mine" / "thesis.tex").exists()
  assert not [x for x in tmp_path.iterdir() if x.name.startswith(".tmp")]


# --- the command line ----------------------------------------------------------------

def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "super_sub.train.analyze", *args], env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_cli_end_to_end(tiny, tmp_path):
  tiny.to_json(tmp_path / "tiny.json")
  names = [f"{i}.png" for i in range(7)]
  _images(tmp_path / "images", names)
  csv_path = write_csv(tmp_path / "preds.csv", ["file_name", "label", "prediction", "top5"], [
      (n, lab, pred, f"{pred} 10") for n, lab, pred in
      zip(names, [10, 10, 11, 12, 20, 21, 21], [10, 11, 11, 20, 29, 21, 5])])
  (tmp_path / "real.json").write_text(json.dumps([[10], [10, 11], [], [12], [20, 29], [21],
                                                  [21]]))
  out = tmp_path / "out"
  result = _cli(f"--predictions={csv_path}", f"--hierarchy={tmp_path / 'tiny.json'}",
                f"--output={out}", "--label_space=source", f"--images_dir={tmp_path / 'images'}",
                f"--multilabel={tmp_path / 'real.json'}", "--top_confusions=3")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "7 examples, top-1 42.86%, 4 errors: 1 within the superclass (25.0%)" in result.stdout
  report = json.loads((out / "report.json").read_text())
  assert (report["multilabel_top1"], len(report["top_confusions"])) == (4 / 6, 3)
  assert report["top5"] == 4 / 7  # rows 0, 1 (10 in top-5), 2, 5
  pngs, _ = _check_folder(out)
  assert len(pngs) == 5

  (tmp_path / "broken.json").write_text(json.dumps({"name": "x", "superclasses": [
      {"name": "A", "subclasses": [{"name": "a", "source_label": 0, "colour": "red"}]}]}))
  result = _cli(f"--predictions={csv_path}", f"--hierarchy={tmp_path / 'broken.json'}",
                f"--output={tmp_path / 'never'}")
  assert result.returncode != 0
  assert re.search(r"broken.json: superclasses\[0\].*unknown key\(s\) \['colour'\]",
                   result.stderr)
  assert not (tmp_path / "never").exists()


def test_images_from_a_tfds_dataset(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import super_sub.datasets  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  name = "superclassed_synthetic/smoke"
  tfds.builder(name, data_dir=str(tmp_path)).download_and_prepare()
  load = analysis.images_from_tfds(name, "validation", str(tmp_path))
  got = load({"validation/000003.png": "p.npz, example 0"})
  assert got["validation/000003.png"].shape == (16, 16, 3)
  with pytest.raises(AnalysisError, match=r"p.npz, example 4: image 'nope.png' not found in "
                                          r"TFDS dataset .*split 'validation'"):
    load({"validation/000003.png": "p.npz, example 0", "nope.png": "p.npz, example 4"})
  elsewhere = tmp_path / "elsewhere"
  with pytest.raises(AnalysisError, match=rf"{name}/.* is not prepared in {elsewhere}: pass "
                                          r"--data_dir="):
    analysis.images_from_tfds(name, "validation", str(elsewhere))({"a.png": "p.npz"})


def test_images_from_a_folder_dataset_read_from_the_folder(tmp_path):
  """--images_dataset=folder:<PATH>: the file names a folder dataset stores are relative to
  PATH, so the images come from the folder without its prepared data."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  (tmp_path / "photos" / "test" / "cat").mkdir(parents=True)
  Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "photos" / "test" / "cat" / "a.png")
  load = analysis.images_from_tfds(f"folder:{tmp_path / 'photos'}", "test")
  got = load({"test/cat/a.png": "p.npz, example 0"})
  assert got["test/cat/a.png"].shape == (30, 40, 3)
  assert tuple(got["test/cat/a.png"][0, 0]) == (200, 10, 10)
  with pytest.raises(AnalysisError, match=r"p.npz, example 2: image 'test/cat/b.png' not found"):
    load({"test/cat/b.png": "p.npz, example 2"})
  with pytest.raises(AnalysisError, match=r"image folder .*nowhere.* does not exist"):
    analysis.images_from_tfds(f"folder:{tmp_path / 'nowhere'}", "test")
