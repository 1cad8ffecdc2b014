"""Tests of the TFLite bundle (deltas, writer, checksums) and the TensorFlow-free edge runtime."""

import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from super_sub._internal.compat import keras  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema
from super_sub import hierarchy as hierarchy_lib
from super_sub import routing
from super_sub import runtime
from super_sub.formats import delta as delta_lib
from super_sub.formats import delta_arrays
from super_sub.formats import encodings
from super_sub.formats import fast_rebuild
from super_sub.formats import flatbuffer
from super_sub.runtime import predictor

SHAPE = (12, 12, 1)
HIERARCHY = hierarchy_lib.from_groups("tiny", [
    ("shoes", [("sneaker", 0), ("boot", 1)]),
    ("tops", [("shirt", 2), ("coat", 3), ("tee", 4), ("pullover", 5)]),
    ("bags", [("bag", 6)]),  # one subclass: no specialist
])
INPUT_INFO = {"shape": list(SHAPE), "dtype": "float32", "range": [0, 1]}
CHANGED_WEIGHTS = 20


def _net(width: int) -> keras.Model:
  inputs = keras.Input(SHAPE)
  x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
  x = keras.layers.MaxPool2D()(x)
  x = keras.layers.Conv2D(32, 3, activation="relu")(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(64, activation="relu")(x)
  return keras.Model(inputs, keras.layers.Dense(width)(x), name="net")


def _fine_tuned(generalist: keras.Model, width: int, rng) -> keras.Model:
  """The generalist's trunk with CHANGED_WEIGHTS weights of one layer moved: a sparse fine-tune.

  Only small weights move, by less than the smallest per-channel max, so every int8 scale (and
  hence every other byte of the converted trunk) stays the base's.
  """
  model = _net(width)
  for src, dst in zip(generalist.layers[:-1], model.layers[:-1]):
    dst.set_weights(src.get_weights())
  kernel, bias = model.layers[-2].get_weights()
  small = 0.3 * np.abs(kernel).max(axis=0).min()
  candidates = np.flatnonzero(np.abs(kernel) < small)
  chosen = rng.choice(candidates, CHANGED_WEIGHTS, replace=False)
  kernel.reshape(-1)[chosen] += np.where(rng.random(CHANGED_WEIGHTS) < 0.5, -small, small) / 3
  model.layers[-2].set_weights([kernel, bias])
  return model


def _convert(model: keras.Model, integer_io: bool = False) -> bytes:
  calibration = np.random.default_rng(1).random((16, *SHAPE), dtype=np.float32)
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([x[None]] for x in calibration)
  if integer_io:
    converter.inference_input_type = converter.inference_output_type = tf.int8
  return converter.convert()


@pytest.fixture(scope="module")
def models():
  """int8 TFLite bytes: generalist (3 superclasses); shoes (int8 in/out) and tops specialists."""
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  generalist = _net(3)
  return {"generalist": _convert(generalist),
          0: _convert(_fine_tuned(generalist, 2, rng), integer_io=True),
          1: _convert(_fine_tuned(generalist, 4, rng))}


@pytest.fixture(scope="module")
def bundle_dir(models, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("export") / "tflite")
  runtime.write_tflite_bundle(out, HIERARCHY, models["generalist"],
                              {0: models[0], 1: models[1]}, INPUT_INFO)
  return out


@pytest.fixture(scope="module")
def images(models):
  """9 images, 3 routed (by the generalist's argmax) to each superclass."""
  rng = np.random.default_rng(2)
  pool = (rng.random((200, *SHAPE)) ** rng.uniform(0.2, 5, (200, 1, 1, 1))).astype(np.float32)
  routed = np.argmax(_logits(models["generalist"], pool), axis=1)
  chosen = [np.flatnonzero(routed == sup)[:3] for sup in range(HIERARCHY.num_superclasses)]
  assert all(len(c) == 3 for c in chosen), np.bincount(routed)
  return pool[np.concatenate(chosen)]


def _logits(model: bytes, x: np.ndarray) -> np.ndarray:
  """A model's float logits, one image at a time (no batching, no grouping)."""
  it = litert.Interpreter(model_content=model)
  it.allocate_tensors()
  (inp,), (out,) = it.get_input_details(), it.get_output_details()
  rows = []
  for image in x:
    if inp["dtype"] == np.int8:
      scale, zero = inp["quantization"]
      image = np.clip(np.round(image / scale) + zero, -128, 127).astype(np.int8)
    it.set_tensor(inp["index"], image[None])
    it.invoke()
    y = it.get_tensor(out["index"])[0]
    if out["dtype"] == np.int8:
      scale, zero = out["quantization"]
      y = (y.astype(np.float32) - zero) * scale
    rows.append(y)
  return np.array(rows, np.float32)


def _direct(models, x, mode, k):
  """label_probs computed row by row from each model's own outputs, by the routing definition."""
  super_probs = routing.softmax(_logits(models["generalist"], x))
  label_probs = np.zeros((len(x), HIERARCHY.num_subclasses), np.float32)
  for i in range(len(x)):
    top = np.argsort(-super_probs[i], kind="stable")[:1 if mode == "hard" else k]
    for sup in top:
      weight = 1.0 if mode == "hard" else super_probs[i, sup]
      span = HIERARCHY.subclass_range(sup)
      cond = (routing.softmax(_logits(models[sup], x[i:i + 1]))[0] if len(span) > 1
              else np.ones(1, np.float32))
      label_probs[i, span.start:span.stop] = weight * cond
  return super_probs, label_probs


# --- deltas --------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["auto", "sparse", "dense", "signed"])
@pytest.mark.parametrize("k", [0, 1])
def test_delta_rebuilds_specialist_bit_exactly(models, images, k, encoding):
  skeleton, arrays = runtime.make_delta(models["generalist"], models[k], encoding=encoding)
  if encoding != "auto":
    assert ("diff" in arrays) == (encoding == "dense")
    assert ("runs" in arrays) == (encoding == "signed")
    assert int(arrays["version"]) == (2 if encoding == "signed" else 1)
  saved = io.BytesIO()
  np.savez_compressed(saved, **arrays)
  saved.seek(0)
  with np.load(saved, allow_pickle=False) as loaded:
    rebuilt = runtime.apply_delta(models["generalist"], skeleton, loaded)
  assert rebuilt == models[k]
  np.testing.assert_array_equal(_logits(rebuilt, images), _logits(models[k], images))


def test_delta_of_a_sparse_fine_tune_is_small(models):
  skeleton, arrays = runtime.make_delta(models["generalist"], models[1])
  stored = encodings.delta_nbytes(arrays)
  # 20 changed int8 weights (+ 8 bytes of conversion metadata) of a 29 KB model: the delta is
  # ~1.3 KB, mostly .npz headers and two sha256; the skeleton keeps the graph and the head (3 KB).
  assert stored < 1400, stored
  assert stored + len(skeleton) < 0.2 * len(models[1]), (stored, len(skeleton))
  assert len(arrays["quant"]) > 0  # the trunk's quantization parameters come from the base
  assert int(np.count_nonzero(arrays.get("values", arrays.get("diff")))) <= CHANGED_WEIGHTS + 16


@pytest.mark.slow
def test_delta_pairs_buffers_the_converter_permuted(models, images):
  """Equal-length buffers in another order (as differently named layers get) still pair up."""
  obj = flatbuffer.parse_model(models[1])
  sizes = [0 if b.data is None else len(b.data) for b in obj.buffers]
  a, b = sorted(range(len(sizes)), key=sizes.__getitem__)[-2:]  # the two largest kernels
  obj.buffers[a], obj.buffers[b] = obj.buffers[b], obj.buffers[a]
  for tensor in obj.subgraphs[0].tensors:
    tensor.buffer = {a: b, b: a}.get(tensor.buffer, tensor.buffer)
  permuted = flatbuffer.pack_model(obj)
  np.testing.assert_array_equal(_logits(permuted, images), _logits(models[1], images))
  skeleton, arrays = runtime.make_delta(models["generalist"], permuted)
  assert runtime.apply_delta(models["generalist"], skeleton, arrays) == permuted
  assert {(a, b), (b, a)} <= {(int(i), int(j)) for i, j, _ in arrays["buffers"]}
  assert encodings.delta_nbytes(arrays) < 1400 and len(skeleton) < 0.25 * len(permuted)


def test_signed_encoding_hand_computed():
  # A [2, 3] int8 kernel (channel = row): channel 0 moved by +2, -2, +2, channel 1 by 0, +5, 0;
  # then a 4-byte int32 bias (no sign structure) whose low byte moved by +1.
  diff = np.array([2, 254, 2, 0, 5, 0, 1, 0, 0, 0], np.uint8)
  encoded = encodings.encode_signed(diff, np.array([[0, 6, 3, 2]]), force=False)
  # Channel 1: one byte moved by 5 and two not at all, so k = 0 (the 5 stays a residual), and
  # the run leaves it out: channel 0 only.
  np.testing.assert_array_equal(encoded["runs"], [[0, 3, 3, 1]])
  np.testing.assert_array_equal(encoded["magnitudes"], [2])
  np.testing.assert_array_equal(encoded["signs"], [0b101])  # +, -, + (least significant first)
  np.testing.assert_array_equal(encoded["gaps"][0], [4, 2])  # residual at bytes 4 and 6
  np.testing.assert_array_equal(encoded["values"], [5, 1])
  np.testing.assert_array_equal(encodings.decode(encoded, len(diff)), diff)
  # An int8 buffer whose changes have no sign structure is not worth its bits.
  assert encodings.encode_signed(np.array([0, 0, 0, 7, 0, 0], np.uint8), np.array([[0, 6, 3, 2]]),
                                 force=False) is None


def test_signed_runs_leave_out_unmoved_channels_where_that_saves_bytes():
  # An [8, 48] int8 kernel whose channels moved by k = 2, 0, 0, 0, 3, 0, 4, 0 (random signs).
  k = np.array([2, 0, 0, 0, 3, 0, 4, 0])
  up = np.random.default_rng(0).random(8 * 48) < 0.5
  per_byte = np.repeat(k, 48)
  diff = np.where(up, per_byte, -per_byte).astype(np.uint8)
  encoded = encodings.encode_signed(diff, np.array([[0, 8 * 48, 48, 8]]), force=False)
  # Three unmoved channels (144 bytes, 18 sign bytes) cost more than a second run (16 bytes):
  # left out. One (48 bytes, 6 sign bytes) costs less: kept, with k = 0. The last: left out.
  np.testing.assert_array_equal(encoded["runs"], [[0, 48, 48, 1], [4 * 48, 3 * 48, 48, 3]])
  np.testing.assert_array_equal(encoded["magnitudes"], [2, 3, 0, 4])
  assert encoded["signs"].shape == (4 * 48 // 8,) and encoded["values"].size == 0
  np.testing.assert_array_equal(encodings.decode(encoded, len(diff)), diff)


def test_signed_runs_cover_a_depthwise_kernel_whole():
  # A depthwise [1, 2, 2, 3] int8 kernel: its 3 channels interleave (block 1, period 3), so one
  # run covers all 12 bytes; channels moved by k = 1, 2, 3 with random signs.
  k = np.array([1, 2, 3])
  up = np.random.default_rng(0).random(12) < 0.5
  per_byte = np.tile(k, 4)
  diff = np.where(up, per_byte, -per_byte).astype(np.uint8)
  encoded = encodings.encode_signed(diff, np.array([[0, 12, 1, 3]]), force=True)
  np.testing.assert_array_equal(encoded["runs"], [[0, 12, 1, 3]])
  np.testing.assert_array_equal(encoded["magnitudes"], [1, 2, 3])
  assert encoded["signs"].shape == (2,) and encoded["values"].size == 0
  np.testing.assert_array_equal(encodings.decode(encoded, len(diff)), diff)


def _largest_per_channel_kernel(obj):
  """The int8 tensor with per-channel quantization and the most bytes of a parsed model."""
  tensors = [t for t in obj.subgraphs[0].tensors if t.type == schema.TensorType.INT8
             and t.quantization is not None and t.quantization.scale is not None
             and len(t.quantization.scale) > 1 and obj.buffers[t.buffer].data is not None]
  return max(tensors, key=lambda t: len(obj.buffers[t.buffer].data))


def _moved_by_sign(model: bytes, ks, seed: int) -> tuple[bytes, int]:
  """`model` with every byte of its largest per-channel int8 kernel moved by +-k of its channel
  (`ks`: one k for all, or one per channel; random signs), and that buffer's index."""
  obj = flatbuffer.parse_model(model)
  kernel = _largest_per_channel_kernel(obj)
  data = np.array(obj.buffers[kernel.buffer].data, np.uint8)
  assert kernel.quantization.quantizedDimension == 0  # [C_out, ...]: channels are row blocks
  per_byte = np.repeat(np.broadcast_to(ks, len(kernel.quantization.scale)), data.size //
                       len(kernel.quantization.scale)).astype(np.uint8)
  up = np.random.default_rng(seed).random(data.size) < 0.5
  obj.buffers[kernel.buffer].data = data + np.where(up, per_byte, np.negative(per_byte))
  return flatbuffer.pack_model(obj), kernel.buffer


def test_auto_encoding_stores_a_sign_delta_in_about_a_bit_per_weight(models):
  ks = np.random.default_rng(3).integers(1, 10, 64)  # the dense layer's 64 output channels
  specialist, buffer = _moved_by_sign(models[1], ks, seed=0)
  n = len(flatbuffer.parse_model(models[1]).buffers[buffer].data)
  sizes = {}
  for encoding in ("sparse", "dense", "auto"):
    skeleton, arrays = runtime.make_delta(models["generalist"], specialist, encoding=encoding)
    assert runtime.apply_delta(models["generalist"], skeleton, arrays) == specialist
    sizes[encoding] = encodings.delta_nbytes(arrays)
  assert "runs" in arrays and int(arrays["version"]) == 2
  # One run (the kernel) with each channel's k; the residual holds the sparse fine-tune's
  # CHANGED_WEIGHTS moves of another layer and a few bytes of conversion metadata.
  np.testing.assert_array_equal(arrays["magnitudes"], ks)
  assert arrays["runs"].tolist() == [[arrays["runs"][0, 0], n, n // 64, 64]]
  assert len(arrays["values"]) <= CHANGED_WEIGHTS + 16
  # A bit per weight and ~2 KB of other arrays and .npz headers; deflate needs ~2.2 bits a
  # byte for the same changes.
  assert sizes["auto"] < n / 8 + 2200 and sizes["auto"] < 0.9 * min(sizes["sparse"],
                                                                    sizes["dense"]), (sizes, n)


@pytest.mark.slow
def test_a_sign_moved_depthwise_kernel_rebuilds_from_one_run():
  """MobileNetV2's depthwise kernels ([1, H, W, C] in TFLite, quantized on the last axis) hold
  their channels interleaved: the signed run must cover every byte of the buffer."""
  inputs = keras.Input(SHAPE)
  x = keras.layers.Conv2D(8, 3)(inputs)
  x = keras.layers.DepthwiseConv2D(3)(x)
  keras.utils.set_random_seed(0)
  base = _convert(keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x))))
  obj = flatbuffer.parse_model(base)
  kernel = next(t for t in obj.subgraphs[0].tensors if len(t.shape) == 4 and t.shape[0] == 1
                and t.type == schema.TensorType.INT8)
  assert kernel.quantization.quantizedDimension == 3 and list(kernel.shape) == [1, 3, 3, 8]
  data = np.array(obj.buffers[kernel.buffer].data, np.uint8)
  ks = np.arange(1, 9)  # channel c moves by c + 1, up or down
  up = np.random.default_rng(0).random(data.size) < 0.5
  per_byte = np.tile(ks, 9).astype(np.uint8)  # byte t is channel t % 8
  obj.buffers[kernel.buffer].data = data + np.where(up, per_byte, np.negative(per_byte))
  specialist = flatbuffer.pack_model(obj)
  skeleton, arrays = runtime.make_delta(base, specialist, encoding="signed")
  assert runtime.apply_delta(base, skeleton, arrays) == specialist
  runs = arrays["runs"].tolist()
  at = [i for i, r in enumerate(runs) if r[2:] == [1, 8]]
  assert [runs[i][1] for i in at] == [72]  # the whole kernel, not one byte a channel
  first = sum(r[3] for r in runs[:at[0]])  # its magnitudes follow the earlier runs'
  np.testing.assert_array_equal(arrays["magnitudes"][first:first + 8], ks)


def test_delta_pairs_a_buffer_with_the_nearest_not_the_one_with_most_equal_bytes(models):
  """Every byte of a sign-moved kernel differs from its base; an unrelated buffer of the same
  length agrees with it by chance in ~1/256 of the bytes. Pairing by equal bytes chose that
  one (and stored the whole kernel); pairing by distance chooses the kernel's own base."""
  specialist, buffer = _moved_by_sign(models[1], 1, seed=1)
  obj, spec = flatbuffer.parse_model(models["generalist"]), flatbuffer.parse_model(specialist)
  stranger = schema.BufferT()
  n = len(spec.buffers[buffer].data)
  stranger.data = np.random.default_rng(2).integers(0, 256, n, dtype=np.uint8)
  stranger.data[::2] = np.asarray(spec.buffers[buffer].data)[::2]  # half its bytes equal
  obj.buffers.insert(buffer, stranger)  # the same length, at the kernel's own index
  for t in obj.subgraphs[0].tensors:
    t.buffer += t.buffer >= buffer
  base = flatbuffer.pack_model(obj)
  skeleton, arrays = runtime.make_delta(base, specialist)
  assert runtime.apply_delta(base, skeleton, arrays) == specialist
  assert (buffer, buffer + 1, n) in {tuple(map(int, row)) for row in arrays["buffers"]}


def test_apply_delta_refuses_a_signed_delta_that_claims_version_1(models):
  specialist, _ = _moved_by_sign(models[1], 3, seed=0)
  skeleton, arrays = runtime.make_delta(models["generalist"], specialist, encoding="signed")
  with pytest.raises(runtime.DeltaError, match=r"delta version 1 with signed or factored arrays "
                     r"is not supported \(this runtime reads version 1 with dense or sparse "
                     r"arrays, 2 with signed or factored\)"):
    runtime.apply_delta(models["generalist"], skeleton,
                        dict(arrays, version=np.array(1, np.int64)))
  with pytest.raises(runtime.DeltaError, match="signed delta runs do not fit"):
    runtime.apply_delta(models["generalist"], skeleton,
                        dict(arrays, runs=arrays["runs"] + np.array([0, 1, 0, 0], np.uint32)))


def test_factored_product_hand_computed():
  left = np.array([[1, -2], [127, 0]], np.int8)
  right = np.array([[3, 0, -1], [1, 1, 1]], np.int8)
  scales = np.array([0.5, 0.25], np.float32)
  # left @ right = [[1, -2, -3], [381, 0, -127]]; x 0.5 and x 0.25, halves to even.
  np.testing.assert_array_equal(encodings.factored_product(left, right, scales),
                                [[0, -1, -2], [95, 0, -32]])


def _factored_specialist(model: bytes, rank: int, seed: int):
  """`model` with its largest per-channel int8 kernel moved by a rank-`rank` factored product
  (mod 256, as the delta adds it), the factors, and the kernel's buffer index."""
  obj = flatbuffer.parse_model(model)
  kernel = _largest_per_channel_kernel(obj)
  data = np.array(obj.buffers[kernel.buffer].data, np.uint8)
  rows = int(kernel.shape[0])
  rng = np.random.default_rng(seed)
  factors = (rng.integers(-127, 128, (rows, rank)).astype(np.int8),
             rng.integers(-127, 128, (rank, data.size // rows)).astype(np.int8),
             rng.uniform(0, 30 / (127 * 127 * rank), rows).astype(np.float32))
  moved = (encodings.factored_product(*factors) % 256).astype(np.uint8).reshape(-1)
  obj.buffers[kernel.buffer].data = data + moved
  return flatbuffer.pack_model(obj), factors, kernel.buffer


def test_factored_delta_stores_the_factors_and_rebuilds_bit_exactly(models):
  specialist, factors, buffer = _factored_specialist(models[1], 3, seed=0)
  skeleton, arrays = runtime.make_delta(models["generalist"], specialist, factors=[factors])
  assert int(arrays["version"]) == 2
  np.testing.assert_array_equal(arrays["left"], factors[0].reshape(-1))
  np.testing.assert_array_equal(arrays["scales"], factors[2])
  n = len(flatbuffer.parse_model(models[1]).buffers[buffer].data)
  assert arrays["factored"][:, 1:].tolist() == [[64, n // 64, 3]]  # the dense layer, 64 rows
  # The residual: only the sparse fine-tune's moves elsewhere and conversion metadata.
  assert len(arrays["values"]) <= CHANGED_WEIGHTS + 16
  assert runtime.apply_delta(models["generalist"], skeleton, arrays) == specialist
  saved = io.BytesIO()
  np.savez_compressed(saved, **arrays)
  saved.seek(0)
  with np.load(saved, allow_pickle=False) as loaded:
    fast = fast_rebuild.FastRebuild.from_rebuilt(models["generalist"], specialist, loaded)
    assert fast.apply(models["generalist"], loaded) == specialist
  _, dense = runtime.make_delta(models["generalist"], specialist, "dense")
  # ~1.1 KB of factors and ~2.4 KB of other arrays and headers, against ~10 KB dense.
  assert encodings.delta_nbytes(arrays) < encodings.delta_nbytes(dense) / 2.5


def test_factors_that_do_not_reproduce_the_specialist_are_refused(models):
  specialist, (left, right, scales), _ = _factored_specialist(models[1], 3, seed=0)
  other = (np.roll(left, 1, axis=0), right, scales)  # the rows of another kernel
  with pytest.raises(runtime.DeltaError, match=r"low-rank factors of a 64 x \d+ kernel \(rank "
                     r"3\) do not reproduce any int8 weight buffer"):
    runtime.make_delta(models["generalist"], specialist, factors=[other])
  with pytest.raises(runtime.DeltaError, match=r"do not fit together; expected \[m, r\], "
                     r"\[r, n\], \[m\]"):
    runtime.make_delta(models["generalist"], specialist, factors=[(left, right.T, scales)])
  with pytest.raises(ValueError, match="factored encoding; got 'dense'"):
    runtime.make_delta(models["generalist"], specialist, "dense", factors=[(left, right, scales)])
  skeleton, arrays = runtime.make_delta(models["generalist"], specialist,
                                        factors=[(left, right, scales)])
  with pytest.raises(runtime.DeltaError, match="delta version 1 with signed or factored arrays"):
    runtime.apply_delta(models["generalist"], skeleton,
                        dict(arrays, version=np.array(1, np.int64)))
  with pytest.raises(runtime.DeltaError, match=r"factored delta has left \(\d+,\), right"):
    runtime.apply_delta(models["generalist"], skeleton, dict(arrays, left=arrays["left"][1:]))
  with pytest.raises(runtime.DeltaError, match="'scales' has dtype float64; expected float32"):
    runtime.apply_delta(models["generalist"], skeleton,
                        dict(arrays, scales=arrays["scales"].astype(np.float64)))


def test_apply_delta_refuses_a_base_it_was_not_made_for(models):
  skeleton, arrays = runtime.make_delta(models["generalist"], models[1])
  with pytest.raises(runtime.DeltaError, match="different base"):
    runtime.apply_delta(models[0], skeleton, arrays)
  bad = dict(arrays, buffers=arrays["buffers"] + np.array([0, 0, 1], np.uint32))
  with pytest.raises(runtime.DeltaError, match=r"records \d+ bytes but the base's buffer"):
    runtime.apply_delta(models["generalist"], skeleton, bad)
  with pytest.raises(runtime.DeltaError, match="lack"):
    runtime.apply_delta(models["generalist"], skeleton, {"version": arrays["version"]})


def test_make_delta_refuses_buffers_outside_the_flatbuffer(models):
  obj = flatbuffer.parse_model(models[1])
  obj.buffers[-1].data, obj.buffers[-1].offset, obj.buffers[-1].size = None, 4096, 16
  with pytest.raises(runtime.DeltaError, match="outside the flatbuffer"):
    runtime.make_delta(models["generalist"], flatbuffer.pack_model(obj))
  with pytest.raises(runtime.DeltaError, match="not a TFLite flatbuffer"):
    runtime.make_delta(models["generalist"], b"not a model at all")


# --- the bundle ----------------------------------------------------------------------------------
def test_bundle_layout_and_manifest(bundle_dir):
  with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  assert manifest["format"] == "super-sub-tflite" and manifest["version"] == 1
  assert manifest["input"]["shape"] == list(SHAPE)
  assert manifest["specialists"] == {
      "0": {"skeleton": "specialists/0_shoes.skeleton.tflite.gz",
            "delta": "specialists/0_shoes.delta.npz", "superclass": "shoes"},
      "1": {"skeleton": "specialists/1_tops.skeleton.tflite.gz",
            "delta": "specialists/1_tops.delta.npz", "superclass": "tops"}}
  on_disk = {os.path.relpath(os.path.join(root, n), bundle_dir)
             for root, _, names in os.walk(bundle_dir) for n in names}
  assert set(manifest["files"]) == on_disk - {"manifest.json"}
  for rel, entry in manifest["files"].items():
    path = os.path.join(bundle_dir, rel)
    assert entry["bytes"] == os.path.getsize(path), rel
    with open(path, "rb") as f:
      assert entry["sha256"] == hashlib.sha256(f.read()).hexdigest(), rel
  with open(os.path.join(bundle_dir, "labels.txt"), encoding="utf-8") as f:
    assert f.read().splitlines() == HIERARCHY.subclass_names
  with np.load(os.path.join(bundle_dir, "specialists/1_tops.delta.npz"),
               allow_pickle=False) as npz:
    assert set(npz.files) <= {"version", "sha256", "buffers", "quant", "gaps", "values", "diff",
                              "runs", "magnitudes", "signs", "factored", "left", "right",
                              "scales"}
  bundle = runtime.load_bundle(bundle_dir)
  assert bundle.hierarchy == HIERARCHY and bundle.input_shape == SHAPE
  assert manifest["input"]["framing"] == bundle.input_framing == "resize"  # INPUT_INFO's default


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_num_threads_below_one_is_refused(bundle_dir, bad):
  with pytest.raises(ValueError, match=rf"num_threads must be a positive integer .* got {bad}"):
    runtime.TwoStageLite(bundle_dir, num_threads=bad)


def test_framing_comes_from_the_manifest(bundle_dir, tmp_path):
  """Bundles of center-crop-evaluated models tell the runtime so; others must say a framing
  the runtime knows, and bundles written before framing existed mean "resize"."""
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _rewrite_manifest(copy, lambda m: m["input"].update(framing="center_crop"))
  assert runtime.TwoStageLite(copy).framing == "center_crop"
  _rewrite_manifest(copy, lambda m: m["input"].pop("framing"))
  assert runtime.TwoStageLite(copy).framing == "resize"
  _rewrite_manifest(copy, lambda m: m["input"].update(framing="squash"))
  with pytest.raises(runtime.BundleError,
                     match=r"input: 'framing' must be one of \['resize', 'center_crop'\]"):
    runtime.TwoStageLite(copy)


def test_writer_leaves_nothing_behind_on_error(models, tmp_path):
  out = tmp_path / "tflite"
  with pytest.raises(runtime.BundleError, match="exactly the superclasses"):
    runtime.write_tflite_bundle(out, HIERARCHY, models["generalist"], {1: models[1]}, INPUT_INFO)
  with pytest.raises(runtime.DeltaError):
    runtime.write_tflite_bundle(out, HIERARCHY, models["generalist"],
                                {0: b"garbage!" * 4, 1: models[1]}, INPUT_INFO)
  assert os.listdir(tmp_path) == []


def _rewrite_manifest(bundle, edit):
  """Applies edit(manifest) to the bundle's manifest.json in place."""
  path = os.path.join(bundle, "manifest.json")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  edit(manifest)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(manifest, f)


def _replace_listed(bundle, rel, data):
  """Overwrites a bundle file and lists its new size and sha256: only the content is wrong."""
  with open(os.path.join(bundle, rel), "wb") as f:
    f.write(data)
  _rewrite_manifest(bundle, lambda m: m["files"].update(
      {rel: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}))


def _corrupt(path, how):
  if how == "changed byte":
    with open(path, "r+b") as f:
      f.seek(100)
      byte = f.read(1)
      f.seek(100)
      f.write(bytes([byte[0] ^ 1]))
  elif how == "missing":
    os.remove(path)
  else:  # truncated
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) - 7)


@pytest.mark.parametrize("how", ["changed byte", "missing", "truncated"])
@pytest.mark.parametrize("rel", ["generalist.tflite", "specialists/1_tops.delta.npz",
                                 "specialists/0_shoes.skeleton.tflite.gz"])
def test_altered_files_are_refused_before_any_interpreter(bundle_dir, tmp_path, how, rel):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _corrupt(os.path.join(copy, rel), how)
  with mock.patch.object(predictor.litert, "Interpreter") as interpreter:
    with pytest.raises(runtime.BundleError, match=rel.replace(".", r"\.")):
      runtime.TwoStageLite(copy)
  interpreter.assert_not_called()


@pytest.mark.parametrize("text,match", [
    ('{"format": "super-sub-tflite", ', "does not parse as JSON"),
    ('{"format": "super-sub-tflite"}', "missing key"),
    ('[1, 2]', "JSON object"),
])
def test_bad_manifest_is_refused(bundle_dir, tmp_path, text, match):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  with open(os.path.join(copy, "manifest.json"), "w", encoding="utf-8") as f:
    f.write(text)
  with mock.patch.object(predictor.litert, "Interpreter") as interpreter:
    with pytest.raises(runtime.BundleError, match=match):
      runtime.TwoStageLite(copy)
  interpreter.assert_not_called()


def test_manifest_must_checksum_every_file_it_uses(bundle_dir, tmp_path):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _rewrite_manifest(copy, lambda m: m["files"].pop("specialists/0_shoes.skeleton.tflite.gz"))
  os.remove(os.path.join(copy, "specialists/0_shoes.skeleton.tflite.gz"))
  with pytest.raises(runtime.BundleError, match="0_shoes.skeleton.tflite.gz.*does not list"):
    runtime.load_bundle(copy)


def test_a_file_named_for_two_roles_is_refused(bundle_dir, tmp_path):
  """A manifest whose trunk is a specialist's skeleton (or whose labels are its hierarchy) would
  hand one file to two parsers; the runtime names the file instead of failing on a lookup."""
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _rewrite_manifest(copy, lambda m: m.update(trunk=m["specialists"]["0"]["skeleton"]))
  with pytest.raises(runtime.BundleError,
                     match=r"names \['specialists/0_shoes\.skeleton\.tflite\.gz'\] for more than "
                           r"one role"):
    runtime.load_bundle(copy)


def test_uncompressed_skeleton_is_refused_by_name(bundle_dir, tmp_path, models):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _replace_listed(copy, "specialists/0_shoes.skeleton.tflite.gz", models[0])  # not gzip
  with pytest.raises(runtime.BundleError, match="0_shoes.skeleton.tflite.gz: not a gzip"):
    runtime.load_bundle(copy)


def test_skeleton_that_does_not_parse_is_refused_and_the_runtime_stays_usable(
    bundle_dir, tmp_path, images):
  """A buggy exporter's skeleton: gzip and checksum fine, not a TFLite model inside."""
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _replace_listed(copy, "specialists/0_shoes.skeleton.tflite.gz",
                  gzip.compress(b"TFL3 but not a flatbuffer" * 8))
  lite = runtime.TwoStageLite(copy)
  with pytest.raises(runtime.BundleError, match=r"specialist 0 \('shoes'\)"):
    lite.specialist(0)
  with pytest.raises(runtime.BundleError, match=r"specialist 0 \('shoes'\)"):
    lite.specialist(0)  # the same clear error again, not a half-built cache entry
  assert lite.specialist(1) is not None and lite.num_rebuilds == 1
  with pytest.raises(runtime.BundleError, match=r"specialist 0 \('shoes'\)"):
    lite.predict(images)  # some images are routed to shoes
  others = np.nonzero(lite.router(images).argmax(1) != 0)[0]
  assert others.size and lite.predict(images[others])["label"].shape == others.shape


def test_deltas_stay_on_disk_and_are_verified_again_at_each_rebuild(bundle_dir, tmp_path):
  """A loaded bundle keeps its deltas on disk (at 224 px they are most of its bytes): a delta
  changed after loading is refused when its specialist is rebuilt, naming the file."""
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  lite = runtime.TwoStageLite(copy)
  rel = "specialists/1_tops.delta.npz"
  _corrupt(os.path.join(copy, rel), "changed byte")
  with pytest.raises(runtime.BundleError, match=rf"specialist 1 .*{rel}: sha256 differs"):
    lite.specialist(1)
  assert lite.specialist(0) is not None  # the others still rebuild
  os.remove(os.path.join(copy, rel))
  with pytest.raises(runtime.BundleError, match=rf"{rel}: listed in the manifest but missing"):
    lite.specialist(1)


def test_pickled_delta_is_never_unpickled(bundle_dir, tmp_path, images):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  rel = "specialists/1_tops.delta.npz"
  with np.load(os.path.join(copy, rel)) as npz:
    arrays = {name: npz[name] for name in npz.files}
  arrays["buffers"] = np.array([{"a": 1}, None], dtype=object)  # would need pickle to load
  saved = io.BytesIO()
  np.savez(saved, **arrays)
  _replace_listed(copy, rel, saved.getvalue())  # a consistent manifest: only pickle refuses
  lite = runtime.TwoStageLite(copy)
  with mock.patch("pickle.loads") as loads, mock.patch("pickle.load") as load:
    with pytest.raises(runtime.BundleError, match="specialist 1 .'tops'.*allow_pickle"):
      lite.predict(images, mode="soft", k=3)
  loads.assert_not_called()
  load.assert_not_called()


def test_unlisted_model_file_is_refused(bundle_dir, tmp_path):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  shutil.copy(os.path.join(copy, "generalist.tflite"), os.path.join(copy, "specialists/x.tflite"))
  with pytest.raises(runtime.BundleError, match="not listed in the manifest: specialists/x"):
    runtime.load_bundle(copy)


# --- prediction ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,k", [("hard", 2), ("soft", 2), ("soft", 3)])
def test_predict_matches_direct_computation_and_keras_router(models, bundle_dir, images, mode, k):
  lite = runtime.TwoStageLite(bundle_dir, num_threads=1)
  out = lite.predict(images, mode=mode, k=k, batch_size=4)
  super_probs, label_probs = _direct(models, images, mode, k)
  np.testing.assert_allclose(out["superclass_probs"], super_probs, atol=1e-6)
  np.testing.assert_allclose(out["label_probs"], label_probs, atol=1e-6)
  np.testing.assert_array_equal(out["superclass"], np.argmax(super_probs, axis=1))
  np.testing.assert_array_equal(out["label"], np.argmax(label_probs, axis=1))
  assert {key: v.dtype for key, v in out.items()} == {
      "superclass": np.int64, "superclass_probs": np.float32, "label": np.int64,
      "label_probs": np.float32}
  # The same interpreters behind super_sub.routing.TwoStage: the semantics are the router's.
  router = routing.TwoStage(_AsKeras(models["generalist"]),
                            {s: _AsKeras(models[s]) for s in (0, 1)}, HIERARCHY)
  reference = router.predict(images, mode=mode, k=k, batch_size=4)
  for key in reference:
    np.testing.assert_allclose(out[key], reference[key], atol=1e-6, err_msg=key)


class _AsKeras:
  """Just enough of a Keras model for routing.TwoStage, backed by a LiteRT interpreter."""

  def __init__(self, model: bytes):
    self._model = model
    self.name = "lite"
    self.input_shape = (None, *SHAPE)
    self.output_shape = (None, _logits(model, np.zeros((1, *SHAPE), np.float32)).shape[1])

  def __call__(self, x, training=False):
    del training
    return mock.Mock(numpy=lambda: _logits(self._model, np.asarray(x)))


def test_predict_uint8_batches_and_empty(bundle_dir, images):
  lite = runtime.TwoStageLite(bundle_dir)
  as_uint8 = np.round(images * 255).astype(np.uint8)
  a = lite.predict(as_uint8, mode="soft", k=3, batch_size=256)
  b = lite.predict(as_uint8.astype(np.float32) / 255, mode="soft", k=3, batch_size=2)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], atol=1e-6)
  empty = lite.predict(np.zeros((0, *SHAPE), np.float32))
  assert empty["label_probs"].shape == (0, HIERARCHY.num_subclasses)


def test_cache_holds_at_most_cache_size_specialists(bundle_dir, images):
  constructed = []
  real = predictor.litert.Interpreter

  def spy(*args, **kwargs):
    constructed.append(1)
    return real(*args, **kwargs)

  with mock.patch.object(predictor.litert, "Interpreter", side_effect=spy):
    one = runtime.TwoStageLite(bundle_dir, cache_size=1)
    one.predict(images, mode="soft", k=3)  # every row goes to both specialists
    assert one.num_rebuilds == 2 and len(one._cache) == 1  # pylint: disable=protected-access
    one.predict(images, mode="soft", k=3)  # the cached one runs first: one rebuild, not two
    assert one.num_rebuilds == 3
    two = runtime.TwoStageLite(bundle_dir, cache_size=2)
    two.predict(images, mode="soft", k=3)
    two.predict(images, mode="soft", k=3)
    assert two.num_rebuilds == 2 and len(two._cache) == 2  # pylint: disable=protected-access
  assert len(constructed) == 2 + 3 + 2  # generalists + rebuilt specialists


def test_cache_dir_rebuilds_each_specialist_once_then_maps_its_verified_file(
    bundle_dir, images, tmp_path):
  plain = runtime.TwoStageLite(bundle_dir).predict(images, mode="soft", k=3)
  cache = tmp_path / "cache"
  lite = runtime.TwoStageLite(bundle_dir, cache_dir=cache)
  paths = []
  real = predictor.litert.Interpreter

  def spy(*args, **kwargs):
    paths.append(kwargs.get("model_path"))
    return real(*args, **kwargs)

  with mock.patch.object(predictor.litert, "Interpreter", side_effect=spy):
    for _ in range(2):
      out = lite.predict(images, mode="soft", k=3)  # both specialists, one held at a time
      for key in plain:
        np.testing.assert_array_equal(out[key], plain[key])
  assert lite.num_rebuilds == 2 and lite.num_loads == 3 and lite.cache_dir.num_written == 2
  bundle = lite.bundle
  names = {bundle.specialist_sha256(k).hex() + ".tflite": bundle.specialist(k)
           for k in bundle.deltas}
  assert sorted(os.listdir(cache)) == sorted(names)  # no temporary file left behind
  for name, model in names.items():
    assert (cache / name).read_bytes() == model
  assert paths == [str(cache / name) for name in
                   [bundle.specialist_sha256(k).hex() + ".tflite" for k in (0, 1, 0)]]

  # A new process (here: a new runtime) verifies the files once and rebuilds nothing.
  again = runtime.TwoStageLite(bundle_dir, cache_dir=cache)
  again.predict(images, mode="soft", k=3)
  again.predict(images, mode="soft", k=3)
  assert again.num_rebuilds == 0 and again.num_loads == 3
  assert again.cache_dir.num_verified == 2 and again.cache_dir.num_written == 0


def test_cache_dir_keeps_litert_packed_weights_checked_against_their_record(
    bundle_dir, images, tmp_path):
  """LiteRT maps a damaged packed-weights file without complaint (wrong outputs), so each one
  is checked against the record super-sub wrote beside it; one that does not match is left in
  place and the specialist runs without packed weights, with the same outputs."""
  expected = runtime.TwoStageLite(bundle_dir).predict(images, mode="soft", k=3)
  cache = tmp_path / "cache"
  first = runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True)
  first.predict(images, mode="soft", k=3)
  assert first.cache_dir.num_packed == 2
  digest = first.bundle.specialist_sha256(0).hex()
  packed, record = cache / (digest + ".xnnpack"), cache / (digest + ".xnnpack.json")
  assert json.loads(record.read_text()) == {
      "sha256": hashlib.sha256(packed.read_bytes()).hexdigest(),
      "litert": importlib.metadata.version("ai-edge-litert")}

  # A new process (here: a new runtime) maps both, checked once.
  again = runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True)
  out = again.predict(images, mode="soft", k=3)
  assert again.cache_dir.num_packed == 0 and again.cache_dir.num_verified == 4
  for key in expected:
    np.testing.assert_array_equal(out[key], expected[key])

  damaged = bytearray(packed.read_bytes())
  damaged[len(damaged) // 2] ^= 0xFF
  packed.write_bytes(bytes(damaged))
  with pytest.warns(RuntimeWarning, match=f"{packed}: its sha256 does not match {record}"):
    out = runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True).predict(
        images, mode="soft", k=3)
  for key in expected:
    np.testing.assert_array_equal(out[key], expected[key])
  assert packed.read_bytes() == bytes(damaged)  # left as it was

  record.unlink()
  with pytest.warns(RuntimeWarning, match="does not match a record"):
    runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True).predict(
        images, mode="soft", k=3)
  assert packed.read_bytes() == bytes(damaged)

  unpacked = runtime.TwoStageLite(bundle_dir, cache_dir=cache)  # the default
  out = unpacked.predict(images, mode="soft", k=3)  # the damaged file is not even looked at
  assert unpacked.cache_dir.num_verified == 2
  for key in expected:
    np.testing.assert_array_equal(out[key], expected[key])

  # Packed weights from another LiteRT version: super-sub wrote both, so both are replaced.
  record.write_text(json.dumps({"sha256": "00", "litert": "0.0.1"}))
  newer = runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True)
  out = newer.predict(images, mode="soft", k=3)
  assert newer.cache_dir.num_packed == 1
  assert json.loads(record.read_text())["sha256"] == hashlib.sha256(
      packed.read_bytes()).hexdigest()
  for key in expected:
    np.testing.assert_array_equal(out[key], expected[key])


