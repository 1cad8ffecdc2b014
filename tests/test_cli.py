"""The nine console commands as a newcomer meets them: --help lists each command's own
flags and imports no TensorFlow; TensorFlow's start-up lines are hidden; one flag vocabulary,
old spellings still working; a user mistake ends in one line, never a traceback.

The commands run as the installed console scripts beside this interpreter (.venv/bin). The
table of bad arguments fails before any training: TensorFlow-free cases run in the quick loop,
the few that import TensorFlow (~5-10 s each) are marked slow.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from super_sub import errors as errors_lib
from super_sub import hierarchy as hierarchy_lib
from super_sub._internal import cli
from super_sub._internal import files
from super_sub._internal import native_logs
from super_sub.analysis import findings

BIN = os.path.dirname(sys.executable)
TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")
WORDNET = os.path.join(TESTDATA, "wordnet")
BUNDLE = os.path.join(TESTDATA, "edge_bundle")
# What TensorFlow and LiteRT print at start-up (a C++ log line, or LiteRT's INFO line).
TF_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ |oneDNN|cpu_feature_guard|XNNPACK|"
                    r"absl::InitializeLog", re.MULTILINE)

# command -> (entry module, a few of its own flags that --help must list)
COMMANDS = {
    "super-sub-hierarchy": ("super_sub.train.derive_hierarchy",
                            ["wordnet_dir", "class_list", "superclasses", "output", "overwrite",
                             "show"]),
    "super-sub-build": ("super_sub.train.build_dataset", ["dataset", "data_dir", "manual_dir"]),
    "super-sub-train": ("super_sub.train.train",
                        ["model_dir", "dataset", "backbone", "epochs", "config", "cpu_devices"]),
    "super-sub-eval": ("super_sub.train.evaluate", ["model_dir", "split", "soft_k", "router",
                                                    "data_dir"]),
    "super-sub-demo": ("super_sub.train.demo", ["model_dir", "dataset", "epochs", "seed"]),
    "super-sub-export": ("super_sub.export.export", ["model_dir", "output", "overwrite",
                                                     "representative_dataset"]),
    "super-sub-analyze": ("super_sub.train.analyze", ["predictions", "hierarchy", "output",
                                                      "label_space", "images_dir"]),
    "super-sub-findings": ("super_sub.train.findings", ["runs", "from_json", "output",
                                                        "overwrite"]),
    "super-sub-predict": ("super_sub.export.predict", ["bundle", "mode", "soft_k", "json",
                                                       "cache_dir"]),
}


def _command(name, *args, cwd=None, env=None, timeout=300):
  return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True,
                        cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
                        check=False)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags(name):
  result = _command(name, "--help")
  assert result.returncode == 0, result.stderr
  for flag in COMMANDS[name][1]:
    assert re.search(rf"^  --(\[no\])?{flag}:", result.stdout, re.MULTILINE), (flag,
                                                                                result.stdout)
  assert "SUPER_SUB_TF_LOGS=1" in result.stdout  # how to see TensorFlow's lines again
  assert not TF_LOG.search(result.stdout + result.stderr)
  assert result.stderr == ""
  for old in ("out", "export_dir", "k"):  # old spellings are not advertised
    assert f"--{old}:" not in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_imports_no_tensorflow(name):
  module = COMMANDS[name][0]
  script = textwrap.dedent(f"""
      import sys
      sys.argv = [{name!r}, "--help"]
      import {module} as entry
      try:
        entry.run()
      except SystemExit as e:
        assert not e.code, e.code
      heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras",
                                                                   "tensorflow_datasets"))
      print("HEAVY", heavy, file=sys.stderr)
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "HEAVY []" in result.stderr, result.stderr


def _fake_tf_logs_main():
  return textwrap.dedent("""
      import os, sys
      from super_sub._internal import cli
      def main(argv):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\\n"
                    b"I0000 00:00:1796589371.340320   12640 port.cc:153] oneDNN custom "
                    b"operations are on.\\n"
                    b"E0000 00:00:1796589374.147713   12640 cuda_platform.cc:52] failed call "
                    b"to cuInit: INTERNAL\\n"
                    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n"
                    b"E0000 00:00:1796589374.147713   12640 other.cc:1] a real error\\n")
        print("the command's own message", file=sys.stderr)
      cli.run(main)
  """)


