"""super-sub-analyze never renders a silently wrong report: inputs whose meaning does not fit
are refused with both numbers and the flag that fixes it (STYLE lesson 18), on tiny numpy-
written files; predictions outside the hierarchy are named; skipped examples are counted."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from super_sub import analysis
from super_sub import hierarchy as hierarchy_lib

AnalysisError = analysis.AnalysisError
RNG = np.random.default_rng(0)


@pytest.fixture(name="tiny", scope="module")
def _tiny():
  """5 subclasses over a 30-label source dataset."""
  return hierarchy_lib.from_groups(
      "tiny", [("A", [("a0", 10), ("a1", 11), ("a2", 12)]), ("B", [("b0", 20), ("b1", 21)])],
      num_source_labels=30)


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def _logits(labels, classes):
  """Logits whose arg-max is the label for most rows."""
  out = RNG.normal(size=(len(labels), classes))
  out[np.arange(len(labels)), labels] += 4
  return out


def _analyze(path, hierarchy, **kwargs):
  return analysis.analyze(analysis.read_predictions(path, kwargs.pop("label_space", None)),
                          hierarchy, **kwargs)


def test_probabilities_saved_as_logits_are_refused(tmp_path):
  labels = np.arange(10) % 10
  logits = _logits(labels, 10)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  fashion = hierarchy_lib.load_hierarchy("fashion_mnist")
  path = _npz(tmp_path / "p.npz", labels=labels, logits=probs)
  with pytest.raises(AnalysisError, match=r"p.npz: field 'logits' holds probabilities.*"
                                          r"save them under 'probs'"):
    analysis.read_predictions(path)
  # The same numbers under 'probs', or real logits under 'logits', are analysed.
  assert _analyze(_npz(tmp_path / "q.npz", labels=labels, probs=probs), fashion)["top1"] == 1
  assert _analyze(_npz(tmp_path / "r.npz", labels=labels, logits=logits), fashion)["top1"] == 1
  csv = tmp_path / "p.csv"
  csv.write_text("label,logits\n" + "".join(f"{y},{' '.join(f'{v:.4f}' for v in row)}\n"
                                            for y, row in zip(labels, probs)))
  with pytest.raises(AnalysisError, match=r"p.csv: field 'logits' holds probabilities.*"
                                          r"'prob_<id>' columns"):
    analysis.read_predictions(csv)


def test_logits_saved_as_probabilities_are_refused(tmp_path):
  labels = np.arange(4)
  path = _npz(tmp_path / "l.npz", labels=labels, probs=_logits(labels, 4))
  with pytest.raises(AnalysisError, match=r"l.npz, example 0: field 'probs' holds .* outside "
                                          r"\[0, 1\] \(4 of 4 rows.*save them under 'logits'"):
    analysis.read_predictions(path)


def test_scores_wider_than_the_label_space_are_refused(tmp_path):
  """1000-column logits with --hierarchy=fashion_mnist used to give '10 examples, top-1 80%'."""
  labels = RNG.integers(0, 10, 10)
  path = _npz(tmp_path / "wide.npz", labels=labels, logits=_logits(labels, 1000))
  with pytest.raises(AnalysisError) as refused:
    _analyze(path, hierarchy_lib.load_hierarchy("fashion_mnist"))
  message = str(refused.value)
  assert "'logits' has 1000 columns" in message and "10 subclasses" in message
  assert "--hierarchy=superclassed_imagenet --label_space=source" in message


def test_scores_narrower_than_the_label_space_are_refused(tmp_path):
  """10-column logits with ImageNet labels up to 999 used to give a report too."""
  labels = RNG.integers(0, 1000, 10)
  labels[0] = 999
  path = _npz(tmp_path / "narrow.npz", labels=labels, logits=RNG.normal(size=(10, 10)))
  with pytest.raises(AnalysisError) as refused:
    _analyze(path, hierarchy_lib.load_hierarchy("superclassed_imagenet"), label_space="source",
             unmapped_labels="skip")
  message = str(refused.value)
  assert "'logits' has 10 columns" in message and "1000 source labels" in message
  assert "--hierarchy=fashion_mnist" in message


def test_scores_of_the_other_label_space_suggest_label_space(tiny, tmp_path):
  labels = np.array([10, 11, 20, 21])
  path = _npz(tmp_path / "source.npz", labels=labels, logits=_logits(labels, 30))
  with pytest.raises(AnalysisError, match=r"'logits' has 30 columns.*5 subclasses.*"
                                          r"pass --label_space=source"):
    _analyze(path, tiny)
  assert _analyze(path, tiny, label_space="source")["num_examples"] == 4


def test_labels_outside_the_label_space_are_refused(tmp_path):
  path = _npz(tmp_path / "labels.npz", labels=np.array([7, 5000, 8]),
              predictions=np.array([7, 8, 8]))
  with pytest.raises(AnalysisError) as refused:
    _analyze(path, hierarchy_lib.load_hierarchy("superclassed_imagenet"), label_space="source",
             unmapped_labels="skip")  # skipping never hides a label beyond the dataset
  message = str(refused.value)
  assert "example 1: label 5000" in message and "1000 source labels" in message
  assert "1 of 3 labels" in message and "--hierarchy" in message


def test_predictions_that_disagree_with_the_scores_are_refused(tmp_path):
  labels = np.arange(10)
  logits = _logits(labels, 10)
  predictions = logits.argmax(axis=1)
  predictions[[3, 7]] = (predictions[[3, 7]] + 1) % 10
  path = _npz(tmp_path / "both.npz", labels=labels, logits=logits, predictions=predictions)
  with pytest.raises(AnalysisError, match=r"both.npz: field 'predictions' disagrees with the "
                                          r"arg-max of 'logits' in 2 of 10 rows \(first: "
                                          r".*example 3"):
    analysis.read_predictions(path)
  # Ties: any of the largest scores agrees.
  tied = _npz(tmp_path / "tied.npz", labels=np.array([0, 1]), predictions=np.array([1, 1]),
              probs=np.array([[0.5, 0.5], [0.2, 0.8]]))
  assert analysis.read_predictions(tied).predictions.tolist() == [1, 1]


def test_a_file_that_is_not_an_npz_archive_says_so(tmp_path):
  text = tmp_path / "text.npz"
  text.write_text("label,prediction\n1,2\n")
  with pytest.raises(AnalysisError) as refused:
    analysis.read_predictions(text)
  assert f"{text}: not a readable NPZ file: not an .npz archive" in str(refused.value)
  assert "pickle" not in str(refused.value)
  lone = tmp_path / "lone.npz"
  with open(lone, "wb") as f:
    np.save(f, np.arange(3))
  with pytest.raises(AnalysisError, match=r"lone.npz: .*not an .npz archive.*single .npy"):
    analysis.read_predictions(lone)


def test_predictions_outside_the_hierarchy_are_named(tmp_path):
  """ImageNet ids outside superclassed_imagenet (276 hyena, 390 eel) get TFDS's imagenet2012
  label names (wnids), offline; subclasses keep their own names."""
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  p = analysis.Predictions(labels=[7, 8, 7, 8, 0], predictions=[7, 276, 390, 276, 8],
                           label_space="source")
  out = tmp_path / "report"
  r = analysis.write_report(out, p, h, unmapped_labels="skip")
  assert r["outside"]["top_source_predictions"] == [
      {"source_label": 276, "name": "n02117135", "count": 2},
      {"source_label": 390, "name": "n02526121", "count": 1}]
  page = (out / "index.html").read_text(encoding="utf-8")
  assert "<tr><td>276</td><td>n02117135</td><td>2</td></tr>" in page
  mistakes = (out / "mistakes.csv").read_text(encoding="utf-8").splitlines()
  assert "1,,1,hen,-1,n02117135,276,outside," in mistakes
  # The summary counts the example skipped for its label (0: outside the hierarchy).
  assert r["num_skipped"] == 1
  assert analysis.summary(r).startswith(
      "4 examples (1 skipped: label outside the hierarchy), top-1 25.00%")


def test_cli_summary_counts_skipped_and_overwrite_exists_as_suggested(tiny, tmp_path):
  tiny.to_json(tmp_path / "tiny.json")
  path = _npz(tmp_path / "p.npz", labels=np.array([10, 7, 20]),
              predictions=np.array([10, 7, 21]))
  out = tmp_path / "taken"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  command = [sys.executable, "-m", "super_sub.train.analyze", f"--predictions={path}",
             f"--hierarchy={tmp_path / 'tiny.json'}", "--label_space=source",
             "--unmapped_labels=skip", f"--output={out}"]
  refused = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  assert refused.returncode == 2 and "Traceback" not in refused.stderr
  (line,) = [line for line in refused.stderr.splitlines() if "Refusing to replace" in line]
  assert re.findall(r"--(\w+)", line) == ["overwrite"], refused.stderr
  assert (out / "notes.txt").exists()
  done = subprocess.run(command + ["--overwrite"], capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines()[0].startswith(
      "2 examples (1 skipped: label outside the hierarchy), top-1 50.00%")
  assert json.loads((out / "report.json").read_text())["num_skipped"] == 1
