"""A TFLite specialist as a lossless delta over the generalist it was fine-tuned from.

Every specialist buffer for which the base has a buffer of the same byte length is stored as a
difference from its best-matching base buffer and emptied in the specialist's *skeleton*: a TFLite
flatbuffer keeping the graph, tensor metadata, the quantization parameters that differ from the
base's, and the buffers that stay whole (e.g. the head, whose shape differs). The match is usually
the buffer at the same index, but not always: in a 680k-parameter ResNet whose specialist's layers
were auto-numbered differently (conv2d_34.. instead of conv2d_8..), three equal-length kernels came
out of the converter permuted. So each buffer takes, among the base's buffers of its length, the one
it differs from least (the sum of |byte differences| read as signed bytes; the same index on ties),
and the delta records the pairing. (Counting differing bytes instead paired the two equal-shaped
convolutions of a sign-delta specialist crosswise: nearly every byte differs from both.)
Quantization parameters equal to the paired base tensor's (QAT with the base's ranges frozen keeps
them so; per-channel scales and zero points were ~80% of that ResNet's skeleton) are copied back
from the base too. `apply_delta` repacks the skeleton with everything restored and gives back the
specialist byte for byte: the flatbuffers object API round-trips converter output exactly, and both
directions check it (the delta stores the sha256 of the base and of the specialist).

The delta's arrays (super_sub.formats.delta_arrays) and the encodings of the difference stream
(super_sub.formats.encodings) are specified in docs/bundle_format.md.
This module needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from super_sub.formats import delta_arrays
from super_sub.formats import encodings
from super_sub.formats.errors import DeltaError
from super_sub.formats.flatbuffer import pack_model, parse_model


def make_delta(base: bytes, specialist: bytes, encoding: str = "auto",
               factors=()) -> tuple[bytes, dict[str, np.ndarray]]:
  """Splits `specialist` into a skeleton and a difference against `base`.

  Args:
    base: the generalist's .tflite bytes (the shared base of every specialist).
    specialist: a specialist's .tflite bytes, converted the same way from a model fine-tuned from
      the generalist.
    encoding: "sparse", "dense", "signed", or "auto" (whichever np.savez_compressed stores
      smaller; "signed" only where some int8 buffer's channels moved by +-k).
    factors: (left, right, scales) triples, the low-rank factors a training stored for the
      specialist's kernels (`encodings.factored_product`); each must reproduce the difference
      of one of its int8 buffers (to the few clipped bytes, which the sparse residual holds). With
      factors, the encoding is "factored" (+ sparse residual) and `encoding` must be "auto".

  Returns:
    (skeleton, arrays): the skeleton .tflite bytes (buffers covered by the delta emptied) and the
    delta arrays of docs/bundle_format.md, ready for `np.savez_compressed`.
    `apply_delta(base, skeleton, arrays) == specialist` (checked before returning).

  Raises:
    DeltaError: either model does not parse, or the specialist does not survive an object-API
      round trip byte for byte (so no delta could rebuild it exactly).
    ValueError: an unknown encoding.
  """
  if encoding not in encodings.ENCODINGS:
    raise ValueError(f"encoding must be one of {encodings.ENCODINGS}; got {encoding!r}")
  if factors and encoding != "auto":
    raise ValueError(f"low-rank factors are stored in the factored encoding; got {encoding!r}")
  base_obj = parse_model(base, "base model")
  spec_obj = parse_model(specialist, "specialist model")
  if pack_model(spec_obj, len(specialist) + 65536) != bytes(specialist):
    raise DeltaError("the specialist model does not round-trip through the TFLite object API "
                     "byte for byte, so it cannot be stored as a bit-exact delta")
  base_bufs, spec_bufs = base_obj.buffers or [], spec_obj.buffers or []
  by_length: dict[int, list[int]] = {}
  for j, buf in enumerate(base_bufs):
    if buf.data is not None and len(buf.data):
      by_length.setdefault(len(buf.data), []).append(j)
  pairs, chunks_base, chunks_spec = [], [], []
  for i, spec_buf in enumerate(spec_bufs):
    if spec_buf.data is None or len(spec_buf.data) not in by_length:
      continue
    data = np.asarray(spec_buf.data, np.uint8)
    # Smallest difference; the same index first, so ties keep the converter's alignment.
    candidates = sorted(by_length[len(data)], key=lambda j: j != i)
    j = min(candidates, key=lambda j: _distance(base_bufs[j].data, data))
    pairs.append((i, j, len(data)))
    chunks_base.append(np.asarray(base_bufs[j].data, np.uint8))
    chunks_spec.append(data)
    spec_buf.data = None  # emptied in the skeleton; apply_delta puts it back
  layouts = _int8_layouts(spec_obj, pairs)  # before the shared quantization is stripped
  quant = _strip_shared_quantization(base_obj, spec_obj, {i: j for i, j, _ in pairs})
  skeleton = pack_model(spec_obj)
  stream_base = np.concatenate(chunks_base) if chunks_base else np.zeros(0, np.uint8)
  stream_spec = np.concatenate(chunks_spec) if chunks_spec else np.zeros(0, np.uint8)
  diff = stream_spec - stream_base  # uint8 arithmetic wraps: (specialist - base) mod 256
  encoded = (encodings.encode_factored(diff, [n for _, _, n in pairs], factors) if factors
             else encodings.encode(diff, encoding, layouts))
  arrays = {
      "version": np.array(delta_arrays.SIGNED_VERSION if {"runs", "factored"} & set(encoded)
                          else delta_arrays.FORMAT_VERSION, np.int64),
      "sha256": np.stack([delta_arrays.digest(base), delta_arrays.digest(specialist)]),
      "buffers": np.array(pairs, np.uint32).reshape(-1, 3),
      "quant": np.array(quant, np.uint32).reshape(-1, 3),
      **encoded,
  }
  if apply_delta(base, skeleton, arrays) != bytes(specialist):  # also guards the encoders
    raise DeltaError("internal error: the delta does not rebuild the specialist bit-exactly")
  return skeleton, arrays


def apply_delta(base: bytes, skeleton: bytes, arrays) -> bytes:
  """Rebuilds a specialist's .tflite bytes from the base, its skeleton and its delta arrays.

  Args:
    base: the base .tflite bytes the delta was made against.
    skeleton: the specialist's skeleton .tflite bytes.
    arrays: a mapping of the delta arrays (a dict, or an `np.load` result of a .npz).

  Returns:
    The specialist's .tflite bytes, bit-identical to the model the delta was made from.

  Raises:
    DeltaError: missing or malformed arrays, a base other than the one the delta was made
      against (sha256 or a buffer's length differs), or a result whose sha256 is not the recorded
      specialist's.
  """
  arrays = delta_arrays.read_arrays(arrays)
  if bytes(delta_arrays.digest(base)) != bytes(arrays["sha256"][0]):
    raise DeltaError("this delta was made against a different base model (the generalist's "
                     "sha256 does not match the one recorded in the delta)")
  base_obj = parse_model(base, "base model")
  spec_obj = parse_model(skeleton, "specialist skeleton")
  base_bufs, spec_bufs = base_obj.buffers or [], spec_obj.buffers or []
  triples = arrays["buffers"].tolist()
  for i, j, n in triples:  # check the layout before decoding anything
    if i >= len(spec_bufs) or j >= len(base_bufs):
      raise DeltaError(f"delta pairs skeleton buffer {i} with base buffer {j}, but the skeleton "
                       f"has {len(spec_bufs)} buffers and the base {len(base_bufs)}")
    got = 0 if base_bufs[j].data is None else len(base_bufs[j].data)
    if got != n:
      raise DeltaError(f"delta buffer {i} records {n} bytes but the base's buffer {j} has {got}: "
                       f"the delta does not belong to this base")
    if spec_bufs[i].data is not None:
      raise DeltaError(f"skeleton buffer {i} is not empty although the delta rebuilds it")
  for g, ti, tj in arrays["quant"].tolist():
    spec_t, base_t = _tensor(spec_obj, g, ti), _tensor(base_obj, g, tj)
    if spec_t is None or base_t is None or spec_t.quantization is not None:
      raise DeltaError(f"delta copies quantization parameters from base tensor {tj} to skeleton "
                       f"tensor {ti} of subgraph {g}, which do not fit (missing, or not empty)")
    spec_t.quantization = base_t.quantization
  diff = encodings.decode(arrays, sum(n for _, _, n in triples))
  start = 0
  for i, j, n in triples:
    spec_bufs[i].data = np.asarray(base_bufs[j].data, np.uint8) + diff[start:start + n]
    start += n
  del diff
  # The skeleton, the buffers put back and the quantization parameters copied from the base.
  out = pack_model(spec_obj, size_hint=len(skeleton) + start + start // 10 + 65536)
  if bytes(delta_arrays.digest(out)) != bytes(arrays["sha256"][1]):
    raise DeltaError("the rebuilt specialist's sha256 differs from the one recorded in the delta "
                     "(skeleton and delta do not belong together)")
  return out



def _distance(base: np.ndarray, data: np.ndarray) -> int:
  """How far two equal-length buffers are apart: the sum of |data - base| byte by byte, each
  difference read as a signed byte (mod 256 into [-128, 127])."""
  return int(np.abs((data - np.asarray(base, np.uint8)).view(np.int8).astype(np.int16)).sum())


def _strip_shared_quantization(base_obj, spec_obj, buffer_pairs: dict[int, int]) -> list:
  """Empties the specialist tensors' quantization that equals their base tensor's.

  A tensor's base counterpart is the base tensor reading the paired buffer (weights), else the
  base tensor at the same index (activations). Returns (subgraph, tensor, base tensor) triples.
  """
  out = []
  for g, (spec_sg, base_sg) in enumerate(zip(spec_obj.subgraphs or [], base_obj.subgraphs or [])):
    base_tensors = base_sg.tensors or []
    reads = {t.buffer: j for j, t in reversed(list(enumerate(base_tensors))) if t.buffer}
    for i, tensor in enumerate(spec_sg.tensors or []):
      key = _quant_key(tensor.quantization)
      if key is None:
        continue
      candidates = [reads.get(buffer_pairs.get(tensor.buffer, -1)), i]
      for j in candidates:
        if j is not None and j < len(base_tensors) and _quant_key(
            base_tensors[j].quantization) == key:
          out.append((g, i, j))
          tensor.quantization = None
          break
  return out


def _quant_key(q):
  """What a QuantizationParameters table packs, comparable; None when there is nothing to share."""
  if q is None or q.details is not None or all(
      v is None for v in (q.min, q.max, q.scale, q.zeroPoint)):
    return None
  arrays = tuple(None if v is None else (np.asarray(v).dtype.str, np.asarray(v).tobytes())
                 for v in (q.min, q.max, q.scale, q.zeroPoint))
  return arrays + (q.detailsType, q.quantizedDimension)


def _tensor(obj, g: int, t: int):
  subgraphs = obj.subgraphs or []
  tensors = (subgraphs[g].tensors or []) if g < len(subgraphs) else []
  return tensors[t] if t < len(tensors) else None


def _int8_layouts(spec_obj, pairs: list[tuple[int, int, int]]) -> np.ndarray:
  """(stream offset, length, block, period) of each paired buffer that an int8 tensor reads.

  Per-channel quantization on axis q of shape S: block = prod(S[q+1:]), period = S[q] (byte t
  belongs to channel (t // block) % period); per-tensor: block = the length, period = 1. Other
  buffers (int32 biases, float tensors) have no sign structure."""
  readers = {}
  for sg in spec_obj.subgraphs or []:
    for t in sg.tensors or []:
      readers.setdefault(t.buffer, t)
  layouts, offset = [], 0
  for i, _, n in pairs:
    t = readers.get(i)
    q = t.quantization if t is not None else None
    scales = 0 if q is None or q.scale is None else len(q.scale)
    if t is not None and t.type == schema.TensorType.INT8 and scales and t.shape is not None:
      shape = [int(d) for d in t.shape]
      axis = int(q.quantizedDimension) if scales > 1 else 0
      if int(np.prod(shape)) == n and (scales == 1 or shape[axis] == scales):
        block = int(np.prod(shape[axis + 1:])) if scales > 1 else n
        layouts.append((offset, n, block, scales))
    offset += n
  return np.array(layouts, np.int64).reshape(-1, 4)

