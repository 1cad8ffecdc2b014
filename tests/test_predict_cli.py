"""super-sub-predict as a batch tool: every good image answered, each bad one reported, folders
searched, the bundle found from the paths users give, probabilities named. Runs the committed
tiny bundle (tests/testdata/edge_bundle), so nothing is trained."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from super_sub import runtime
from super_sub.runtime import classify

BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "edge_bundle")


def _predict(*args, env=None, cwd=None):
  return subprocess.run([sys.executable, "-m", "super_sub.export.predict", *map(str, args)],
                        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
                        env=None if env is None else {**os.environ, **env})


def _png(path, seed):
  """Black-and-white noise at the bundle's 12 x 12: the toy router sends some of it to each
  superclass (grey noise all goes to the one without a specialist)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  noise = np.random.default_rng(seed).integers(0, 2, (12, 12), np.uint8) * 255
  Image.fromarray(noise).save(path)
  return str(path)


@pytest.fixture(name="batch")
def _batch(tmp_path):
  """Two good images with a corrupt one between them."""
  good = [_png(tmp_path / "a.png", 0), _png(tmp_path / "c.png", 1)]
  bad = tmp_path / "b.png"
  bad.write_text("not an image")
  return [good[0], str(bad), good[1]]


def _expected(paths, mode="hard", k=2):
  lite = runtime.TwoStageLite(BUNDLE)
  out = lite.predict(runtime.load_images(paths, lite.input_shape, lite.framing), mode=mode, k=k)
  return lite, out


def test_one_corrupt_image_is_reported_and_the_others_answered_json(batch):
  result = _predict(f"--bundle={BUNDLE}", "--json", *batch)
  assert result.returncode == 1, result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["image"] for r in rows] == batch
  assert rows[1] == {"image": batch[1], "error": rows[1]["error"]}
  assert rows[1]["error"].startswith("cannot decode as an image")
  lite, out = _expected([batch[0], batch[2]])
  for row, i in ((rows[0], 0), (rows[2], 1)):
    assert "error" not in row
    assert row["label_index"] == int(out["label"][i])
    assert row["label"] == lite.hierarchy.subclass_names[row["label_index"]]
  assert "1 of 3 images failed" in result.stderr


def test_one_corrupt_image_is_reported_and_the_others_answered_text(batch):
  result = _predict(f"--bundle={BUNDLE}", *batch)
  assert result.returncode == 1, result.stderr
  lines = result.stdout.splitlines()
  assert [line.split("\t")[0] for line in lines] == batch
  assert lines[1].startswith(f"{batch[1]}\terror: cannot decode as an image")
  lite, out = _expected([batch[0], batch[2]])
  for line, i in ((lines[0], 0), (lines[2], 1)):
    assert line.split("\t")[2].startswith(lite.hierarchy.subclass_names[int(out["label"][i])])
  # All good: exit 0 and no error line.
  good = _predict(f"--bundle={BUNDLE}", batch[0], batch[2])
  assert good.returncode == 0 and "error" not in good.stdout and not good.stderr.strip()


def test_folders_expand_recursively_sorted_and_bad_arguments_are_rows(tmp_path):
  photos = tmp_path / "photos"
  expected = [_png(photos / "B.PNG", 0), _png(photos / "a" / "z.JpG", 1),
              _png(photos / "a.png", 2)]
  _png(photos / ".hidden" / "x.png", 3)
  _png(photos / ".y.png", 4)
  (photos / "notes.txt").write_text("not an image")
  (tmp_path / "empty").mkdir()
  args = [photos, tmp_path / "empty", tmp_path / "missing.png"]
  got = classify.expand(args)
  assert got[:3] == [(p, None) for p in sorted(expected)]
  assert [path for path, _ in got[3:]] == [str(tmp_path / "empty"), str(tmp_path / "missing.png")]
  result = _predict(f"--bundle={BUNDLE}", "--json", *args)
  assert result.returncode == 1
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["image"] for r in rows] == sorted(expected) + [str(tmp_path / "empty"),
                                                           str(tmp_path / "missing.png")]
  assert all("error" not in r for r in rows[:3])
  assert rows[3]["error"].startswith("a folder with no image files")
  assert rows[4]["error"] == "no such file or folder"


