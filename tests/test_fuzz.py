"""Fuzz tests: every parser of untrusted input answers any input with its own clear error.

Hypothesis feeds each public entry point that reads what a user or another machine wrote (a
hierarchy JSON, a TFLite bundle: its manifest and every file it lists, delta .npz and skeletons,
TFLite models, predictions CSV/NPZ, multi-label JSON, a run's config.json) with arbitrary bytes,
arbitrary JSON and small edits of a valid file. Each parser must either accept the input or raise
its module's error (HierarchyError, BundleError, DeltaError, AnalysisError, ConfigError: all
ValueErrors whose message names the file where there is one). Any other exception, or a call still
running after HANG_S seconds, fails the test. What a parser accepts must also be usable: an
accepted specialist is the original byte for byte, an accepted hierarchy round-trips.

Hand-picked inputs, among them every crash that fuzzing found (now fixed), are `@example` seeds.
Runs are derandomized and keep no example database, so CI sees the same inputs every time.
The bundle is built from two-layer TFLite models written with the flatbuffer schema (no
converter, no TensorFlow): building it takes a fraction of a second.
"""

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import zlib

import hypothesis
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from super_sub import hierarchy as hierarchy_lib
from super_sub import runtime
from super_sub.analysis import loading
from super_sub.analysis.predictions import AnalysisError
from super_sub.hierarchy import Hierarchy, HierarchyError
from super_sub.formats import delta as delta_lib
from super_sub.formats import fast_rebuild
from super_sub.formats import flatbuffer
from super_sub.formats.errors import BundleError, DeltaError
from super_sub.training import config as config_lib
from super_sub.training.config import ConfigError

HANG_S = 10  # a parser call this slow counts as a hang (they all take milliseconds)


def fuzz(max_examples: int):
  """Hypothesis settings of every test here: reproducible, no deadline (shared CI cores)."""
  return hypothesis.settings(
      max_examples=max_examples, deadline=None, derandomize=True, database=None,
      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                             HealthCheck.large_base_example])