def test_cache_dir_leaves_no_packed_weights_behind_when_litert_fails_to_build(
    bundle_dir, images, tmp_path):
  cache = tmp_path / "cache"
  lite = runtime.TwoStageLite(bundle_dir, cache_dir=cache, packed_weights=True)
  real = predictor._PackedRunner  # pylint: disable=protected-access

  def half_written(path, num_threads, packed_weights):
    real(path, num_threads, packed_weights)  # LiteRT wrote the file; then the build fails
    raise RuntimeError("LiteRT failed")

  with mock.patch.object(predictor, "_PackedRunner", side_effect=half_written):
    with pytest.raises(RuntimeError, match="LiteRT failed"):
      lite.predict(images, mode="soft", k=3)
  left = os.listdir(cache)
  assert len(left) == 1 and left[0].endswith(".tflite")  # the model file only
  out = lite.predict(images, mode="soft", k=3)  # and the runtime goes on
  expected = runtime.TwoStageLite(bundle_dir).predict(images, mode="soft", k=3)
  np.testing.assert_array_equal(out["label_probs"], expected["label_probs"])
  assert lite.cache_dir.num_packed == 2


def test_cache_dir_leaves_a_file_that_does_not_match_and_rebuilds_in_memory(
    bundle_dir, images, tmp_path):
  cache = tmp_path / "cache"
  lite = runtime.TwoStageLite(bundle_dir, cache_dir=cache)
  expected = lite.predict(images, mode="soft", k=3)
  k = 0
  name = cache / (lite.bundle.specialist_sha256(k).hex() + ".tflite")
  tampered = bytearray(name.read_bytes())
  tampered[len(tampered) // 2] ^= 0xFF
  name.write_bytes(bytes(tampered))  # after this runtime verified it: a changed stat
  before = lite.num_rebuilds
  with pytest.warns(RuntimeWarning, match=f"{name}: its sha256 does not match"):
    out = lite.predict(images, mode="soft", k=3)
  for key in expected:
    np.testing.assert_array_equal(out[key], expected[key])
  assert lite.num_rebuilds == before + 1  # the bad one rebuilt in memory (the other was held)
  assert name.read_bytes() == bytes(tampered)  # and the file left as it was


def test_cache_dir_that_is_a_file_or_cannot_be_written_is_refused_or_bypassed(
    bundle_dir, images, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a folder")
  with pytest.raises(ValueError, match="is a file; expected a folder"):
    runtime.TwoStageLite(bundle_dir, cache_dir=a_file)
  with mock.patch.dict(os.environ, {"HOME": str(tmp_path)}):
    assert runtime.TwoStageLite(bundle_dir, cache_dir="~/home_cache").cache_dir.folder == str(
        tmp_path / "home_cache")
  if os.geteuid() == 0:  # root writes through read-only modes; block the file name instead
    lite = runtime.TwoStageLite(bundle_dir, cache_dir=tmp_path / "cache")
    for k in lite.bundle.deltas:
      (tmp_path / "cache" / (lite.bundle.specialist_sha256(k).hex() + ".tflite")).mkdir()
  else:
    (tmp_path / "cache").mkdir(mode=0o500)
    lite = runtime.TwoStageLite(bundle_dir, cache_dir=tmp_path / "cache")
  with pytest.warns(RuntimeWarning, match="cannot be written"):
    out = lite.predict(images, mode="soft", k=3)
  expected = runtime.TwoStageLite(bundle_dir).predict(images, mode="soft", k=3)
  np.testing.assert_array_equal(out["label_probs"], expected["label_probs"])


def test_later_rebuilds_copy_bytes_and_still_check_the_result(bundle_dir, models, monkeypatch):
  bundle = runtime.load_bundle(bundle_dir)
  k = sorted(bundle.skeletons)[0]
  first = bundle.specialist(k)  # through the skeleton; leaves a FastRebuild behind
  assert first == models[k]
  fast = bundle._fast[k]  # pylint: disable=protected-access
  assert len(fast.kept) < len(first) / 2  # the tables around the rebuilt buffers only
  hashed = []
  digest = delta_arrays.digest
  monkeypatch.setattr(delta_arrays, "digest", lambda data: hashed.append(len(data)) or digest(data))
  assert bundle.specialist(k) == first  # the byte-copy path
  assert not hashed  # its inputs were verified as they were read: no second hash of the result
  with np.load(io.BytesIO(bundle.deltas[k]), allow_pickle=False) as npz:
    arrays = dict(npz)
  key = "values" if "values" in arrays else "diff"
  arrays[key] = arrays[key].copy()
  arrays[key][0] += 1
  with pytest.raises(delta_lib.DeltaError, match="sha256 differs"):
    fast.apply(bundle.generalist, arrays)


@pytest.mark.slow
def test_fixed_batch_models_run_in_padded_chunks(images):
  keras.utils.set_random_seed(3)
  inputs = keras.Input(SHAPE, batch_size=2)
  x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
  fixed = _convert(keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x))))
  model = predictor.LiteModel(fixed, None, "fixed")
  assert not model._resizable  # pylint: disable=protected-access
  np.testing.assert_allclose(model(images[:5]), _logits_fixed(fixed, images[:5], 2), atol=1e-6)