def test_batches_give_the_same_rows_in_order(batch, tmp_path):
  """classify decodes and predicts `batch_size` images at a time (a large folder never lies in
  memory whole); rows come out in argument order whatever the batch size."""
  lite = runtime.TwoStageLite(BUNDLE)
  paths = [*batch, _png(tmp_path / "d.png", 2), _png(tmp_path / "e.png", 3)]
  whole = list(classify.classify(lite, paths, mode="soft", k=3))
  assert [r["image"] for r in whole] == paths and "error" in whole[1]
  for batch_size in (1, 2, 3):
    assert list(classify.classify(lite, paths, mode="soft", k=3, batch_size=batch_size)) == whole
  with pytest.raises(ValueError, match="batch_size"):
    next(classify.classify(lite, paths, batch_size=0))


def test_bundle_is_found_from_its_manifest_or_export_folder(tmp_path):
  image = _png(tmp_path / "a.png", 0)
  plain = _predict(f"--bundle={BUNDLE}", "--json", image)
  assert plain.returncode == 0, plain.stderr
  export = tmp_path / "export"
  shutil.copytree(BUNDLE, export / "tflite")
  (export / "manifest.json").write_text("{}")  # the export's own manifest, not the bundle's
  for given in (os.path.join(BUNDLE, "manifest.json"), export, export / "manifest.json",
                export / "tflite" / "manifest.json"):
    result = _predict(f"--bundle={given}", "--json", image)
    assert (result.returncode, result.stdout) == (0, plain.stdout), (given, result.stderr)
  for given, says in ((os.path.join(BUNDLE, "generalist.tflite"), "is a file; expected"),
                      (tmp_path, "holds no manifest.json and no tflite/manifest.json"),
                      (tmp_path / "nowhere", "no such file or folder")):
    result = _predict(f"--bundle={given}", image)
    assert result.returncode == 2, (given, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert says in line and "manifest.json" in line and "export folder" in line


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_each_probability_is_named_in_both_modes(tmp_path, mode):
  paths = [_png(tmp_path / f"{i}.png", i) for i in range(12)]
  result = _predict(f"--bundle={BUNDLE}", "--json", f"--mode={mode}", "--soft_k=3", *paths)
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  lite, out = _expected(paths, mode, 3)
  h = lite.hierarchy
  for i, row in enumerate(rows):
    label = row["label_index"]
    own = float(out["superclass_probs"][i, h.superclass_of[label]])
    given = (float(out["label_probs"][i, label]) if mode == "hard"
             else float(out["label_probs"][i, label]) / own)
    assert row["label_prob_given_superclass"] == pytest.approx(given, abs=1e-5)
    assert row["label_prob_joint"] == pytest.approx(own * given, abs=1e-5)
    assert row["label_prob"] == row[classify.LABEL_PROB_IS[mode]]
  if mode == "hard":  # some rows went to a specialist, whose answer is not certain
    assert min(r["label_prob_given_superclass"] for r in rows) < 0.99
  text = _predict(f"--bundle={BUNDLE}", f"--mode={mode}", "--soft_k=3", paths[0])
  assert text.stdout.split("\t")[2] == (
      f"{rows[0]['label']} ({rows[0]['label_prob_joint']:.3f} joint, "
      f"{rows[0]['label_prob_given_superclass']:.3f} given its superclass)\n")
  helped = _predict("--help")
  assert "label_prob_given_superclass" in helped.stdout + helped.stderr


def test_litert_info_line_is_hidden_unless_asked_for(tmp_path):
  image = _png(tmp_path / "a.png", 0)
  quiet = _predict(f"--bundle={BUNDLE}", image,
                   env={"TF_CPP_MIN_LOG_LEVEL": "", "SUPER_SUB_TF_LOGS": ""})
  assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
  for way_back in ({"TF_CPP_MIN_LOG_LEVEL": "0"}, {"SUPER_SUB_TF_LOGS": "1"}):
    loud = _predict(f"--bundle={BUNDLE}", image, env=way_back)
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in loud.stderr, way_back
    assert loud.stdout == quiet.stdout
