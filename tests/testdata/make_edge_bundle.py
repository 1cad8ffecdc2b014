"""Writes tests/testdata/edge_bundle/: the tiny TFLite bundle of tests/test_runtime.py's toy
models (12x12 grayscale, 3 superclasses, 2 specialists; ~60 kB), committed so that the edge
install test runs `super-sub-predict` where TensorFlow cannot be imported.

  cd /work/main && .venv/bin/python tests/testdata/make_edge_bundle.py
"""

import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import test_runtime as toy  # pylint: disable=wrong-import-position
from super_sub import runtime  # pylint: disable=wrong-import-position
from super_sub._internal.compat import keras  # pylint: disable=wrong-import-position


def main():
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  generalist = toy._net(3)  # pylint: disable=protected-access
  models = {0: toy._convert(toy._fine_tuned(generalist, 2, rng), integer_io=True),  # pylint: disable=protected-access
            1: toy._convert(toy._fine_tuned(generalist, 4, rng))}  # pylint: disable=protected-access
  out = os.path.join(HERE, "edge_bundle")
  if os.path.exists(out):
    shutil.rmtree(out)
  runtime.write_tflite_bundle(out, toy.HIERARCHY, toy._convert(generalist), models,  # pylint: disable=protected-access
                              toy.INPUT_INFO)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