def test_tensorflow_start_up_lines_are_hidden_unless_asked():
  script = _fake_tf_logs_main()
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "SUPER_SUB_TF_LOGS")}
  quiet = subprocess.run([sys.executable, "-c", script, "--"], capture_output=True,
                         text=True, env=env, timeout=60, check=False)
  assert quiet.returncode == 0, quiet.stderr
  assert quiet.stderr.splitlines() == [
      "E0000 00:00:1796589374.147713   12640 other.cc:1] a real error",
      "the command's own message"], quiet.stderr
  for asked, args in (({"SUPER_SUB_TF_LOGS": "1"}, []), ({"TF_CPP_MIN_LOG_LEVEL": "0"}, []),
                      ({}, ["--verbosity=0"])):
    loud = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env={**env, **asked}, timeout=60, check=False)
    assert loud.returncode == 0, loud.stderr
    assert "oneDNN" in loud.stderr and "XNNPACK" in loud.stderr, (asked, args, loud.stderr)


def test_filter_passes_partial_lines_and_progress_at_once():
  assert native_logs.is_noise(b"I0000 00:00:17.3   1 port.cc:153] x\n", 2)
  assert not native_logs.is_noise(b"I0000 00:00:17.3   1 port.cc:153] x\n", 0)
  assert not native_logs.is_noise(b"E0000 00:00:17.3   1 other.cc:1] a real error\n", 2)
  assert native_logs.is_noise(b"E0000 00:00:17.3   1 other.cc:1] a real error\n", 3)
  assert not native_logs.is_noise(b"Epoch 1/3\n", 3)
  quantizer = b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32\n"
  assert native_logs.is_noise(quantizer, 1) and not native_logs.is_noise(quantizer, 0)
  source, sink = os.pipe(), os.pipe()
  os.write(source[1], b"50%|#####     |\r60%|######    |\rInfo: no newline yet")
  os.close(source[1])
  native_logs.pump(2, source[0], sink[1])
  os.close(sink[1])
  assert os.read(sink[0], 1000) == b"50%|#####     |\r60%|######    |\rInfo: no newline yet"


def test_old_spellings_are_rewritten_with_one_notice():
  told = []
  argv = cli.rename_old_flags(["prog", "--out=a", "--k", "3", "--out=b", "--", "--out=c"],
                              {"output", "soft_k"}, told.append)
  assert argv == ["prog", "--output=a", "--soft_k", "3", "--output=b", "--", "--out=c"]
  assert [line.split(": ", 1)[1] for line in told] == [
      "--out is deprecated; use --output", "--k is deprecated; use --soft_k"]
  # A command that still defines the old name keeps it.
  assert cli.rename_old_flags(["prog", "--k=2"], {"k", "soft_k"}, told.append) == [
      "prog", "--k=2"]


def test_user_errors_are_known_by_class_without_importing_them():
  assert cli.user_error_status(hierarchy_lib.HierarchyError("x")) == 2
  assert cli.user_error_status(cli.UsageError("x")) == 2
  assert cli.user_error_status(cli.MissingExtraError("x")) == 1
  locked = errors_lib.FolderLockedError("f", "pid 1", "training", "f/lock")
  assert cli.user_error_status(locked) == 1
  assert cli.user_error_status(errors_lib.OutputDirError("x")) == 2
  assert cli.user_error_status(FileNotFoundError(2, "No such file", "x")) == 2
  assert cli.message(FileNotFoundError(2, "No such file or directory", "x.txt")) == (
      "No such file or directory: x.txt")
  assert cli.user_error_status(KeyError("internal")) is None
  assert cli.user_error_status(ValueError("internal")) is None


# --- a hierarchy, readable -------------------------------------------------------------------
def test_hierarchy_repr_is_one_short_line():
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  assert repr(h) == ("Hierarchy('superclassed_imagenet': 10 superclasses, 289 subclasses of "
                     "1000 source labels)")


def test_show_prints_the_tree_wrapped():
  result = _command("super-sub-hierarchy", "--show=superclassed_imagenet",
                    env={"COLUMNS": "60"})
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith("superclassed_imagenet: 10 superclasses, 289 subclasses")
  assert lines[1] == "0  bird  n01503061  (59 subclasses)"
  assert all(len(line) <= 60 for line in lines[1:])
  # Lines break between names, never within one ("indigo bunting", "great grey owl").
  for name in hierarchy_lib.load_hierarchy("superclassed_imagenet").subclass_names:
    assert any(re.search(rf"(^|, ){re.escape(name)}(,|$)", line.strip()) for line in lines), name