class Hang(BaseException):
  """A parser call that ran past HANG_S. A BaseException, so no parser's `except` swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: float = HANG_S):
  """Raises Hang in the block after `seconds` (SIGALRM: interrupts pure-Python loops too)."""
  def fire(signum, frame):
    raise Hang(f"the parser was still running after {seconds} s")
  previous = signal.signal(signal.SIGALRM, fire)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _only(error: type, parse, *args, names: str | None = None):
  """parse(*args), which must return or raise `error` (whose message names `names`) in HANG_S.

  Returns the result, or None when `error` was raised. Any other exception propagates, so
  Hypothesis reports (and shrinks) the input that caused it.
  """
  with _time_limit():
    try:
      result = parse(*args)
    except error as e:
      message = str(e)
      assert message.strip(), f"{type(e).__name__} without a message"
      assert names is None or names in message, f"{message!r} does not name {names!r}"
      # What was refused and why, for --hypothesis-show-statistics: is the fuzzing deep?
      hypothesis.event(re.sub(r"\d+", "N", message.replace(names or "\0", ""))[:60])
      return None
  hypothesis.event("accepted")
  return result


# --- strategies ----------------------------------------------------------------------------------
EDGE_VALUES = st.sampled_from([
    None, True, False, 0, -1, 1, 2**31, 2**63, -2**63 - 1, 10**30, 1.5, float("nan"),
    float("inf"), "", ".", "..", "/", "../x", "a\x00b", "\udcff", "\u00b2", "\u0663", "NaN",
    "x" * 300, [], {}])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | EDGE_VALUES)
JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=10)
# One edit of a JSON document: (path, action, payload). The path picks a node by child numbers
# (modulo the number of children; a string picks a dict key by name, for hand-written seeds).
JSON_EDIT = st.tuples(st.lists(st.integers(0, 50), max_size=5),
                      st.sampled_from(["replace", "drop", "add", "rekey", "copy"]),
                      JSON | EDGE_VALUES)
JSON_EDITS = st.lists(JSON_EDIT, min_size=1, max_size=3)

# One edit of a byte string: positions are taken modulo its length.
BYTE_EDIT = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)),
                                        min_size=1, max_size=4)),
    st.tuples(st.just("cut"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("replace"), st.binary(max_size=200)))

# Delta arrays: names a delta has, and any small array under any of them.
DELTA_NAMES = ("version", "sha256", "buffers", "quant", "gaps", "values", "diff", "runs",
               "magnitudes", "signs", "factored", "left", "right", "scales")
ANY_ARRAY = npst.arrays(
    dtype=npst.scalar_dtypes() | npst.byte_string_dtypes(max_len=3)
    | npst.unicode_string_dtypes(max_len=3),
    shape=npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
ARRAY_EDIT = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(DELTA_NAMES)),
    st.tuples(st.just("replace"), st.sampled_from(DELTA_NAMES), ANY_ARRAY),
    st.tuples(st.just("astype"), st.sampled_from(DELTA_NAMES),
              npst.scalar_dtypes() | st.just(np.dtype("U4"))),
    st.tuples(st.just("reshape"), st.sampled_from(DELTA_NAMES),
              st.sampled_from(["flat", "T", "row", "first", "empty"])),
    st.tuples(st.just("set"), st.sampled_from(DELTA_NAMES), st.integers(0, 2**16),
              st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("bump"), st.sampled_from(DELTA_NAMES), st.integers(0, 2**16)))
ARRAY_EDITS = st.lists(ARRAY_EDIT, min_size=1, max_size=3)


def _dumps(value) -> bytes:
  """JSON bytes of `value`; lone surrogates (from st.text) become invalid UTF-8, on purpose."""
  return json.dumps(value).encode("utf-8", "surrogatepass")


def _edit_json(document, edits):
  """`document` (deep-copied) with `edits` (see JSON_EDIT) applied in order."""
  box = [json.loads(json.dumps(document))]
  for path, action, payload in edits:
    parent, key = box, 0
    for step in path:
      node = parent[key]
      keys = (list(node) if isinstance(node, dict) else
              list(range(len(node))) if isinstance(node, list) else [])
      if not keys:
        break
      if isinstance(step, str):
        if step not in keys:
          break
        parent, key = node, step
      else:
        parent, key = node, keys[step % len(keys)]
    node = parent[key]
    if action == "replace":
      parent[key] = payload
    elif action == "drop" and parent is not box:
      del parent[key]
    elif action == "add" and isinstance(node, dict):
      node[payload if isinstance(payload, str) else json.dumps(payload)] = payload
    elif action == "add" and isinstance(node, list):
      node.append(payload)
    elif action == "rekey" and isinstance(parent, dict):
      parent[payload if isinstance(payload, str) else json.dumps(payload)] = parent.pop(key)
    elif action == "copy":  # another node of the document here: e.g. one file name for another
      leaves = _nodes(box[0])
      parent[key] = json.loads(json.dumps(leaves[zlib.crc32(_dumps(payload)) % len(leaves)]))
  return box[0]


def _nodes(value) -> list:
  """Every node of a JSON document, the document first, depth first."""
  out = [value]
  for child in (value.values() if isinstance(value, dict) else
                value if isinstance(value, list) else []):
    out += _nodes(child)
  return out


def _edit_bytes(data: bytes, edit) -> bytes:
  """`data` with one BYTE_EDIT applied: bytes flipped, cut off, inserted, or all replaced."""
  how = edit[0]
  if how == "flip":
    out = bytearray(data)
    for position, mask in edit[1]:
      if out:
        out[position % len(out)] ^= mask
    return bytes(out)
  if how == "cut":
    return data[:edit[1] % (len(data) + 1)]
  if how == "insert":
    at = edit[1] % (len(data) + 1)
    return data[:at] + edit[2] + data[at:]
  return edit[1]


def _edit_arrays(arrays, edits) -> dict:
  """A copy of the delta `arrays` with `edits` (see ARRAY_EDIT) applied in order."""
  out = {name: np.array(value) for name, value in arrays.items()}
  for how, name, *args in edits:
    if how == "replace":
      out[name] = args[0]
    if name not in out:
      continue
    value = out[name]
    if how == "drop":
      del out[name]
    elif how == "astype":
      try:
        with np.errstate(all="ignore"):
          out[name] = value.astype(args[0])
      except (ValueError, TypeError, RuntimeError):  # numpy cannot convert it: no edit
        pass
    elif how == "reshape":
      out[name] = {"flat": value.reshape(-1), "T": value.T, "row": value.reshape(1, -1),
                   "first": value.reshape(-1)[:1].reshape(()) if value.size else value,
                   "empty": value.reshape(-1)[:0]}[args[0]]
    elif how in ("set", "bump") and value.size and value.dtype.kind in "biuf":
      value = value.astype(np.int64) if how == "set" else value.copy()
      flat = value.reshape(-1)
      if how == "set":
        flat[args[0] % flat.size] = args[1]
      else:
        flat[args[0] % flat.size:args[0] % flat.size + 1] += 1
      out[name] = value
  return out


def _npz(**arrays) -> bytes:
  """The .npz file of `arrays`, as bytes."""
  saved = io.BytesIO()
  np.savez(saved, **arrays)
  return saved.getvalue()


# --- tiny TFLite models and a bundle of them ------------------------------------------------------
TINY = hierarchy_lib.from_groups("tiny", [
    ("shoes", [("sneaker", 0), ("boot", 1)]),
    ("tops", [("shirt", 2), ("coat", 3), ("tee", 4), ("pullover", 5)]),
    ("bags", [("bag", 6)]),  # one subclass: no specialist
])
INPUT_INFO = {"shape": [4, 4, 1], "dtype": "float32", "range": [0, 1]}
SKELETONS = ["specialists/0_shoes.skeleton.tflite.gz", "specialists/1_tops.skeleton.tflite.gz"]
DELTAS = ["specialists/0_shoes.delta.npz", "specialists/1_tops.delta.npz"]
BUNDLE_FILES = sorted(["generalist.tflite", "hierarchy.json", "labels.txt", *SKELETONS, *DELTAS])


def _tflite(trunk: np.ndarray, head: np.ndarray) -> bytes:
  """A two-layer TFLite model (int8 trunk with its scale, float head) written with the schema.

  The trunk is the part specialists share with the generalist (their delta), the head differs in
  shape (their skeleton keeps it), as in converted super-sub models.
  """
  def tensor(name, shape, kind, buffer, scale=None):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), kind, buffer
    if scale is not None:
      t.quantization = schema.QuantizationParametersT()
      t.quantization.scale = np.array([scale], np.float32)
      t.quantization.zeroPoint = np.array([0], np.int64)
    return t

  def buffer(data=None):
    b = schema.BufferT()
    b.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8).copy()
    return b

  def fully_connected(inputs, outputs):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array(inputs, np.int32), np.array(outputs,
                                                                                  np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = schema.FullyConnectedOptionsT()
    return op

  code = schema.OperatorCodeT()
  code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
  code.version = 1
  graph = schema.SubGraphT()
  graph.name = b"main"
  width, features = head.shape[0], trunk.shape[0]
  graph.tensors = [tensor("images", [1, *INPUT_INFO["shape"]], schema.TensorType.FLOAT32, 1),
                   tensor("trunk", trunk.shape, schema.TensorType.INT8, 2, 0.02),
                   tensor("features", [1, features], schema.TensorType.FLOAT32, 3),
                   tensor("head", head.shape, schema.TensorType.FLOAT32, 4),
                   tensor("logits", [1, width], schema.TensorType.FLOAT32, 5)]
  graph.operators = [fully_connected([0, 1, -1], [2]), fully_connected([2, 3, -1], [4])]
  graph.inputs, graph.outputs = np.array([0], np.int32), np.array([4], np.int32)
  model = schema.ModelT()
  model.version, model.description, model.operatorCodes = 3, b"fuzz", [code]
  model.buffers = [buffer(), buffer(), buffer(trunk), buffer(), buffer(head), buffer()]
  model.subgraphs = [graph]
  return flatbuffer.pack_model(model)


@pytest.fixture(scope="module")
def models():
  """TFLite bytes: a generalist (3 superclasses) and specialists 0 (4 trunk bytes changed) and 1
  (most trunk bytes changed)."""
  rng = np.random.default_rng(0)
  trunk = rng.integers(-100, 100, (32, 16), dtype=np.int8)
  few = trunk.copy()
  few.reshape(-1)[[3, 77, 300, 301]] += 1
  many = trunk + rng.integers(-3, 4, trunk.shape).astype(np.int8)
  head = lambda width: rng.standard_normal((width, 32)).astype(np.float32)
  return {"generalist": _tflite(trunk, head(3)), 0: _tflite(few, head(2)),
          1: _tflite(many, head(4))}


@pytest.fixture(scope="module")
def deltas(models):
  """(k, encoding) -> (skeleton, arrays) of specialist k over the generalist."""
  return {(k, enc): delta_lib.make_delta(models["generalist"], models[k], encoding=enc)
          for k in (0, 1) for enc in ("sparse", "dense", "signed")}


@pytest.fixture(scope="module")
def fast(models, deltas):
  """(k, encoding) -> the FastRebuild that the first rebuild of specialist k leaves behind."""
  return {which: fast_rebuild.FastRebuild.from_rebuilt(models["generalist"], models[which[0]],
                                                       arrays)
          for which, (_, arrays) in deltas.items()}


@pytest.fixture(scope="module")
def bundle_dir(models, tmp_path_factory):
  out = tmp_path_factory.mktemp("fuzz-bundle") / "tflite"
  runtime.write_tflite_bundle(out, TINY, models["generalist"], {0: models[0], 1: models[1]},
                              INPUT_INFO)
  return str(out)


@pytest.fixture(scope="module")
def loaded(bundle_dir) -> runtime.Bundle:
  """The bundle, loaded once (tests derive altered copies with dataclasses.replace)."""
  return runtime.load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A folder that each example of a test overwrites (function-scoped tmp_path would be shared
  across Hypothesis examples anyway)."""
  return tmp_path_factory.mktemp("fuzz")