def _logits_fixed(model: bytes, x: np.ndarray, batch: int) -> np.ndarray:
  it = litert.Interpreter(model_content=model)
  it.allocate_tensors()
  (inp,), (out,) = it.get_input_details(), it.get_output_details()
  rows = []
  for image in x:
    it.set_tensor(inp["index"], np.repeat(image[None], batch, axis=0))
    it.invoke()
    rows.append(it.get_tensor(out["index"])[0])
  return np.array(rows)


def test_wrong_image_shape_names_expected_and_got(bundle_dir):
  lite = runtime.TwoStageLite(bundle_dir)
  with pytest.raises(ValueError, match=r"1-channel images expected, got 3 channels"):
    lite.predict(np.zeros((2, 12, 12, 3), np.float32))
  with pytest.raises(ValueError, match=r"\(N, 12, 12, 1\).*got \(12, 12, 1\)"):
    lite.predict(np.zeros((12, 12, 1), np.float32))
  with pytest.raises(TypeError, match="int64"):
    lite.predict(np.zeros((1, 12, 12, 1), np.int64))


def test_load_images(tmp_path):
  rgb = tmp_path / "photo.png"
  Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(rgb)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8 this is not a jpeg")
  loaded = runtime.load_images([rgb, rgb], SHAPE)
  assert loaded.shape == (2, *SHAPE) and loaded.dtype == np.uint8 and (loaded == 200).all()
  assert runtime.load_images([rgb], (8, 8, 3)).shape == (1, 8, 8, 3)
  with pytest.raises(runtime.ImageError, match="broken.jpg: cannot decode"):
    runtime.load_images([rgb, bad], SHAPE)
  with pytest.raises(runtime.ImageError, match="nothing.png: no such image file"):
    runtime.load_images([tmp_path / "nothing.png"], SHAPE)


