"""Output folders: written atomically, and never replacing what super-sub did not write."""

import json
import pathlib

import pytest

from super_sub._internal import files


def _folder(path, **contents):
  path.mkdir()
  for name, text in contents.items():
    (path / name).write_text(text)
  return path


def test_new_and_empty_folders_are_written(tmp_path):
  for target in (tmp_path / "new", _folder(tmp_path / "empty")):
    with files.atomic_dir(target, "export", "manifest.json") as tmp:
      (pathlib.Path(tmp) / "x.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["x.txt"]


def test_own_output_is_replaced_whole(tmp_path):
  target = _folder(tmp_path / "out", **{"manifest.json": json.dumps({"format": "f"}),
                                        "stale.txt": "old"})
  with files.atomic_dir(target, "export", "manifest.json", "f") as tmp:
    (pathlib.Path(tmp) / "new.txt").write_text("new")
  assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


@pytest.mark.parametrize("contents", [
    {"thesis.tex": "years of work"},
    {"manifest.json": '{"format": "someone-else"}', "thesis.tex": "x"},
    {"manifest.json": "not json", "thesis.tex": "x"},
])
def test_foreign_folder_is_refused_untouched_unless_overwrite(tmp_path, contents):
  target = _folder(tmp_path / "mine", **contents)
  ran = []
  with pytest.raises(files.OutputDirError, match=r"mine exists and is not an export folder "
                     r"\(no super-sub manifest.json\); it holds .*thesis.tex.*--overwrite"):
    with files.atomic_dir(target, "export", "manifest.json", "f"):
      ran.append(True)
  assert not ran  # refused before the block ran: nothing was computed or written
  assert {p.name: p.read_text() for p in target.iterdir()} == contents
  assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary sibling left
  with files.atomic_dir(target, "export", "manifest.json", "f", overwrite=True) as tmp:
    (pathlib.Path(tmp) / "new.txt").write_text("new")
  assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_a_file_in_the_way_is_refused(tmp_path):
  (tmp_path / "out").write_text("a file")
  with pytest.raises(files.OutputDirError, match="is a file, not a folder"):
    with files.atomic_dir(tmp_path / "out", "report", "report.json"):
      pass


def test_failed_block_leaves_the_old_folder(tmp_path):
  target = _folder(tmp_path / "out", **{"report.json": "{}"})
  with pytest.raises(RuntimeError, match="boom"):
    with files.atomic_dir(target, "report", "report.json") as tmp:
      (pathlib.Path(tmp) / "half.txt").write_text("half")
      raise RuntimeError("boom")
  assert [p.name for p in target.iterdir()] == ["report.json"]
  assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_safe_name():
  assert files.safe_name("T-shirt/top") == "T-shirt_top"
  assert files.safe_name("  dots  ") == "dots"
  assert files.safe_name("...") == "unnamed"
  assert files.safe_name("a" * 50 + "/b", 40) == "a" * 40


def test_read_json_names_the_file_in_the_callers_error(tmp_path):
  class MyError(ValueError):
    pass

  path = tmp_path / "x.json"
  with pytest.raises(MyError, match=r"x.json: no such file"):
    files.read_json(path, MyError)
  path.write_bytes(b"\xff{}")
  with pytest.raises(MyError, match=r"x.json: not valid JSON \("):
    files.read_json(path, MyError)
  path.write_bytes(b"[" * 100_000)
  with pytest.raises(MyError, match=r"x.json: bad \("):
    files.read_json(path, MyError, invalid="bad")
  path.write_text("[1]")
  assert files.read_json(path, MyError) == [1]
  with pytest.raises(MyError, match="expected a JSON object at the top level"):
    files.read_json(path, MyError, expect_object=True)
  assert files.read_json("in memory", MyError, raw=b'{"a": 1}', expect_object=True) == {"a": 1}
  with pytest.raises(MyError, match="gone"):
    files.read_json(tmp_path / "missing", MyError, not_found="gone")
