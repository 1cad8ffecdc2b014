"""The difference stream's four lossless encodings: sparse, dense, signed and factored.

A delta's buffers, concatenated, form one byte stream; its difference d = (specialist - base)
mod 256 is stored in one of them (docs/bundle_format.md, "Encodings"): `encode` writes d,
`decode` reads it back, checking that every member fits the stream. Needs only numpy.
"""

from __future__ import annotations

import io

import numpy as np

from super_sub.formats.errors import DeltaError

ENCODINGS = ("auto", "sparse", "dense", "signed")
MAX_RANK = 1024  # r x 127 x 128 < 2**24: the int32 sums convert to float32 exactly
_RUN_BYTES = 16  # one row of a signed delta's runs: four uint32
_EXCEPTION_BYTES = 2  # about what one nonzero residual byte costs in a deflated sparse encoding


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


def encode_sparse(diff: np.ndarray) -> dict[str, np.ndarray]:
  positions = np.flatnonzero(diff)
  gaps = np.diff(positions, prepend=0).astype("<u4")
  return {"gaps": gaps.view(np.uint8).reshape(-1, 4).T.copy(), "values": diff[positions]}


def encode_signed(diff: np.ndarray, layouts: np.ndarray,
                  force: bool) -> dict[str, np.ndarray] | None:
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
          "signs": np.packbits(np.concatenate(signs), bitorder="little"),
          **encode_sparse(residual)}


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


def encode_factored(diff: np.ndarray, lengths: list[int], factors) -> dict[str, np.ndarray]:
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
          "scales": np.concatenate(scales), **encode_sparse(residual)}


def encode(diff: np.ndarray, encoding: str, layouts: np.ndarray) -> dict[str, np.ndarray]:
  """`diff` in the given lossless encoding; "auto" keeps whichever .npz is smaller."""
  if len(diff) >= 2**32:
    raise DeltaError("delta streams of 4 GiB or more are not supported")
  if encoding == "sparse":
    return encode_sparse(diff)
  if encoding == "dense":
    return {"diff": diff}
  signed = encode_signed(diff, layouts, force=encoding == "signed")
  if encoding == "signed":
    if signed is None:
      raise DeltaError("the signed encoding needs int8 weight buffers; this specialist has none "
                       "the delta rebuilds")
    return signed
  candidates = [encode_sparse(diff), {"diff": diff}] + ([signed] if signed is not None else [])
  return min(candidates, key=delta_nbytes)


def decode(arrays: dict[str, np.ndarray], total: int) -> np.ndarray:
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
