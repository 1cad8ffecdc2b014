"""End-to-end: the main job (`super-sub-build`), `tfds build` and `tfds.load` on the synthetic data."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from super_sub.data import prepare as data
from super_sub.data import synthetic

PER_CLASS = {"train": 150, "validation": 50}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def builder(data_dir):
  return data.prepare_dataset("superclassed_synthetic", data_dir=data_dir)


def test_summary_counts(builder):
  h = synthetic.load_hierarchy()
  summaries = {s.name: s for s in data.summarize_dataset(builder)}
  assert sorted(summaries) == ["train", "validation"]
  for split, per_class in PER_CLASS.items():
    s = summaries[split]
    assert s.num_examples == per_class * h.num_subclasses
    np.testing.assert_array_equal(s.label_counts, np.full(h.num_subclasses, per_class))
    sizes = np.array([len(sup.subclasses) for sup in h.superclasses])
    np.testing.assert_array_equal(s.superclass_counts, sizes * per_class)


def test_summary_table(builder):
  text = data.format_summary(builder, data.summarize_dataset(builder))
  assert "splits: train=3150, validation=1050" in text
  assert "dots                5         750         250  two_dots" in text


def test_tfds_load_superclass_matches_hierarchy(builder, data_dir):
  h = synthetic.load_hierarchy()
  ds = tfds.load("superclassed_synthetic", split="validation", data_dir=data_dir)
  for ex in tfds.as_numpy(ds.take(200)):
    assert ex["superclass"] == h.superclass_of[ex["label"]]
    assert ex["subclass"] == h.index_in_superclass[ex["label"]]
    assert ex["image"].shape == (32, 32, 3)


def _run(args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.mark.slow
def test_main_job_command(tmp_path):
  """The README's main-job command, on a fresh data_dir."""
  out = _run([sys.executable, "-m", "super_sub.train.build_dataset",
              f"--data_dir={tmp_path}"], cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "superclassed_synthetic/32px/1.0.0" in out.stdout
  assert "splits: train=3150, validation=1050" in out.stdout


@pytest.mark.slow
def test_main_job_rejects_unknown_dataset(tmp_path):
  out = _run([sys.executable, "-m", "super_sub.train.build_dataset", "--dataset=nope",
              f"--data_dir={tmp_path}"], cwd=tmp_path)
  assert out.returncode != 0
  assert "nope" in out.stderr


@pytest.mark.slow
def test_tfds_cli_builds_without_network(tmp_path):
  tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
  out = _run([tfds_cli, "build", "--imports=super_sub.datasets", "superclassed_synthetic",
              f"--data_dir={tmp_path}"], cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  built = tfds.builder_from_directory(str(tmp_path / "superclassed_synthetic/32px/1.0.0"))
  assert built.info.splits["train"].num_examples == 3150
