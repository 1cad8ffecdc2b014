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

Delta arrays (plain numpy, so `np.load(allow_pickle=False)` reads them; few arrays, because each
member of an .npz costs ~180 bytes of headers):
  version  int64 scalar, 1
  sha256   uint8 [2, 32]: the base's and the specialist's sha256
  buffers  uint32 [B, 3]: (specialist buffer index, base buffer index, byte length) of each
           buffer rebuilt from the base, in ascending specialist index
  quant    uint32 [Q, 3]: (subgraph, specialist tensor, base tensor) whose quantization parameters
           the skeleton leaves out because they equal the base tensor's
  The B paired buffers, concatenated, form one byte stream; its difference
  d = (specialist - base) mod 256 is stored in one of three lossless encodings (by default whichever
  np.savez_compressed makes smaller):
  sparse: gaps uint8 [4, n], the little-endian bytes of the uint32 gaps between successive nonzero
          positions of d (the first gap is the first position), one byte plane per row (the high
          planes are nearly all zero and compress to almost nothing); values uint8 [n], d there.
  dense:  diff uint8 [stream length], d itself (wins when most bytes changed).
  signed (delta version 2): a sign-structured part plus a sparse residual (gaps, values as above).
          runs uint32 [R, 4]: (stream offset, length, block, period) of int8 weight buffers, or
          of ranges of whole channels in them (unmoved channels left out), whose
          bytes each moved by +-k of their output channel: byte t of a run belongs to channel
          (t // block) % period (a [C_out, ...] kernel: block = its size / C_out, period = C_out;
          a depthwise [1, H, W, C] one: block 1, period C); magnitudes uint8 [sum of periods],
          each channel's k in run order; signs uint8, one bit per run byte (all runs in order,
          numpy's packbits, least significant bit first): 1 adds k, 0 subtracts it (mod 256).
          d is the residual plus those +-k. A sign-delta specialist (`--specialist_form=sign`,
          BitDelta, Liu et al. 2024) stores about one bit per weight this way.
  factored (delta version 2): int8 weight buffers whose difference is a low-rank product, plus
          a sparse residual (gaps, values). factored uint32 [F, 4]: (stream offset, rows m,
          columns n, rank r) of each [m, n] buffer (a [C_out, ...] kernel as C_out rows);
          left int8 [sum m r] and right int8 [sum r n]: the factors, row-major, one after
          another; scales float32 [sum m]: a scale per row. The buffer's d is
          `factored_product(left, right, scales) mod 256`, exactly reproducible in any
          language. A low-rank specialist (`--specialist_form=lowrank`) stores
          r (m + n) bytes + 4 m per kernel this way.
This module needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zlib

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

FORMAT_VERSION = 1
ENCODINGS = ("auto", "sparse", "dense", "signed")
MAX_RANK = 1024  # r x 127 x 128 < 2**24: the int32 sums convert to float32 exactly
_RUN_BYTES = 16  # one row of a signed delta's runs: four uint32
SIGNED_VERSION = 2  # deltas in the signed encoding, which version-1 readers cannot decode
FILE_IDENTIFIER = b"TFL3"  # as tensorflow/lite/tools/flatbuffer_utils.py writes it
_MAX_BYTES = 2**31 - 1  # larger models keep buffers outside the flatbuffer (offset/size fields)


class DeltaError(ValueError):
  """A model or delta that cannot be diffed or rebuilt; the message says which and why."""