def _fresh_copy(bundle_dir: str, workdir) -> str:
  copy = os.path.join(workdir, "tflite")
  shutil.rmtree(copy, ignore_errors=True)
  shutil.copytree(bundle_dir, copy)
  return copy


def _relist(bundle: str, rel: str, data: bytes) -> None:
  """Overwrites a bundle file and lists its new size and sha256: only the content is wrong."""
  with open(os.path.join(bundle, rel), "wb") as f:
    f.write(data)
  path = os.path.join(bundle, "manifest.json")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(manifest, f)


def _load_and_rebuild(bundle: str, models) -> None:
  """load_bundle and every specialist twice (skeleton, then fast path): BundleError or exact."""
  loaded = _only(BundleError, runtime.load_bundle, bundle, names=bundle)
  if loaded is None:
    return
  for k in sorted(loaded.deltas):
    for _ in range(2):
      rebuilt = _only(BundleError, loaded.specialist, k, names=bundle)
      assert rebuilt is None or rebuilt == models[k]


def test_the_fuzzed_models_and_bundle_are_valid(models, deltas, bundle_dir):
  """The starting point of the fuzzing is valid, so every test below starts from parseable input:
  both encodings rebuild the specialists, the bundle loads and rebuilds them, and the runtime
  predicts with it (LiteRT runs all three models)."""
  for (k, _), (skeleton, arrays) in deltas.items():
    assert delta_lib.apply_delta(models["generalist"], skeleton, arrays) == models[k]
  assert len(deltas[0, "sparse"][1]["values"]) == 4 and len(deltas[0, "sparse"][1]["quant"]) == 1
  bundle = runtime.load_bundle(bundle_dir)
  assert sorted(bundle.manifest["files"]) == BUNDLE_FILES
  assert bundle.hierarchy == TINY and bundle.input_shape == (4, 4, 1)
  assert [bundle.specialist(k) for k in (0, 1, 0, 1)] == [models[k] for k in (0, 1, 0, 1)]
  images = np.random.default_rng(1).random((6, *INPUT_INFO["shape"]), dtype=np.float32)
  out = runtime.TwoStageLite(bundle).predict(images, mode="soft", k=3)
  np.testing.assert_allclose(out["label_probs"].sum(axis=1), 1, rtol=1e-5)