# --- no TensorFlow -------------------------------------------------------------------------------
_NO_TF = textwrap.dedent("""
    import sys
    class _Block:  # makes `import tensorflow` fail, as on a device without TensorFlow
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith(("tensorflow", "tf_keras")):
          raise ImportError(f"{name} is blocked in this test")
    if BLOCK:
      sys.meta_path.insert(0, _Block())
""")


def _child(code: str, block: bool) -> subprocess.CompletedProcess:
  script = _NO_TF.replace("BLOCK", str(block)) + textwrap.dedent(code) + textwrap.dedent("""
      loaded = sorted(m for m in sys.modules
                      if m.split(".")[0].startswith(("tensorflow", "tf_keras")))
      print("TF_MODULES", loaded, file=sys.stderr)
  """)
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, check=False)


def test_runtime_and_cli_never_import_tensorflow(bundle_dir, tmp_path):
  paths = []
  for i, value in enumerate((30, 220)):
    paths.append(str(tmp_path / f"image{i}.png"))
    Image.fromarray(np.full((28, 28, 3), value, np.uint8)).save(paths[-1])

  api = _child(f"""
      import super_sub.runtime as rt
      lite = rt.TwoStageLite({bundle_dir!r})
      out = lite.predict(rt.load_images({paths!r}, lite.input_shape), mode="soft")
      print(out["label"].tolist())
  """, block=False)  # TensorFlow installed but never imported
  assert api.returncode == 0, api.stderr
  assert "TF_MODULES []" in api.stderr, api.stderr

  cli = _child(f"""
      import runpy
      sys.argv = ["super-sub-predict", "--bundle={bundle_dir}", "--json", *{paths!r}]
      try:
        runpy.run_module("super_sub.export.predict", run_name="__main__")
      except SystemExit as e:
        assert not e.code, e.code
  """, block=True)  # TensorFlow absent
  assert cli.returncode == 0, cli.stderr
  assert "TF_MODULES []" in cli.stderr, cli.stderr
  rows = [json.loads(line) for line in cli.stdout.splitlines()]
  assert [r["image"] for r in rows] == paths
  lite = runtime.TwoStageLite(bundle_dir)
  expected = lite.predict(runtime.load_images(paths, lite.input_shape), mode="hard")
  for i, r in enumerate(rows):
    assert r["label_index"] == int(expected["label"][i])
    assert r["label"] == HIERARCHY.subclass_names[r["label_index"]]
    assert r["superclass_index"] == int(expected["superclass"][i])
    assert r["label_prob"] == pytest.approx(float(expected["label_probs"][i, r["label_index"]]),
                                            abs=1e-6)