# --- findings without the runs, and without this machine's paths ----------------------------
def _evaluated_run(folder, seed):
  """A hand-made evaluated run of the fashion_mnist hierarchy (as tests/test_findings.py's)."""
  os.makedirs(os.path.join(folder, "predictions"))
  files.write_json(os.path.join(folder, "config.json"), {"seed": seed, "epochs": 2})
  np.savez(os.path.join(folder, "predictions", "flat.npz"), labels=np.array([0, 4, 7, 9]),
           predictions=np.array([1, 5, 0, 9]), label_space=np.array("subclass"))
  per = {n: 0.9 for n in ("tops", "footwear", "trouser", "dress", "bag")}
  files.write_json(os.path.join(folder, "eval.json"), {
      "dataset": "superclassed_fashion_mnist/1.0.0", "split": "test",
      "hierarchy": "fashion_mnist", "flat": {"top1": 0.9}, "flat_per_superclass": per,
      "oracle_specialists": {"top1": 0.93, "per_superclass": per},
      "generalist": {"superclass_top1": 0.97},
      "two_stage": {"router": "generalist", "hard": {"top1": 0.92}, "soft": {"top1": 0.921}},
      "routers": {}})
  return str(folder)


def test_findings_page_from_json_alone_and_without_paths(tmp_path):
  runs = [_evaluated_run(tmp_path / "machine_only" / f"seed{s}", s) for s in (0, 1)]
  page = tmp_path / "page"
  made = _command("super-sub-findings", f"--runs={','.join(runs)}", f"--output={page}")
  assert made.returncode == 0, made.stderr
  for name in ("index.md", "index.html", "findings.json"):
    text = (page / name).read_text()
    assert str(tmp_path) not in text and "machine_only" not in text, name
  assert "super-sub-findings --runs=seed0,seed1`" in (page / "index.md").read_text()
  assert [r["run"] for r in json.loads((page / "findings.json").read_text())["runs"]] == [
      "seed0", "seed1"]
  before = (page / "index.md").read_text()
  for run in runs:  # the runs are gone: the page comes from findings.json alone
    os.rename(run, run + ".gone")
  again = tmp_path / "again"
  redone = _command("super-sub-findings", f"--from_json={page / 'findings.json'}",
                    f"--output={again}")
  assert redone.returncode == 0, redone.stderr
  assert (again / "index.md").read_text() == before
  assert (again / "superclassed_fashion_mnist_1.0.0_errors.png").stat().st_size > 0


def test_rerender_names_runs_of_an_older_findings_json(tmp_path):
  runs = [_evaluated_run(tmp_path / "r" / "s0", 0)]
  findings.write_findings(str(tmp_path / "page"), runs)
  saved = json.loads((tmp_path / "page" / "findings.json").read_text())
  for r in saved["runs"]:  # as findings.json files were written before: a path per run
    r["model_dir"] = os.path.join(str(tmp_path), "r", r.pop("run"))
  saved["command"] = f"super-sub-findings --runs={runs[0]} --out={tmp_path}/page"
  old = tmp_path / "old.json"
  old.write_text(json.dumps(saved))
  findings.rerender(str(tmp_path / "new"), str(old))
  for name in ("index.md", "findings.json"):
    assert str(tmp_path) not in (tmp_path / "new" / name).read_text()


# --- bad arguments: one line naming the problem, a non-zero status, no traceback -------------
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
  """A folder the bad commands run in (relative paths): each case fails before writing."""
  root = tmp_path_factory.mktemp("sandbox")
  (root / "empty").mkdir()
  (root / "mine").mkdir()
  (root / "mine" / "keep.txt").write_text("the user's")
  (root / "notes.txt").write_text("not a hierarchy")
  (root / "bad.json").write_text("{ not json")
  (root / "other.json").write_text('{"a": 1}')
  (root / "fake_findings.json").write_text('{"datasets": [{}]}')
  (root / "plain.csv").write_text("label,prediction\n0,0\n")
  Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "a.png")
  return root


H = "super-sub-hierarchy"
WN = [f"--wordnet_dir={WORDNET}", f"--class_list={WORDNET}/classes.txt",
      "--superclasses=n00000901"]
slow = pytest.mark.slow

