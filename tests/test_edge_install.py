"""The edge install: the package without extras, installed with pip into a fresh virtual
environment as a device would install it. TensorFlow and the other training dependencies are
absent there, and super-sub-predict runs a committed tiny bundle (tests/testdata/edge_bundle,
from make_edge_bundle.py), answering as the development install does.

Nothing is downloaded: the device environment gets the base install's dependencies (and
theirs) linked from this environment, as if pip had installed them, and super-sub arrives as a
wheel built here; `pip install --no-index` then has to find every requirement satisfied.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
from packaging.requirements import Requirement
import pytest
from PIL import Image

from super_sub import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "tests", "testdata", "edge_bundle")
TRAINING_ONLY = ("tensorflow", "tf_keras", "tensorflow_model_optimization",
                 "tensorflow_datasets", "matplotlib")


def _base_requirements() -> list[importlib.metadata.Distribution]:
  """The installed distributions a plain `pip install super-sub` pulls in, transitively."""
  seen, todo = {}, [r for r in importlib.metadata.requires("super-sub") or []
                    if "extra ==" not in r]
  while todo:
    req = Requirement(todo.pop())
    if (req.marker and not req.marker.evaluate({"extra": ""})) or req.name.lower() in seen:
      continue
    dist = importlib.metadata.distribution(req.name)
    seen[req.name.lower()] = dist
    todo += [r for r in dist.requires or [] if "extra ==" not in r]
  return list(seen.values())


def _link_into(site_packages: str, dists) -> None:
  """Makes `dists` importable and known to pip in another environment, by symlinks."""
  here = sysconfig.get_paths()["purelib"]
  tops = {str(f).split("/")[0] for d in dists for f in d.files or []}
  for top in sorted(tops - {"..", "__pycache__"}):
    source = os.path.join(here, top)
    if os.path.exists(source) and not os.path.exists(os.path.join(site_packages, top)):
      os.symlink(source, os.path.join(site_packages, top))


@pytest.mark.slow
def test_runtime_installs_and_predicts_without_tensorflow(tmp_path):
  # A wheel of the package, built from a copy of the checkout (the build writes build/ and
  # egg-info next to setup.py).
  source = tmp_path / "source"
  shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
      ".venv", ".git", "__pycache__", "build", "*.egg-info", "bench", "runs"))
  built = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
       "-q", "-w", str(tmp_path / "wheels"), str(source)],
      capture_output=True, text=True, timeout=900, check=False)
  assert built.returncode == 0, built.stderr[-3000:]
  (wheel,) = (tmp_path / "wheels").iterdir()

  venv = tmp_path / "device"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  python = str(venv / "bin" / "python")
  device_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True,
                               timeout=60).stdout.strip()
  _link_into(device_site, _base_requirements())
  installed = subprocess.run([python, "-m", "pip", "install", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600, check=False)
  assert installed.returncode == 0, installed.stderr[-3000:]
  found = subprocess.run(
      [python, "-c", "import importlib.util, json; print(json.dumps([m for m in "
       f"{TRAINING_ONLY!r} if importlib.util.find_spec(m)]))"],
      capture_output=True, text=True, timeout=300, check=True)
  assert json.loads(found.stdout) == []
  # The training side says what to install instead of failing on an import.
  for command in ("super-sub-train", "super-sub-export"):
    refused = subprocess.run([str(venv / "bin" / command), "--help"], capture_output=True,
                             text=True, timeout=300, check=False)
    assert refused.returncode != 0
    assert "pip install 'super-sub[train]'" in refused.stderr, refused.stderr[-2000:]

  rng = np.random.default_rng(0)
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f"image{i}.png"))
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), np.uint8)).save(paths[-1])
  predicted = subprocess.run(
      [str(venv / "bin" / "super-sub-predict"), f"--bundle={BUNDLE}", "--json", *paths],
      capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  rows = [json.loads(line) for line in predicted.stdout.splitlines()]
  # Packed weights run specialists through LiteRT's CompiledModel: the same
  # output (soft routing over every superclass, so that each specialist runs).
  cache = tmp_path / "cache"
  outputs = []
  for extra in ([], *[[f"--cache_dir={cache}", "--packed_weights"]] * 2):  # writes, then maps
    soft = subprocess.run(
        [str(venv / "bin" / "super-sub-predict"), f"--bundle={BUNDLE}", "--mode=soft", "--soft_k=3",
         *extra, "--json", *paths], capture_output=True, text=True, timeout=300, check=False,
        cwd=tmp_path)
    assert soft.returncode == 0, soft.stderr[-3000:]
    outputs.append(soft.stdout)
  assert outputs[1] == outputs[0] and outputs[2] == outputs[0]
  kept = sorted(os.listdir(cache))
  assert len(kept) == 2 * 3 and sorted(n for n in kept if n.endswith(".xnnpack")) == sorted(
      n[:-len(".tflite")] + ".xnnpack" for n in kept if n.endswith(".tflite"))

  here = runtime.TwoStageLite(BUNDLE)
  expected = here.predict(runtime.load_images(paths, here.input_shape, here.framing))
  assert [r["image"] for r in rows] == paths
  assert [r["label_index"] for r in rows] == expected["label"].tolist()
  assert [r["superclass_index"] for r in rows] == expected["superclass"].tolist()
  np.testing.assert_allclose([r["label_prob"] for r in rows],
                             expected["label_probs"][np.arange(3), expected["label"]], atol=1e-5)