# --- hierarchy JSON -------------------------------------------------------------------------------
@fuzz(150)
@given(data=JSON | JSON_EDITS.map(lambda edits: _edit_json(TINY.to_dict(), edits)))
@example(data=[1, 2])
@example(data={"name": "x", "superclasses": [{"name": "a", "subclasses": [
    {"name": "b", "source_label": 2**40}]}]})  # accepted, then source_to_global needed 8 TiB
@example(data={"name": "x", "num_source_labels": 10**30, "superclasses": [
    {"name": "a", "subclasses": [{"name": "b", "source_label": 0}]}]})  # numpy ValueError
@example(data={"name": "x", "superclasses": [{"name": "a", "wnid": "n0150306\u0663",
                                              "subclasses": [{"name": "b", "source_label": 0}]}]})
# (the last, a WordNet id with an Arabic-Indic digit, was accepted)
def test_hierarchy_from_dict(data):
  h = _only(HierarchyError, Hierarchy.from_dict, data, "fuzzed.json", names="fuzzed.json")
  if h is not None:  # what is accepted is usable: its maps build, and it round-trips
    assert len(h.source_to_global) >= h.num_subclasses
    assert Hierarchy.from_dict(json.loads(json.dumps(h.to_dict()))) == h


@fuzz(100)
@given(raw=st.binary(max_size=300) | JSON.map(_dumps)
       | JSON_EDITS.map(lambda edits: _dumps(_edit_json(TINY.to_dict(), edits))))
@example(raw=b"\xff\xfe{}")  # not UTF-8: was a UnicodeDecodeError
@example(raw=b"[" * 100_000)  # nested too deep for json: was a RecursionError
@example(raw=b'{"name": "x", "superclasses": []}')  # the message did not name the file
def test_hierarchy_file(raw, workdir):
  path = os.path.join(workdir, "hierarchy.json")
  with open(path, "wb") as f:
    f.write(raw)
  _only(HierarchyError, hierarchy_lib.load_hierarchy, path, names=path)
  _only(HierarchyError, Hierarchy.from_json, path, names=path)


@fuzz(100)
@given(name=st.text(max_size=20) | st.sampled_from(
    ["", ".", "..", "/", "../x", "a\x00b", "\udcff", "\u00b2", "NaN", "x" * 300, "x.json"]))
@example(name="fashion_mnist")
@example(name="no/such/file.json")  # was a FileNotFoundError
@example(name="/")  # a folder: was an IsADirectoryError
@example(name="a\x00b.json")  # was a ValueError (embedded null byte)
@example(name="x" * 300 + ".json")  # was an OSError (file name too long)
@example(name="x" * 300)  # was an OSError from the shipped-hierarchy lookup
def test_hierarchy_load_by_name_or_path(name, workdir):
  here = os.getcwd()
  os.chdir(workdir)  # relative paths resolve in a folder of fuzz files only
  try:
    _only(HierarchyError, hierarchy_lib.load_hierarchy, name)
  finally:
    os.chdir(here)