BAD = [
    # super-sub-hierarchy
    ("hier-missing-class-list", H, [f"--wordnet_dir={WORDNET}", "--class_list=missing.txt",
                                    "--superclasses=n00000901", "--output=h.json"],
     ["No such file or directory: missing.txt"]),
    ("hier-output-is-folder", H, [*WN, "--output=empty"], ["--output=empty is a folder"]),
    ("hier-output-not-a-hierarchy", H, [*WN, "--output=notes.txt"],
     ["--output=notes.txt exists and is not a hierarchy JSON", "--overwrite"]),
    ("hier-no-wordnet", H, ["--superclasses=n00000901", "--output=h.json"],
     ["--wordnet_dir is required"]),
    ("hier-missing-wordnet", H, ["--wordnet_dir=nowhere", f"--class_list={WORDNET}/classes.txt",
                                 "--superclasses=n00000901", "--output=h.json"],
     ["no WordNet noun database at 'nowhere'"]),
    ("hier-unknown-superclass", H, [f"--wordnet_dir={WORDNET}",
                                    f"--class_list={WORDNET}/classes.txt",
                                    "--superclasses=n99999999", "--output=h.json"],
     ["n99999999"]),
    ("hier-show-unknown", H, ["--show=nope"], ["no shipped hierarchy", "fashion_mnist"]),
    ("hier-show-bad-json", H, ["--show=bad.json"], ["bad.json: not valid JSON"]),
    ("hier-show-with-output", H, ["--show=fashion_mnist", "--output=h.json"],
     ["--show prints a hierarchy and derives none: drop --output"]),
    ("hier-positional", H, ["--show=fashion_mnist", "extra"], ["unexpected arguments"]),
    ("hier-unknown-flag", H, ["--bogus=1"], ["Unknown command line flag 'bogus'"]),
    # super-sub-findings
    ("findings-missing-run", "super-sub-findings", ["--runs=nowhere", "--output=page"],
     ["nowhere is not a run evaluated by super-sub-eval"]),
    ("findings-empty-run", "super-sub-findings", ["--runs=empty", "--output=page"],
     ["empty is not a run evaluated by super-sub-eval"]),
    ("findings-neither", "super-sub-findings", ["--output=page"],
     ["give --runs", "--from_json"]),
    ("findings-json-missing", "super-sub-findings", ["--from_json=nowhere.json",
                                                     "--output=page"],
     ["No such file or directory: nowhere.json"]),
    ("findings-json-not-findings", "super-sub-findings", ["--from_json=other.json",
                                                          "--output=page"],
     ["other.json is not a findings.json"]),
    ("findings-old-out-refuses-user-folder", "super-sub-findings",
     ["--from_json=fake_findings.json", "--out=mine"],
     ["--out is deprecated; use --output", "output folder mine exists and is not a findings"]),
    ("findings-no-output", "super-sub-findings", ["--runs=empty"], ["--output is required"]),
    # super-sub-analyze
    ("analyze-no-predictions", "super-sub-analyze", ["--hierarchy=fashion_mnist",
                                                     "--output=report"],
     ["--predictions is required"]),
    ("analyze-old-out-missing-file", "super-sub-analyze",
     ["--predictions=missing.csv", "--hierarchy=fashion_mnist", "--out=report"],
     ["--out is deprecated; use --output", "missing.csv"]),
    ("analyze-unknown-hierarchy", "super-sub-analyze",
     ["--predictions=plain.csv", "--hierarchy=nope", "--output=report"],
     ["no shipped hierarchy"]),
    ("analyze-images-half", "super-sub-analyze",
     ["--predictions=plain.csv", "--hierarchy=fashion_mnist", "--output=report",
      "--images_dataset=superclassed_synthetic"], ["--images_dataset and --images_split"]),
    ("analyze-top-confusions", "super-sub-analyze", ["--top_confusions=0"],
     ["top_confusions"]),
    # super-sub-predict
    ("predict-no-images", "super-sub-predict", [f"--bundle={BUNDLE}"],
     ["give one or more image files"]),
    ("predict-no-bundle", "super-sub-predict", ["a.png"], ["--bundle is required"]),
    ("predict-old-k-checked", "super-sub-predict", [f"--bundle={BUNDLE}", "--k=0", "a.png"],
     ["--k is deprecated; use --soft_k", "soft_k"]),
    ("predict-missing-bundle", "super-sub-predict", ["--bundle=nowhere", "a.png"],
     ["nowhere"]),
    ("predict-bad-mode", "super-sub-predict", [f"--bundle={BUNDLE}", "--mode=both", "a.png"],
     ["--mode=both", "<hard|soft>"]),
    # super-sub-train
    ("train-negative-epochs", "super-sub-train", ["--model_dir=run", "--epochs=-1"],
     ["epochs and batch_size must be positive", "epochs=-1"]),
    ("train-unknown-backbone", "super-sub-train", ["--model_dir=run", "--backbone=vgg"],
     ["unknown backbone 'vgg'", "mobilenet_v2"]),
    ("train-unknown-config", "super-sub-train", ["--model_dir=run", "--config=nope"],
     ["nope", "imagenet_resnet50"]),
    ("train-no-model-dir", "super-sub-train", ["--epochs=1"], ["--model_dir is required"]),
    ("train-specialists-not-ints", "super-sub-train", ["--model_dir=run",
                                                       "--specialists=a,b"],
     ["--specialists takes superclass indices"]),
    ("train-bad-stage", "super-sub-train", ["--model_dir=run", "--stage=everything"],
     ["--stage"]),
    ("train-epochs-not-int", "super-sub-train", ["--model_dir=run", "--epochs=ten"],
     ["--epochs", "ten"]),
    pytest.param("train-unknown-dataset", "super-sub-train",
                 ["--model_dir=run", "--dataset=no_such_dataset", "--data_dir=tfds"],
                 ["Dataset no_such_dataset not found", "superclassed_synthetic"], marks=slow,
                 id="train-unknown-dataset"),
    # super-sub-eval
    ("eval-missing-model-dir", "super-sub-eval", ["--model_dir=nowhere"],
     ["nowhere is not a super-sub-train run"]),
    ("eval-not-a-run", "super-sub-eval", ["--model_dir=empty"],
     ["empty is not a super-sub-train run"]),
    ("eval-bad-router", "super-sub-eval", ["--model_dir=empty", "--router=oracle"],
     ["--router"]),
    # super-sub-export
    ("export-missing-model-dir", "super-sub-export", ["--model_dir=nowhere", "--output=x"],
     ["nowhere is not a super-sub-train run"]),
    ("export-old-export-dir", "super-sub-export", ["--model_dir=empty", "--export_dir=x"],
     ["--export_dir is deprecated; use --output", "empty is not a super-sub-train run"]),
    ("export-no-output", "super-sub-export", ["--model_dir=empty"], ["--output is required"]),
    # super-sub-demo
    ("demo-zero-epochs", "super-sub-demo", ["--epochs=0", "--model_dir=demo"],
     ["epochs and batch_size must be positive"]),
    ("demo-positional", "super-sub-demo", ["now"], ["unexpected arguments"]),
    # super-sub-build
    ("build-positional", "super-sub-build", ["synthetic"], ["unexpected arguments"]),
    pytest.param("build-imagenet-no-manual-dir", "super-sub-build",
                 ["--dataset=superclassed_imagenet/64x64", "--manual_dir=nowhere",
                  "--data_dir=tfds"],
                 ["manual_dir nowhere does not exist or is empty", "ILSVRC2012"], marks=slow,
                 id="build-imagenet-no-manual-dir"),
    pytest.param("build-unknown-dataset", "super-sub-build",
                 ["--dataset=no_such_dataset", "--data_dir=tfds"],
                 ["Dataset no_such_dataset not found"], marks=slow, id="build-unknown-dataset"),
]


@pytest.mark.parametrize("case,name,args,expected", [
    c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in BAD])
def test_bad_arguments_end_in_one_line(sandbox, case, name, args, expected):
  result = _command(name, *args, cwd=sandbox)
  assert result.returncode != 0, (case, result.stdout, result.stderr)
  assert "Traceback" not in result.stderr, result.stderr
  assert not TF_LOG.search(result.stderr), result.stderr
  for text in expected:
    assert text in result.stderr, (case, text, result.stderr)
  errors = [line for line in result.stderr.splitlines() if "deprecated; use" not in line]
  assert len(errors) == 1 or "overlap" in result.stderr, result.stderr  # one line
  assert (sandbox / "mine" / "keep.txt").read_text() == "the user's"
  assert (sandbox / "notes.txt").read_text() == "not a hierarchy"


def test_the_table_is_large_enough():
  assert len(BAD) >= 30