def parse_model(model: bytes, what: str = "model") -> schema.ModelT:
  """Unpacks a TFLite flatbuffer into the object API (buffers as uint8 numpy arrays).

  Raises:
    DeltaError: not a TFLite flatbuffer, or one that keeps buffers outside the flatbuffer
      (models over 2 GB, which this format does not support).
  """
  if len(model) < 8 or bytes(model[4:8]) != FILE_IDENTIFIER:
    raise DeltaError(f"{what} is not a TFLite flatbuffer (no {FILE_IDENTIFIER!r} identifier at "
                     f"bytes 4..8)")
  if len(model) > _MAX_BYTES:
    raise DeltaError(f"{what} is {len(model)} bytes: models over 2 GB keep their buffers outside "
                     f"the flatbuffer, which super-sub deltas do not support")
  try:
    # Read in place: the buffers become read-only numpy views of `model`, not a copy of it
    # (a 25 MB ResNet-50 base was copied at every first rebuild).
    obj = schema.ModelT.InitFromPackedBuf(model if isinstance(model, bytes) else bytes(model), 0)
  except Exception as e:  # flatbuffers raises assorted errors on corrupt input
    raise DeltaError(f"{what} does not parse as a TFLite flatbuffer: {e!r}") from None
  # TFLite's own reader treats offset 0 and 1 as "data inline" (1 is a placeholder).
  for i, buf in enumerate(obj.buffers or []):
    if buf.offset > 1:
      raise DeltaError(f"{what}: buffer {i} is stored at offset {buf.offset} outside the "
                       f"flatbuffer (a >2 GB model layout); super-sub deltas support only "
                       f"models whose buffers are inline")
  for sg in obj.subgraphs or []:
    for op in sg.operators or []:
      if op.largeCustomOptionsOffset > 1:
        raise DeltaError(f"{what}: an operator keeps custom options outside the flatbuffer (a "
                         f">2 GB model layout); super-sub deltas do not support it")
  return obj