# --- the bundle: manifest.json and the files it lists ---------------------------------------------
@fuzz(100)
@given(raw=st.binary(max_size=300) | JSON.map(_dumps))
@example(raw=b"\xff")
@example(raw=b"[" * 100_000)  # was a RecursionError
@example(raw=b"null")
def test_bundle_manifest_any_bytes(raw, bundle_dir, workdir, models):
  bundle = _fresh_copy(bundle_dir, workdir)
  with open(os.path.join(bundle, "manifest.json"), "wb") as f:
    f.write(raw)
  _load_and_rebuild(bundle, models)


@fuzz(200)
@given(edits=JSON_EDITS)
@example(edits=[(["specialists"], "rekey", "\u00b2")])  # no 'specialists' key left
@example(edits=[(["specialists", "0"], "rekey", "\u00b2")])  # '²'.isdigit(): was int() ValueError
@example(edits=[(["files"], "add", "."), (["files", "."], "replace",
                                          {"bytes": 0, "sha256": ""})])  # was IsADirectoryError
@example(edits=[(["files"], "add", "a\x00b"), (["files", "a\x00b"], "replace",
                                               {"bytes": 0, "sha256": ""})])  # was ValueError
@example(edits=[(["files"], "add", "x" * 300), (["files", "x" * 300], "replace",
                                                {"bytes": 0, "sha256": ""})])  # was OSError
@example(edits=[(["input", "shape", 2], "replace", True)])  # bool is no channel count
@example(edits=[(["specialists", "0", "superclass"], "replace", ["shoes"])])
@example(edits=[(["trunk"], "replace", "generalist.tflite")])
@example(edits=[(["input"], "replace", [1])])
def test_bundle_manifest_edits(edits, bundle_dir, workdir, models):
  bundle = _fresh_copy(bundle_dir, workdir)
  path = os.path.join(bundle, "manifest.json")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  with open(path, "wb") as f:
    f.write(_dumps(_edit_json(manifest, edits)))
  _load_and_rebuild(bundle, models)


