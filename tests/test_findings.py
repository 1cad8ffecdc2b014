"""The findings page from evaluated runs: hand-made runs, numbers checked by hand."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from super_sub._internal import files
from super_sub.analysis import findings

# fashion_mnist hierarchy, global subclass indices: tops 0-3, footwear 4-6 (Sandal, Sneaker,
# Ankle boot), trouser 7, dress 8, bag 9.
SUPERCLASSES = ["tops", "footwear", "trouser", "dress", "bag"]


def _run(folder, seed, flat_top1, hard_top1, per_flat=0.9, per_oracle=0.95):
  os.makedirs(os.path.join(folder, "predictions"))
  with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"seed": seed, "epochs": 2}, f)
  # Errors: T-shirt -> Pullover (within tops), Sandal -> Sneaker (within footwear),
  # Trouser -> T-shirt (across). Chance shares: 3/9, 2/9, 0/9.
  np.savez(os.path.join(folder, "predictions", "flat.npz"), labels=np.array([0, 4, 7, 9]),
           predictions=np.array([1, 5, 0, 9]), label_space=np.array("subclass"))
  per = lambda v: {n: v for n in SUPERCLASSES}  # noqa: E731
  files.write_json(os.path.join(folder, "eval.json"), {
      "dataset": "superclassed_fashion_mnist/1.0.0", "split": "test",
      "hierarchy": "fashion_mnist", "flat": {"top1": flat_top1},
      "flat_per_superclass": per(per_flat),
      "oracle_specialists": {"top1": hard_top1 + 0.01, "per_superclass": per(per_oracle)},
      "generalist": {"superclass_top1": 0.97},
      "two_stage": {"router": "generalist", "hard": {"top1": hard_top1},
                    "soft": {"top1": hard_top1 + 0.002}},
      "routers": {"generalist": {"superclass_top1": 0.97, "hard_top1": hard_top1,
                                 "soft_top1": hard_top1 + 0.002, "routing_loss": 0.01}}})
  return str(folder)


@pytest.fixture
def runs(tmp_path):
  return [_run(tmp_path / "s0", 0, 0.90, 0.92), _run(tmp_path / "s1", 1, 0.88, 0.91, 0.8, 0.9)]


def test_numbers_by_hand(runs, tmp_path):
  (s,) = findings.write_findings(str(tmp_path / "page"), runs)
  assert s["num_runs"] == 2 and s["seeds"] == [0, 1]
  assert s["finding_i"]["within_share"]["mean"] == pytest.approx(2 / 3)
  assert s["finding_i"]["chance"]["mean"] == pytest.approx(5 / 27)
  assert s["gain_hard"]["mean"] == pytest.approx(0.025)
  assert s["gain_hard"]["std"] == pytest.approx(np.std([0.02, 0.03], ddof=1))
  assert s["relative_error_reduction"]["mean"] == pytest.approx((0.02 / 0.10 + 0.03 / 0.12) / 2)
  assert s["routing_loss"]["mean"] == pytest.approx(0.01)
  assert s["finding_ii"]["tops"]["specialist"]["mean"] == pytest.approx(0.925)
  assert set(s["finding_ii"]) == {"tops", "footwear"}  # one-subclass superclasses have none
  assert s["without_specialist"] == ["trouser", "dress", "bag"]
  # Not exported: two specialists (tops, footwear) as separate fp32 networks.
  assert s["storage"]["total"] == pytest.approx(3.0)
  page = tmp_path / "page"
  text = (page / "index.md").read_text()
  assert "| Super-Sub, hard routing | 91.50 ± 0.71 |" in text
  assert "66.67 ± 0.00 % stay within the true superclass; 18.52 ± 0.00 %" in text
  for name in ("index.html", "findings.json",
               "superclassed_fashion_mnist_1.0.0_errors.png",
               "superclassed_fashion_mnist_1.0.0_superclasses.png"):
    assert (page / name).stat().st_size > 0
  assert "<table>" in (page / "index.html").read_text()


def test_refuses_what_it_did_not_write_and_non_runs(runs, tmp_path):
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  with pytest.raises(files.OutputDirError, match="not a findings folder"):
    findings.write_findings(str(mine), runs)
  assert (mine / "notes.txt").read_text() == "keep me"
  with pytest.raises(FileNotFoundError, match="not a run evaluated by super-sub-eval"):
    findings.write_findings(str(tmp_path / "page"), [str(tmp_path)])
  findings.write_findings(str(tmp_path / "page"), runs)
  findings.write_findings(str(tmp_path / "page"), runs[:1])  # its own page is replaced
  assert json.loads((tmp_path / "page" / "findings.json").read_text())["datasets"][0][
      "num_runs"] == 1


def test_cli(runs, tmp_path):
  out = tmp_path / "page"
  result = subprocess.run([sys.executable, "-m", "super_sub.train.findings",
                           f"--runs={','.join(runs)}", f"--output={out}"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert "super-sub-findings --runs=" in (out / "index.md").read_text()


def _predictions(folder, name, labels, predictions):
  np.savez(os.path.join(folder, "predictions", f"{name}.npz"), labels=np.array(labels),
           predictions=np.array(predictions), label_space=np.array("subclass"))


def test_where_routing_loses_by_hand(tmp_path):
  folders = [_run(tmp_path / f"s{seed}", seed, 0.5, 0.5) for seed in (0, 1)]
  labels = [0, 8, 8, 7, 0, 4]  # T-shirt, dress, dress, trouser, T-shirt, sandal
  for folder in folders:
    _predictions(folder, "flat", labels, [0, 0, 8, 7, 0, 5])
    _predictions(folder, "oracle_specialists", labels, [0, 8, 8, 7, 1, 4])
  # Lost (oracle right, hard wrong): example 0 (tops answered by dress), 1 (dress by tops) and
  # 3 (trouser by tops); example 4 is wrong for both, so routing did not lose it.
  _predictions(folders[0], "two_stage_hard", labels, [8, 0, 8, 0, 1, 4])
  # Seed 1 loses only example 1.
  _predictions(folders[1], "two_stage_hard", labels, [0, 0, 8, 7, 1, 4])
  (s,) = findings.write_findings(str(tmp_path / "page"), folders)
  where = s["where_routing_loses"]
  assert list(where["pairs"]) == ["dress -> tops", "tops -> dress", "trouser -> tops"]
  assert where["pairs"]["dress -> tops"]["mean"] == pytest.approx(1 / 6)
  assert where["pairs"]["tops -> dress"]["mean"] == pytest.approx(1 / 12)  # 0 in seed 1
  assert where["total"]["mean"] == pytest.approx((3 / 6 + 1 / 6) / 2)
  # Seed 0: dress and trouser are one-subclass superclasses (2 of 3); seed 1: dress (1 of 1).
  assert where["one_subclass_share"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
  # The flat network gets examples 0 and 3 right, not 1.
  assert where["flat_top1_on_lost"]["mean"] == pytest.approx((2 / 3 + 0) / 2)
  text = (tmp_path / "page" / "index.md").read_text()
  assert "| dress -> tops | 16.67 ± 0.00 |" in text
  assert "| all | 33.33 ± 23.57 |" in text


def test_where_routing_loses_needs_the_same_examples(tmp_path):
  folder = _run(tmp_path / "s0", 0, 0.5, 0.5)
  _predictions(folder, "oracle_specialists", [0, 4, 7, 9], [0, 4, 7, 9])
  _predictions(folder, "two_stage_hard", [0, 4, 9, 7], [0, 4, 9, 7])
  with pytest.raises(ValueError, match="two_stage_hard.npz and .*flat.npz do not hold the same"):
    findings.write_findings(str(tmp_path / "page"), [folder])


def test_a_run_whose_hierarchy_is_not_shipped(tmp_path):
  """A folder: or tfds: run's hierarchy is read from the tree eval.json holds; an eval.json
  without it (written before it held one) is refused with the fix."""
  from super_sub import hierarchy as hierarchy_lib  # pylint: disable=import-outside-toplevel
  folder = _run(tmp_path / "mine", 0, 0.90, 0.92)
  eval_path = os.path.join(folder, "eval.json")
  result = json.loads(open(eval_path, encoding="utf-8").read())
  shipped = hierarchy_lib.load_hierarchy("fashion_mnist").to_dict()
  result["hierarchy"] = shipped["name"] = "my_photos"
  files.write_json(eval_path, result)
  with pytest.raises(findings.FindingsError,
                     match=r"eval.json names hierarchy 'my_photos', which is not shipped.*"
                           r"run super-sub-eval on the run again"):
    findings.collect(folder)
  files.write_json(eval_path, {**result, "hierarchy_definition": shipped})
  got = findings.collect(folder)
  assert (got["hierarchy"], got["within_share"]) == ("my_photos", pytest.approx(2 / 3))