def pack_model(obj: schema.ModelT, size_hint: int = 1024) -> bytes:
  """Packs an object-API model back into TFLite flatbuffer bytes.

  `size_hint`: the expected byte length. The builder starts that large instead of doubling
  its buffer (and copying it) as it fills; the bytes do not depend on it.
  """
  builder = flatbuffers.Builder(size_hint)
  builder.Finish(obj.Pack(builder), file_identifier=FILE_IDENTIFIER)
  return bytes(memoryview(builder.Bytes)[builder.Head():])  # one copy (Output() makes two)


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
      specialist's kernels (`factored_product`); each must reproduce the difference of one of
      its int8 buffers (to the few clipped bytes, which the sparse residual holds). With
      factors, the encoding is "factored" (+ sparse residual) and `encoding` must be "auto".

  Returns:
    (skeleton, arrays): the skeleton .tflite bytes (buffers covered by the delta emptied) and the
    delta arrays described in the module docstring, ready for `np.savez_compressed`.
    `apply_delta(base, skeleton, arrays) == specialist` (checked before returning).

  Raises:
    DeltaError: either model does not parse, or the specialist does not survive an object-API
      round trip byte for byte (so no delta could rebuild it exactly).
    ValueError: an unknown encoding.
  """
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding must be one of {ENCODINGS}; got {encoding!r}")
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
  encoded = (_factored(diff, [n for _, _, n in pairs], factors) if factors
             else _encode(diff, encoding, layouts))
  arrays = {
      "version": np.array(SIGNED_VERSION if {"runs", "factored"} & set(encoded) else
                          FORMAT_VERSION, np.int64),
      "sha256": np.stack([_digest(base), _digest(specialist)]),
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
  arrays = _read_arrays(arrays)
  if bytes(_digest(base)) != bytes(arrays["sha256"][0]):
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
  diff = _decode(arrays, sum(n for _, _, n in triples))
  start = 0
  for i, j, n in triples:
    spec_bufs[i].data = np.asarray(base_bufs[j].data, np.uint8) + diff[start:start + n]
    start += n
  del diff
  # The skeleton, the buffers put back and the quantization parameters copied from the base.
  out = pack_model(spec_obj, size_hint=len(skeleton) + start + start // 10 + 65536)
  if bytes(_digest(out)) != bytes(arrays["sha256"][1]):
    raise DeltaError("the rebuilt specialist's sha256 differs from the one recorded in the delta "
                     "(skeleton and delta do not belong together)")
  return out


def specialist_sha256(arrays) -> bytes:
  """The sha256 (32 bytes) of the specialist a delta rebuilds, as recorded in it.

  Raises:
    DeltaError: no readable uint8 `sha256` array of shape (2, 32).
  """
  if not hasattr(arrays, "keys") or "sha256" not in arrays.keys():
    raise DeltaError("delta arrays lack 'sha256' (the base's and the specialist's digests)")
  digests = _read_member(arrays, "sha256")
  if digests.shape != (2, 32):
    raise DeltaError(f"delta array 'sha256' has shape {digests.shape}; expected (2, 32)")
  return bytes(digests[1])


@dataclasses.dataclass(frozen=True)
class FastRebuild:
  """Rebuilds one specialist by copying bytes, at memory speed, instead of `apply_delta`'s
  object-API round trip.

  `apply_delta` parses base and skeleton and packs the result through the flatbuffers object
  API: 12-16 ms for a 300k-parameter network, ~10x more at 224 px. The rebuilt bytes differ
  between specialists of one bundle only inside the buffers the delta fills, so after one slow
  rebuild a specialist keeps the bytes around those buffers (the flatbuffer's tables: about
  the skeleton's size, deflated) and the byte ranges of the paired buffers in both models;
  later rebuilds write the kept bytes and base bytes + difference straight into the output,
  each byte once. The result is checked against the specialist's sha256 recorded in the
  delta, as `apply_delta`'s is.
  """
  kept: bytes              # zlib: the specialist's bytes outside the rebuilt buffers, in order
  gaps: np.ndarray         # int64 [G, 2]: (specialist offset, length) of each run of kept bytes
  spans: np.ndarray        # int64 [B, 3]: (specialist offset, base offset, length), delta order
  size: int                # the specialist's byte length

  @classmethod
  def from_rebuilt(cls, base: bytes, specialist: bytes, arrays) -> "FastRebuild":
    """The fast form of a specialist that `apply_delta(base, skeleton, arrays)` returned."""
    # Only the pairing: the difference stream (as large as the buffers) stays unread.
    buffers = _as_indices(_read_member(arrays, "buffers"), "buffers")
    if buffers.ndim != 2 or buffers.shape[1] != 3:
      raise DeltaError(f"delta array 'buffers' has shape {buffers.shape}; expected (B, 3)")
    base_spans, spec_spans = _buffer_spans(base), _buffer_spans(specialist)
    spans = []
    for i, j, n in buffers.tolist():
      if i >= len(spec_spans) or j >= len(base_spans):
        raise DeltaError(f"delta pairs specialist buffer {i} with base buffer {j}, but the "
                         f"specialist has {len(spec_spans)} buffers and the base {len(base_spans)}")
      (so, sn), (bo, bn) = spec_spans[i], base_spans[j]
      if sn != n or bn != n:
        raise DeltaError(f"buffer {i} of the rebuilt specialist or {j} of the base does not hold "
                         f"the {n} bytes the delta records")
      spans.append((so, bo, n))
    gaps, kept, cursor = [], [], 0
    for so, _, n in sorted(spans):
      if so > cursor:
        gaps.append((cursor, so - cursor))
        kept.append(specialist[cursor:so])
      cursor = max(cursor, so + n)
    if cursor < len(specialist):
      gaps.append((cursor, len(specialist) - cursor))
      kept.append(specialist[cursor:])
    return cls(zlib.compress(b"".join(kept), 1), np.array(gaps, np.int64).reshape(-1, 2),
               np.array(spans, np.int64).reshape(-1, 3), len(specialist))

  def apply(self, base: bytes, arrays, verify: bool = True) -> bytes:
    """The specialist's bytes, bit-identical to `apply_delta`'s.

    `verify`: check them against the sha256 the delta records (a 25 MB ResNet-50 int8
    network: ~25 ms, a third of the rebuild). A caller may skip it only when `base` and
    `arrays` are provably the ones the first rebuild checked: the runtime re-verifies the delta
    file against the manifest at every read and holds the verified base in memory, so the
    result cannot differ.
    """
    arrays = _read_arrays(arrays)
    diff = _decode(arrays, int(self.spans[:, 2].sum()))
    base_bytes = np.frombuffer(base, np.uint8)
    if self.spans.size and int((self.spans[:, 1] + self.spans[:, 2]).max()) > len(base_bytes):
      raise DeltaError(f"the base model has {len(base_bytes)} bytes, too few for the buffers "
                       f"this specialist was first rebuilt from (the base changed)")
    out = np.empty(self.size, np.uint8)
    kept = np.frombuffer(zlib.decompress(self.kept), np.uint8)
    start = 0
    for offset, n in self.gaps.tolist():
      out[offset:offset + n] = kept[start:start + n]
      start += n
    start = 0
    for so, bo, n in self.spans.tolist():  # uint8 addition wraps: base + d (mod 256)
      np.add(base_bytes[bo:bo + n], diff[start:start + n], out=out[so:so + n])
      start += n
    if verify and bytes(_digest(out)) != bytes(arrays["sha256"][1]):
      raise DeltaError("the rebuilt specialist's sha256 differs from the one recorded in the "
                       "delta (base or delta changed since the first rebuild)")
    return out.tobytes()


def factored_product(left: np.ndarray, right: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """The integer matrix that low-rank factors stand for: round(float32(left @ right) x scale of
  the row), rounding half to even.

  left int8 [m, r], right int8 [r, n], scales float32 [m]. The sums are exact in int32 and
  convert to float32 exactly (|sum| <= r x 127 x 128 < 2**24 for r <= MAX_RANK), and the one
  float32 product is correctly rounded, so every IEEE-754 implementation gets the same int64
  [m, n] result.
  """
  acc = left.astype(np.int32) @ right.astype(np.int32)
  return np.rint(acc.astype(np.float32) * scales.astype(np.float32)[:, None]).astype(np.int64)


def delta_nbytes(arrays) -> int:
  """Bytes of `arrays` written with np.savez_compressed (what a bundle stores)."""
  f = io.BytesIO()
  np.savez_compressed(f, **arrays)
  return len(f.getvalue())


# --- internals ------------------------------------------------------------------------------------
_COMMON = ("version", "sha256", "buffers", "quant")
_SIGNED = ("runs", "magnitudes", "signs")
_FACTORED = ("factored", "left", "right", "scales")
_DTYPES = {**{name: "uint8" for name in ("sha256", "gaps", "values", "diff", "magnitudes",
                                         "signs")},
           "left": "int8", "right": "int8", "scales": "float32"}
_EXCEPTION_BYTES = 2  # about what one nonzero residual byte costs in a deflated sparse encoding


def _digest(data: bytes) -> np.ndarray:
  return np.frombuffer(hashlib.sha256(data).digest(), np.uint8).copy()


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


def _buffer_spans(model: bytes) -> list[tuple[int, int]]:
  """(byte offset, length) of each buffer's data inside the flatbuffer ((0, 0) when empty)."""
  root = schema.Model.GetRootAs(model, 0)
  spans = []
  for i in range(root.BuffersLength()):
    table = root.Buffers(i)._tab  # pylint: disable=protected-access
    field = table.Offset(4)  # Buffer.data
    spans.append((table.Vector(field), table.VectorLen(field)) if field else (0, 0))
  return spans


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


def _sparse(diff: np.ndarray) -> dict[str, np.ndarray]:
  positions = np.flatnonzero(diff)
  gaps = np.diff(positions, prepend=0).astype("<u4")
  return {"gaps": gaps.view(np.uint8).reshape(-1, 4).T.copy(), "values": diff[positions]}


def _signed(diff: np.ndarray, layouts: np.ndarray, force: bool) -> dict[str, np.ndarray] | None:
  """The signed encoding: per channel of each int8 buffer the magnitude k that most of its bytes
  moved by (+-k), one sign bit per byte, and whatever else as a sparse residual. A buffer is
  encoded so only where that saves bytes (every one when `force`); None when none is."""
  residual = diff.copy()
  runs, magnitudes, signs = [], [], []
  for offset, length, block, period in layouts.tolist():
    moved = diff[offset:offset + length].view(np.int8).astype(np.int16)
    channel = (np.arange(length) // block) % period
    counts = np.bincount(channel * 129 + np.abs(moved), minlength=period * 129).reshape(period, 129)
    k = counts[:, 1:128].argmax(axis=1) + 1  # +-128 is one byte value: left to the residual
    # A channel that uses k turns its +-k bytes into matches and its unchanged bytes into
    # residual exceptions; the run pays one bit per byte.
    gain = counts[np.arange(period), k] - counts[:, 0]
    k = np.where(gain > 0, k, 0)
    if not force and _EXCEPTION_BYTES * gain[gain > 0].sum() <= length / 8:
      continue
    per_byte = k[channel].astype(np.int16)
    positive = (moved >= 0) & (per_byte > 0)
    residual[offset:offset + length] -= np.where(positive, per_byte, -per_byte).astype(np.uint8)
    for first, last, start, size in _run_ranges(k, block, length):
      runs.append((offset + start, size, block, last - first))
      magnitudes.append(k[first:last].astype(np.uint8))
      signs.append(positive[start:start + size])
  if not runs:
    return None
  return {"runs": np.array(runs, np.uint32), "magnitudes": np.concatenate(magnitudes),
          "signs": np.packbits(np.concatenate(signs), bitorder="little"), **_sparse(residual)}


def _run_ranges(k: np.ndarray, block: int, length: int) -> list[tuple[int, int, int, int]]:
  """(first channel, last channel + 1, first byte, byte count) of each signed run of a buffer.

  In a [C_out, ...] buffer each channel's bytes are contiguous, so runs can leave out the
  channels that did not move (k = 0, e.g. a budgeted sign specialist's), saving their sign
  bits. A gap is left out only where it saves more than a run's 16 bytes of (offset, length,
  block, period). Buffers whose channels interleave (a depthwise [1, H, W, C] kernel: block 1,
  or channels repeating along the buffer) are covered whole, by one run of every byte.
  """
  period = len(k)
  if block * period != length or block == 1:
    return [(0, period, 0, length)]
  ranges: list[list[int]] = []
  for c in np.flatnonzero(k).tolist():
    if ranges and (c - ranges[-1][1]) * block <= 8 * _RUN_BYTES:
      ranges[-1][1] = c + 1
    else:
      ranges.append([c, c + 1])
  return [(first, last, first * block, (last - first) * block)
          for first, last in ranges] or [(0, period, 0, length)]


def _factored(diff: np.ndarray, lengths: list[int], factors) -> dict[str, np.ndarray]:
  """The factored encoding: each factor triple claims the paired buffer whose difference it
  reproduces best (most equal bytes; it must be most of them), and the rest of the stream is
  the sparse residual."""
  residual = diff.copy()
  starts = np.cumsum([0] + lengths[:-1]).tolist()
  free = set(range(len(lengths)))
  rows, lefts, rights, scales = [], [], [], []
  for left, right, scale in factors:
    left, right = np.asarray(left, np.int8), np.asarray(right, np.int8)
    scale = np.asarray(scale, np.float32)
    if (left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]
        or scale.shape != (left.shape[0],) or not 1 <= left.shape[1] <= MAX_RANK):
      raise DeltaError(f"low-rank factors of shapes {left.shape}, {right.shape}, {scale.shape} "
                       f"do not fit together; expected [m, r], [r, n], [m] with 1 <= r <= "
                       f"{MAX_RANK}")
    (m, r), n = left.shape, right.shape[1]
    moved = (factored_product(left, right, scale) % 256).astype(np.uint8).reshape(-1)
    matches = {b: int(np.count_nonzero(diff[starts[b]:starts[b] + m * n] == moved))
               for b in free if lengths[b] == m * n}
    best = max(matches, key=matches.get, default=None)
    if best is None or matches[best] * 2 <= m * n:
      raise DeltaError(f"the low-rank factors of a {m} x {n} kernel (rank {r}) do not reproduce "
                       f"any int8 weight buffer of the specialist (best: "
                       f"{max(matches.values(), default=0)} of {m * n} bytes): the factors do "
                       f"not belong to this model")
    free.remove(best)
    residual[starts[best]:starts[best] + m * n] -= moved
    rows.append((starts[best], m, n, r))
    lefts.append(left.reshape(-1))
    rights.append(right.reshape(-1))
    scales.append(scale)
  return {"factored": np.array(rows, np.uint32).reshape(-1, 4),
          "left": np.concatenate(lefts), "right": np.concatenate(rights),
          "scales": np.concatenate(scales), **_sparse(residual)}


def _encode(diff: np.ndarray, encoding: str, layouts: np.ndarray) -> dict[str, np.ndarray]:
  """`diff` in the given lossless encoding; "auto" keeps whichever .npz is smaller."""
  if len(diff) >= 2**32:
    raise DeltaError("delta streams of 4 GiB or more are not supported")
  if encoding == "sparse":
    return _sparse(diff)
  if encoding == "dense":
    return {"diff": diff}
  signed = _signed(diff, layouts, force=encoding == "signed")
  if encoding == "signed":
    if signed is None:
      raise DeltaError("the signed encoding needs int8 weight buffers; this specialist has none "
                       "the delta rebuilds")
    return signed
  candidates = [_sparse(diff), {"diff": diff}] + ([signed] if signed is not None else [])
  return min(candidates, key=delta_nbytes)


def _read_arrays(arrays) -> dict[str, np.ndarray]:
  """The delta arrays, checked: present, readable, integer dtypes, shapes and index ranges.

  `buffers` and `quant` come back as int64 arrays of values in [0, 2**32), the byte arrays
  (sha256, gaps, values, diff) as uint8.
  """
  names = set(arrays.keys()) if hasattr(arrays, "keys") else set()
  encoding = ("diff",) if "diff" in names else (
      ("gaps", "values") + (_SIGNED if "runs" in names else ())
      + (_FACTORED if "factored" in names else ()))
  missing = [n for n in _COMMON + encoding if n not in names]
  if missing:
    raise DeltaError(f"delta arrays lack {missing}; expected {list(_COMMON)} plus either 'diff' "
                     f"(dense), 'gaps' and 'values' (sparse), or those and {list(_SIGNED)} "
                     f"(signed) and/or {list(_FACTORED)} (factored); got {sorted(names)}")
  out = {name: _read_member(arrays, name) for name in _COMMON + encoding}
  extended = "runs" in encoding or "factored" in encoding
  if out["version"].shape != () or int(out["version"]) != (
      SIGNED_VERSION if extended else FORMAT_VERSION):
    what = "signed or factored" if extended else "dense or sparse"
    raise DeltaError(f"delta version {out['version']} with {what} arrays is not supported "
                     f"(this runtime reads version {FORMAT_VERSION} with dense or sparse "
                     f"arrays, {SIGNED_VERSION} with signed or factored)")
  if (out["sha256"].shape != (2, 32) or out["buffers"].ndim != 2 or out["buffers"].shape[1] != 3
      or out["quant"].ndim != 2 or out["quant"].shape[1] != 3):
    raise DeltaError(f"delta arrays have the wrong shapes: sha256 {out['sha256'].shape} (want "
                     f"(2, 32)), buffers {out['buffers'].shape} (want (B, 3)), quant "
                     f"{out['quant'].shape} (want (Q, 3))")
  for name in ("buffers", "quant", "runs", "factored"):
    if name in out:
      out[name] = _as_indices(out[name], name)
  for name in ("runs", "factored"):
    if name in out and (out[name].ndim != 2 or out[name].shape[1] != 4):
      raise DeltaError(f"delta array {name!r} has shape {out[name].shape}; expected (R, 4)")
  return out


def _read_member(arrays, name: str) -> np.ndarray:
  """One delta array, read and checked for an integer dtype (uint8 for the byte arrays)."""
  try:  # an .npz member is decompressed (and its CRC checked) here
    value = np.asarray(arrays[name])
  except Exception as e:  # zipfile, its decompressors and numpy raise assorted types
    raise DeltaError(f"delta array {name!r} cannot be read ({e!r})") from None
  want = _DTYPES.get(name, "integer")
  if (value.dtype.kind not in "iu" if want == "integer" else value.dtype != np.dtype(want)):
    raise DeltaError(f"delta array {name!r} has dtype {value.dtype}; expected {want}")
  return value


def _as_indices(values: np.ndarray, name: str) -> np.ndarray:
  """Indices and lengths (uint32 as written) as int64, refused outside [0, 2**32)."""
  if values.size and (values.min() < 0 or values.max() >= 2**32):
    raise DeltaError(f"delta array {name!r} holds {values.min()}..{values.max()}; indices "
                     f"and lengths lie in [0, 2**32)")
  return values.astype(np.int64)


def _decode(arrays: dict[str, np.ndarray], total: int) -> np.ndarray:
  """The difference stream d of `total` bytes."""
  if "diff" in arrays:
    diff = arrays["diff"].astype(np.uint8, copy=False)
    if diff.shape != (total,):
      raise DeltaError(f"dense delta has {diff.size} bytes; its buffers need {total}")
    return diff
  planes, values = arrays["gaps"], arrays["values"]
  if (planes.ndim != 2 or values.ndim != 1 or planes.shape[0] != 4
      or planes.shape[1] != values.shape[0]):
    raise DeltaError(f"sparse delta arrays do not fit together: gaps {planes.shape}, "
                     f"values {values.shape}")
  gaps = np.ascontiguousarray(planes.T, np.uint8).view("<u4").reshape(-1)
  positions = np.cumsum(gaps, dtype=np.uint64)
  if positions.size and positions[-1] >= total:
    raise DeltaError(f"sparse delta points at byte {positions[-1]}; its buffers hold {total}")
  diff = np.zeros(total, np.uint8)
  diff[positions] = values
  if "runs" in arrays:
    _add_signed(diff, arrays["runs"], arrays["magnitudes"], arrays["signs"])
  if "factored" in arrays:
    _add_factored(diff, arrays["factored"], arrays["left"], arrays["right"], arrays["scales"])
  return diff


def _add_factored(diff: np.ndarray, factored: np.ndarray, left: np.ndarray, right: np.ndarray,
                  scales: np.ndarray) -> None:
  """Adds each low-rank buffer's `factored_product` to `diff` (mod 256), after checking that the
  rows and the factor arrays fit the stream and each other."""
  offset, m, n, r = (factored[:, c] for c in range(4))
  if factored.size and (r.min() < 1 or r.max() > MAX_RANK or (offset + m * n).max() > len(diff)):
    raise DeltaError(f"factored delta rows do not fit a stream of {len(diff)} bytes: each needs "
                     f"a rank in [1, {MAX_RANK}] and its m x n bytes inside the stream")
  want = (int((m * r).sum()),), (int((r * n).sum()),), (int(m.sum()),)
  if (left.shape, right.shape, scales.shape) != want:
    raise DeltaError(f"factored delta has left {left.shape}, right {right.shape} and scales "
                     f"{scales.shape}; its rows need {want[0]}, {want[1]} and {want[2]}")
  a = b = c = 0
  for o, rows, cols, rank in factored.tolist():
    product = factored_product(left[a:a + rows * rank].reshape(rows, rank),
                               right[b:b + rank * cols].reshape(rank, cols), scales[c:c + rows])
    diff[o:o + rows * cols] += (product % 256).astype(np.uint8).reshape(-1)
    a, b, c = a + rows * rank, b + rank * cols, c + rows


def _add_signed(diff: np.ndarray, runs: np.ndarray, magnitudes: np.ndarray,
                signs: np.ndarray) -> None:
  """Adds the signed encoding's +-k to `diff` (mod 256), run by run, after checking that runs,
  magnitudes and sign bits fit the stream and each other."""
  offset, length, block, period = (runs[:, c] for c in range(4))
  if runs.size and (block.min() < 1 or period.min() < 1 or np.any(length % (block * period))
                    or (offset + length).max() > len(diff)):
    raise DeltaError(f"signed delta runs do not fit a stream of {len(diff)} bytes: each needs "
                     f"block, period >= 1, a length that is a multiple of block x period, and "
                     f"to end inside the stream")
  if magnitudes.shape != (int(period.sum()),) or signs.shape != ((int(length.sum()) + 7) // 8,):
    raise DeltaError(f"signed delta has {magnitudes.shape} magnitudes and {signs.shape} sign "
                     f"bytes; its runs need ({int(period.sum())},) and "
                     f"({(int(length.sum()) + 7) // 8},)")
  bits = np.unpackbits(signs, count=int(length.sum()), bitorder="little").view(bool)
  first_magnitude = first_bit = 0
  for o, n, b, p in runs.tolist():
    k = magnitudes[first_magnitude:first_magnitude + p]
    per_byte = np.tile(np.repeat(k, b), n // (b * p))
    moved = np.where(bits[first_bit:first_bit + n], per_byte, np.negative(per_byte))
    diff[o:o + n] += moved  # uint8 arithmetic wraps: mod 256
    first_magnitude += p
    first_bit += n