LABEL_LINES = st.lists(st.sampled_from(TINY.subclass_names) | st.text(max_size=8), max_size=8)
BUNDLE_EDIT = st.one_of(
    st.tuples(st.sampled_from(BUNDLE_FILES), BYTE_EDIT),
    st.tuples(st.sampled_from(SKELETONS), st.tuples(st.just("gunzipped"), BYTE_EDIT)),
    st.tuples(st.sampled_from(DELTAS), st.tuples(st.just("arrays"), ARRAY_EDITS)),
    st.tuples(st.just("hierarchy.json"), st.tuples(st.just("json"), JSON_EDITS)),
    st.tuples(st.just("labels.txt"), st.tuples(st.just("replace"), LABEL_LINES.map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")))))


@fuzz(200)
@given(edit=BUNDLE_EDIT)
@example(edit=("labels.txt", ("replace", b"\xff\n")))  # was a UnicodeDecodeError
@example(edit=("hierarchy.json", ("replace", b"[" * 100_000)))  # was a RecursionError
@example(edit=(DELTAS[1], ("flip", [(200, 1)])))  # bad CRC: was zipfile.BadZipFile on rebuild
@example(edit=(DELTAS[0], ("arrays", [  # a sparse delta whose values are a scalar: IndexError
    ("drop", "diff"), ("replace", "gaps", np.zeros((4, 1), np.uint8)),
    ("replace", "values", np.zeros((), np.uint8))])))
@example(edit=(DELTAS[0], ("arrays", [("astype", "buffers", np.dtype("U4"))])))
@example(edit=(SKELETONS[0], ("gunzipped", ("cut", 100))))
def test_bundle_with_a_corrupted_file(edit, bundle_dir, workdir, models):
  bundle = _fresh_copy(bundle_dir, workdir)
  rel, (how, *args) = edit
  with open(os.path.join(bundle, rel), "rb") as f:
    data = f.read()
  if how == "gunzipped":
    data = gzip.compress(_edit_bytes(gzip.decompress(data), args[0]), mtime=0)
  elif how == "arrays":
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      data = _npz(**_edit_arrays(npz, args[0]))
  elif how == "json":
    data = _dumps(_edit_json(json.loads(data), args[0]))
  else:
    data = _edit_bytes(data, (how, *args))
  _relist(bundle, rel, data)
  _load_and_rebuild(bundle, models)


# --- deltas, skeletons and TFLite models ----------------------------------------------------------
TFL3_PREFIXED = st.binary(max_size=300).map(lambda b: b[:4].ljust(4, b"\0") + b"TFL3" + b[4:])


@fuzz(150)
@given(edit=BYTE_EDIT | TFL3_PREFIXED.map(lambda raw: ("replace", raw)))
@example(edit=("replace", b""))
@example(edit=("cut", 40))
def test_parse_model_any_bytes(edit, models):
  _only(DeltaError, flatbuffer.parse_model, _edit_bytes(models[1], edit), "fuzzed model")


@fuzz(200)
@given(which=st.sampled_from([(k, enc) for k in (0, 1) for enc in ("sparse", "dense", "signed")]),
       edits=ARRAY_EDITS)
@example(which=(0, "sparse"), edits=[("replace", "values", np.zeros((), np.uint8))])  # IndexError
@example(which=(0, "sparse"), edits=[("astype", "gaps", np.dtype("U4"))])  # text: read as numbers
@example(which=(1, "dense"), edits=[("astype", "diff", np.dtype("U4"))])
@example(which=(1, "dense"), edits=[("astype", "version", np.dtype("U4"))])
@example(which=(1, "dense"), edits=[("astype", "version", np.dtype("c16"))])  # was a TypeError
@example(which=(1, "sparse"), edits=[("set", "quant", 0, -5)])  # was an IndexError
@example(which=(1, "sparse"), edits=[("set", "buffers", 0, -9)])  # was an IndexError
@example(which=(1, "sparse"), edits=[("astype", "buffers", np.dtype("f8")),
                                     ("set", "buffers", 1, 2**40)])  # FastRebuild: IndexError
@example(which=(0, "sparse"), edits=[("replace", "values", np.zeros((4, 2), np.uint8))])
# (the last was a numpy ValueError about broadcasting, not a DeltaError)
def test_apply_delta_with_altered_arrays(which, edits, models, deltas, fast, loaded):
  """apply_delta, FastRebuild and Bundle.specialist (the .npz bytes path) on altered arrays."""
  k, _ = which
  base, want = models["generalist"], models[k]
  skeleton, arrays = deltas[which]
  altered = _edit_arrays(arrays, edits)
  rebuilt = _only(DeltaError, delta_lib.apply_delta, base, skeleton, altered)
  assert rebuilt is None or rebuilt == want
  rebuilt = _only(DeltaError, fast[which].apply, base, altered)
  assert rebuilt is None or rebuilt == want
  _only(DeltaError, fast_rebuild.FastRebuild.from_rebuilt, base, want, altered)
  bundle = dataclasses.replace(loaded, skeletons={**loaded.skeletons, k: skeleton},
                               deltas={**loaded.deltas, k: _npz(**altered)})
  rebuilt = _only(BundleError, bundle.specialist, k, names=loaded.path)
  assert rebuilt is None or rebuilt == want
  bundle._fast[k] = fast[which]  # pylint: disable=protected-access  # as after a good rebuild
  rebuilt = _only(BundleError, bundle.specialist, k, names=loaded.path)
  assert rebuilt is None or rebuilt == want


@fuzz(120)
@given(which=st.sampled_from([(0, "sparse"), (1, "dense"), (1, "signed")]), part=st.sampled_from(
    ["skeleton", "base"]), edit=BYTE_EDIT)
@example(which=(1, "dense"), part="base", edit=("cut", 500))  # FastRebuild: was a ValueError
@example(which=(0, "sparse"), part="skeleton", edit=("flip", [(20, 4)]))
def test_apply_delta_with_a_corrupted_skeleton_or_base(which, part, edit, models, deltas,
                                                       fast):
  k, _ = which
  base, want = models["generalist"], models[k]
  skeleton, arrays = deltas[which]
  if part == "skeleton":
    rebuilt = _only(DeltaError, delta_lib.apply_delta, base, _edit_bytes(skeleton, edit), arrays)
    assert rebuilt is None or rebuilt == want
  else:
    altered = _edit_bytes(base, edit)
    for rebuild in (lambda: delta_lib.apply_delta(altered, skeleton, arrays),
                    lambda: fast[which].apply(altered, arrays)):
      rebuilt = _only(DeltaError, rebuild)
      assert rebuilt is None or rebuilt == want


# --- predictions CSV / NPZ and multi-label JSON ---------------------------------------------------
CSV_COLUMNS = ["label", "prediction", "file_name", "top5", "logits", "prob_0", "prob_1",
               "prob_3", "prob_x", "prob_\u00b2", "prob_99999999999", "other"]
CSV_CELLS = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["", "nan", "inf", "-1", "1e3", "1_0", "\u0663", "99999999999999999999",
                     "0x1", " 2 ", "1 2 3", "0 1 2 3 4", "a.png", "\x00"]),
    st.text(max_size=8),
    st.lists(st.integers(-2, 9).map(str) | st.floats().map(repr), max_size=5).map(" ".join))


def _csv_cell(column: str, width: int):
  """A cell the reader accepts in `column` (top5 and logits hold `width` values)."""
  if column in ("label", "prediction"):
    return st.integers(0, 9).map(str)
  if column == "top5":
    return st.lists(st.integers(0, 9).map(str), min_size=width, max_size=width).map(" ".join)
  if column == "logits":
    return st.lists(st.floats(-50, 50).map(repr), min_size=width, max_size=width).map(" ".join)
  if column.startswith("prob_"):
    return st.floats(0, 1).map(repr)
  return st.text(max_size=8)


@st.composite
def csv_files(draw) -> bytes:
  """A predictions CSV: mostly a header the reader accepts (plus stray columns, in any order)
  and rows of the header's width whose cells mostly fit their column, so that most examples
  reach the cell parsers and the checks after them."""
  if draw(st.integers(0, 3)):
    core = draw(st.sampled_from([["label", "prediction"], ["label", "logits"],
                                 ["label", "prob_0", "prob_1", "prob_3"],
                                 ["label", "prediction", "top5", "file_name"]]))
    extra = draw(st.lists(st.sampled_from(CSV_COLUMNS) | st.text(max_size=6), max_size=2))
    header = draw(st.permutations(core + extra))
  else:
    header = draw(st.lists(st.sampled_from(CSV_COLUMNS) | st.text(max_size=6), min_size=1,
                           max_size=6))
  width, values = len(header), draw(st.integers(1, 4))
  rows = []
  for _ in range(draw(st.integers(0, 5))):
    if draw(st.integers(0, 7)):
      rows.append([draw(_csv_cell(column, values) if draw(st.integers(0, 7)) else CSV_CELLS)
                   for column in header])
    else:
      rows.append(draw(st.lists(CSV_CELLS, min_size=max(0, width - 1), max_size=width + 1)))
  text = io.StringIO()
  csv.writer(text).writerows([header, *rows])
  return text.getvalue().encode("utf-8", "surrogatepass")


@fuzz(250)
@given(raw=csv_files() | st.binary(max_size=300))
@example(raw=b"label,prediction\n\xff,1\n")  # not UTF-8: was a UnicodeDecodeError
@example(raw=b"label,prediction\n99999999999999999999,1\n")  # was an OverflowError
@example(raw=b"label,prob_\xc2\xb2\n1,0.5\n")  # 'prob_²': was int() ValueError
@example(raw=b"label,prob_99999999999\n1,0.5\n")  # a 800 GB probability table: was MemoryError
@example(raw=b"label,prediction\n1," + b"x" * 200_000 + b"\n")  # was a csv.Error
@example(raw=b'label,prediction\n"1\x00",1\n')
@example(raw=b"label,logits\n1,1e308 1e308\n")
def test_predictions_csv(raw, workdir):
  path = os.path.join(workdir, "predictions.csv")
  with open(path, "wb") as f:
    f.write(raw)
  _only(AnalysisError, loading.read_predictions, path, names=path)


NPZ_FIELDS = ("labels", "predictions", "logits", "probs", "top5", "file_names", "label_space")


@st.composite
def npz_files(draw) -> bytes:
  """A predictions NPZ: known fields with plausible shapes or any array, or corrupted bytes."""
  n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
  plausible = {
      "labels": npst.arrays(np.int64, n, elements=st.integers(0, 4)),
      "predictions": npst.arrays(np.int64, n, elements=st.integers(0, 4)),
      "logits": npst.arrays(np.float64, (n, c), elements=st.floats(-50, 50)),
      "probs": npst.arrays(np.float32, (n, c), elements=st.floats(0, 1, width=32)),
      "top5": npst.arrays(np.int64, (n, min(c, 2)), elements=st.integers(0, 4)),
      "file_names": npst.arrays(npst.byte_string_dtypes(max_len=3), n),
      "label_space": st.sampled_from(["subclass", "source", "superclass", "x"]).map(np.array)}
  fields = draw(st.lists(st.sampled_from(NPZ_FIELDS + ("other",)), unique=True, max_size=4))
  if draw(st.integers(0, 3)):  # mostly the fields the reader needs, so it reads on
    fields = ["labels", draw(st.sampled_from(["predictions", "logits", "probs"]))] + fields
  arrays = {name: draw(plausible.get(name, ANY_ARRAY) if draw(st.integers(0, 3)) else ANY_ARRAY)
            for name in dict.fromkeys(fields)}
  data = _npz(**arrays)
  return data if draw(st.integers(0, 3)) else _edit_bytes(data, draw(BYTE_EDIT))


@fuzz(250)
@given(raw=npz_files())
@example(raw=_npz(labels=np.array([0, 1]), probs=np.zeros((2, 0))))  # was a ValueError (argmax)
@example(raw=_npz(labels=np.array([0, 1]), logits=np.zeros((2, 0))))  # was a ValueError (max)
@example(raw=_npz(labels=np.array([0]), predictions=np.array([0]),
                  file_names=np.array([b"\xff"])))  # was a UnicodeDecodeError
@example(raw=_edit_bytes(_npz(labels=np.arange(50), predictions=np.arange(50)),
                         ("flip", [(500, 1)])))  # bad CRC: was zipfile.BadZipFile
@example(raw=_npz(labels=np.array(["a"]), predictions=np.array([0])))
@example(raw=_npz(labels=np.array([0]), probs=np.ones((1, 1), complex)))  # was accepted
def test_predictions_npz(raw, workdir):
  path = os.path.join(workdir, "predictions.npz")
  with open(path, "wb") as f:
    f.write(raw)
  _only(AnalysisError, loading.read_predictions, path, names=path)


MULTILABEL_ENTRY = st.lists(st.integers(-1, 5) | st.sampled_from([2**63, 2**70, True, 1.0, "1"]),
                            max_size=3)


@fuzz(150)
@given(raw=st.binary(max_size=200) | JSON.map(_dumps)
       | st.lists(MULTILABEL_ENTRY | JSON, min_size=3, max_size=3).map(_dumps)
       | st.lists(MULTILABEL_ENTRY, min_size=2, max_size=4).map(_dumps)
       | st.dictionaries(st.sampled_from(["img/a.png", "b.png", "c.png", "a.png"]),
                         MULTILABEL_ENTRY, min_size=3, max_size=4).map(_dumps)
       | st.dictionaries(st.sampled_from(["img/a.png", "b.png", "c.png", "a.png"]) | st.text(),
                         MULTILABEL_ENTRY | JSON, max_size=4).map(_dumps))
@example(raw=b"[[2], [18446744073709551616], []]")  # 2**64: was an OverflowError
@example(raw=b"\xff[]")  # not UTF-8: was a UnicodeDecodeError
@example(raw=b"[" * 100_000)  # was a RecursionError
@example(raw=b'{"a.png": [1], "b.png": [], "c.png": [0, 1]}')
def test_multilabels_json(raw, workdir):
  predictions_path = os.path.join(workdir, "predictions.csv")
  with open(predictions_path, "w", encoding="utf-8") as f:
    f.write("label,prediction,file_name\n1,1,img/a.png\n0,1,b.png\n1,0,c.png\n")
  predictions = loading.read_predictions(predictions_path)
  path = os.path.join(workdir, "real.json")
  with open(path, "wb") as f:
    f.write(raw)
  labels = _only(AnalysisError, loading.read_multilabels, path, predictions, names=path)
  assert labels is None or labels.num_examples == 3


# --- a run's config.json --------------------------------------------------------------------------
CONFIG = config_lib.TrainConfig(model_dir="/runs/one", specialists=(0, 2)).to_dict()


@fuzz(200)
@given(raw=st.binary(max_size=200) | JSON.map(_dumps)
       | JSON_EDITS.map(lambda edits: _dumps(_edit_json(CONFIG, edits))))
@example(raw=b"\xff")  # was a UnicodeDecodeError
@example(raw=b"{")  # was a json.JSONDecodeError
@example(raw=b"[1]")  # a list: was a plain ValueError (unknown keys [1])
@example(raw=b"[" * 100_000)  # was a RecursionError
@example(raw=b"{}")  # no model_dir: was a TypeError
@example(raw=_dumps({**CONFIG, "extra": 1}))  # was a plain ValueError
@example(raw=_dumps({**CONFIG, "epochs": "10"}))  # was a TypeError ('<' on str and int)
@example(raw=_dumps({**CONFIG, "specialists": "ab"}))  # was int('a') ValueError
@example(raw=_dumps({**CONFIG, "specialists": 3}))  # was a TypeError (not iterable)
@example(raw=_dumps({**CONFIG, "stage": "nope"}))  # was a plain ValueError
@example(raw=_dumps({**CONFIG, "delta_keep": "0.5"}))  # was a TypeError
def test_config_json(raw, workdir):
  run = os.path.join(workdir, "run")
  os.makedirs(run, exist_ok=True)
  path = os.path.join(run, "config.json")
  with open(path, "wb") as f:
    f.write(raw)
  config = _only(ConfigError, config_lib.load_config, run, names=path)
  if config is not None:  # what is accepted is a TrainConfig that survives its own round trip
    assert config_lib.TrainConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_config_folders_without_a_readable_config(workdir):
  """No config.json stays a FileNotFoundError (callers tell "not a run" from "a broken run");
  a config.json that cannot be read at all is a ConfigError."""
  empty = os.path.join(workdir, "empty-run")
  os.makedirs(empty, exist_ok=True)
  with pytest.raises(FileNotFoundError, match="is not a super-sub-train run"):
    config_lib.load_config(empty)
  folder = os.path.join(workdir, "folder-run")
  os.makedirs(os.path.join(folder, "config.json"), exist_ok=True)
  with pytest.raises(ConfigError, match="config.json"):
    config_lib.load_config(folder)


def test_every_config_field_has_a_json_type():
  """load_config checks each value against its field's annotation; a field of a type it has no
  JSON form for would go unchecked, so a new one must be added there."""
  for field in dataclasses.fields(config_lib.TrainConfig):
    base = str(field.type).partition(" | ")[0]
    assert base in config_lib._JSON_TYPES, field  # pylint: disable=protected-access
