"""One interpreter for a trunk and the router head that reads its output.

A bundle's router head (`router_head.tflite`) takes the trunk's int8 features, quantized
exactly as the trunk gives them (the runtime checks it). Run as its own interpreter, it holds
its own copy of the features in its input tensor (6.4 MB per batch of 32 for ResNet-50's stage-3
features, 14 x 14 x 1024 int8), its own arena and its own copy of the model. `fuse_router`
instead appends the head's operators to the trunk's graph, reading the trunk's output tensor
directly, and makes the head's logits a second output: the same integer arithmetic on the same
int8 input, so the same logits bit for bit, from one interpreter and one invoke. The bundle's
files stay as they are (version 1); only the runtime builds the fused graph, in memory.

Needs only numpy, flatbuffers and ai_edge_litert's schema: no TensorFlow.
"""

from __future__ import annotations

import copy

import numpy as np

from super_sub.formats.errors import DeltaError
from super_sub.formats.flatbuffer import pack_model, parse_model, schema

ROUTER_OUTPUT = "router_logits"  # the fused model's second output, in its signatures


def fuse_router(trunk: bytes, head: bytes) -> bytes:
  """The trunk's .tflite with `head`'s operators appended and the head's output as a second
  output (after the features), so that one invoke gives both.

  Raises:
    DeltaError: either model does not parse, has more than one subgraph, input or output, or
      the head's input is not the trunk's output (type, shape signature, scale, zero point).
  """
  t = parse_model(trunk, "trunk")
  h = parse_model(head, "router head")
  tg, hg = _only_graph(t, "trunk"), _only_graph(h, "router head")
  features, head_input = tg.outputs[0], hg.inputs[0]
  _check_boundary(tg.tensors[features], hg.tensors[head_input])

  codes = [_opcode_index(t, code) for code in h.operatorCodes or []]
  # Buffer 0 is every model's empty sentinel: the head's tensors without data keep pointing at it.
  buffers = [0] + [len(t.buffers) + i for i in range(len(h.buffers) - 1)]
  t.buffers.extend(h.buffers[1:])
  tensors = {head_input: features}
  for i, tensor in enumerate(hg.tensors):
    if i == head_input:
      continue
    tensor = copy.copy(tensor)
    tensor.buffer = buffers[tensor.buffer]
    tensor.name = b"router_head/" + (tensor.name or b"")
    tensors[i] = len(tg.tensors)
    tg.tensors.append(tensor)

  def remap(indices):
    # -1 marks an optional input left out; it stays -1.
    return None if indices is None else [tensors[int(i)] if i >= 0 else -1 for i in indices]

  for op in hg.operators or []:
    op = copy.copy(op)
    op.opcodeIndex = codes[op.opcodeIndex]
    op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
    op.intermediates = remap(op.intermediates)
    tg.operators.append(op)
  logits = tensors[hg.outputs[0]]
  tg.outputs = [features, logits]
  for signature in t.signatureDefs or []:
    output = schema.TensorMapT()
    output.name, output.tensorIndex = ROUTER_OUTPUT.encode(), logits
    signature.outputs = list(signature.outputs or []) + [output]
  return pack_model(t, size_hint=len(trunk) + len(head) + 4096)


def _only_graph(model, what: str):
  graphs = model.subgraphs or []
  if len(graphs) != 1 or len(graphs[0].inputs) != 1 or len(graphs[0].outputs) != 1:
    raise DeltaError(
        f"{what}: expected one subgraph with one input and one output; got "
        f"{len(graphs)} subgraph(s)"
        + (f", {len(graphs[0].inputs)} input(s), {len(graphs[0].outputs)} output(s)"
           if graphs else ""))
  return graphs[0]


def _check_boundary(out, inp) -> None:
  """The head's input must be the trunk's output as it is: same type, shape and parameters."""
  def describe(tensor):
    q = tensor.quantization
    return (tensor.type, list(np.asarray(tensor.shapeSignature if tensor.shapeSignature
                                         is not None else tensor.shape)[1:]),
            None if q is None or q.scale is None else [float(s) for s in q.scale],
            None if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint])
  if describe(out) != describe(inp):
    raise DeltaError(
        f"the router head's input (type, shape, scales, zero points) {describe(inp)} is not "
        f"the trunk's output {describe(out)}")


def _opcode_index(model, code) -> int:
  """Index of `code` in model.operatorCodes, appended if the model has no equal one."""
  key = _code_key(code)
  for i, existing in enumerate(model.operatorCodes):
    if _code_key(existing) == key:
      return i
  model.operatorCodes.append(code)
  return len(model.operatorCodes) - 1


def _code_key(code):
  return (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
