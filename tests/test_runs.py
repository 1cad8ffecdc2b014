"""super_sub.runs: the one place that knows the run folder."""

import os

import pytest

from super_sub import runs


def test_stage_folders_and_files(tmp_path):
  d = str(tmp_path)
  assert runs.stage_dir(d, runs.GENERALIST_QAT) == os.path.join(d, "generalist_qat")
  assert runs.stage_dir(d, runs.specialist(3), "big cats/lions") == os.path.join(
      d, "specialists", "3_big_cats_lions")
  with pytest.raises(ValueError, match="needs its superclass's name"):
    runs.stage_dir(d, runs.specialist(3))
  assert runs.config_path(d) == os.path.join(d, "config.json")
  assert runs.weights_prefix(runs.stage_dir(d, runs.FLAT)) == os.path.join(
      d, "flat", "weights", "model")
  assert runs.predictions_path(d, "flat") == os.path.join(d, "predictions", "flat.npz")
  assert runs.export_dir(d) == os.path.join(d, "export")
  assert runs.report_dir(d, "flat") == os.path.join(d, "reports", "flat")


def test_a_stage_is_done_when_its_metrics_are_written(tmp_path):
  d = str(tmp_path)
  flat = runs.stage_dir(d, runs.FLAT)
  os.makedirs(runs.weights_dir(flat))
  assert not runs.is_done(flat)
  with open(runs.metrics_path(flat), "w", encoding="utf-8") as f:
    f.write('{"stage": "flat"}')
  assert runs.is_done(flat) and runs.read_metrics(flat) == {"stage": "flat"}
  assert not runs.is_evaluated(d)
  with open(runs.eval_path(d), "w", encoding="utf-8") as f:
    f.write('{"flat": {"top1": 0.5}}')
  assert runs.read_eval(d)["flat"]["top1"] == 0.5
  specialist = runs.stage_dir(d, runs.specialist(0), "a")
  os.makedirs(specialist)
  assert runs.specialist_dirs(d) == [specialist]


def test_stages_are_typed():
  assert runs.specialist(2).key == "specialist_2" and str(runs.GENERALIST_QAT) == "generalist_qat"
  with pytest.raises(ValueError, match="role must be one of"):
    runs.Stage("teacher")
  with pytest.raises(ValueError, match="only the generalist"):
    runs.Stage("flat", qat=True)
