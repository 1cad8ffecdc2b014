"""TFLite flatbuffers read and written through the schema's object API, byte for byte.

Needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow.
"""

from __future__ import annotations

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from super_sub.formats.errors import DeltaError

FILE_IDENTIFIER = b"TFL3"  # as tensorflow/lite/tools/flatbuffer_utils.py writes it
_MAX_BYTES = 2**31 - 1  # larger models keep buffers outside the flatbuffer (offset/size fields)


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



def buffer_spans(model: bytes) -> list[tuple[int, int]]:
  """(byte offset, length) of each buffer's data inside the flatbuffer ((0, 0) when empty)."""
  root = schema.Model.GetRootAs(model, 0)
  spans = []
  for i in range(root.BuffersLength()):
    table = root.Buffers(i)._tab  # pylint: disable=protected-access
    field = table.Offset(4)  # Buffer.data
    spans.append((table.Vector(field), table.VectorLen(field)) if field else (0, 0))
  return spans