def test_cli_reports_a_broken_bundle(bundle_dir, tmp_path):
  copy = str(tmp_path / "tflite")
  shutil.copytree(bundle_dir, copy)
  _corrupt(os.path.join(copy, "generalist.tflite"), "truncated")
  image = str(tmp_path / "a.png")
  Image.fromarray(np.zeros((12, 12), np.uint8)).save(image)
  result = subprocess.run([sys.executable, "-m", "super_sub.export.predict", f"--bundle={copy}",
                           image], capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert "generalist.tflite" in result.stderr and "truncated" in result.stderr


def test_deltas_can_be_stored_uncompressed(models, tmp_path, images):
  """--nocompress_deltas: the .npz members are stored as they are (no inflating on a switch),
  and the bundle rebuilds the same specialists and answers."""
  import zipfile  # pylint: disable=import-outside-toplevel
  specialists = {0: models[0], 1: models[1]}
  packed = runtime.write_tflite_bundle(tmp_path / "deflated", HIERARCHY, models["generalist"],
                                       specialists, INPUT_INFO)
  stored = runtime.write_tflite_bundle(tmp_path / "stored", HIERARCHY, models["generalist"],
                                       specialists, INPUT_INFO, compress_deltas=False)
  for manifest, method in ((packed, zipfile.ZIP_DEFLATED), (stored, zipfile.ZIP_STORED)):
    folder = tmp_path / ("deflated" if manifest is packed else "stored")
    for entry in manifest["specialists"].values():
      with zipfile.ZipFile(folder / entry["delta"]) as archive:
        assert {i.compress_type for i in archive.infolist()} == {method}
  bundle = runtime.load_bundle(tmp_path / "stored")
  assert all(bundle.specialist(k) == specialists[k] for k in specialists)
  a = runtime.TwoStageLite(str(tmp_path / "deflated")).predict(images)
  b = runtime.TwoStageLite(str(tmp_path / "stored")).predict(images)
  np.testing.assert_array_equal(a["label_probs"], b["label_probs"])
