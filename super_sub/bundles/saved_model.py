"""One SavedModel for servers: the base weights once, each specialist as a delta over them.

The serving function runs the generalist (or a router head on the shared trunk, when the run
has one: super_sub.models.router_head), then, one routed superclass after another, adds
that specialist's delta to the base inside the graph and runs it on the rows routed to it.
With a shared trunk (stages no specialist changes), the trunk runs once per batch and the
generalist and the specialists start from its output. The network after the trunk is one
traced function that every model calls with its own weights, so the graph holds it once
(not once per specialist: ~10 MB of graph for MobileNetV2 with ten specialists).
Only one specialist's weights exist at a time, so memory stays close to one network, and
the SavedModel needs nothing but TensorFlow to load (`tf.saved_model.load`).

Each changed weight tensor is stored the cheapest way: sparse (int32 positions and float32
differences, 8 bytes a changed weight), dense (the whole float32 difference, 4 bytes a weight),
or, when most weights of each output channel moved by the same amount up or down (a sign
specialist, `--specialist_form=sign`), signed (one bit a weight and a float32 per channel, the
other weights sparse);
with `deflate`, the dense differences are stored deflated (~0.8 of their bytes, inflated for
each routed batch). Unchanged tensors (frozen stages) cost
nothing, so a specialist never costs more than the dense difference of what it changed: at
224 px with dense fine-tuning, int64 positions for every weight had made the SavedModel
~3x the eleven separate networks. The base's backbone is one flat variable and each
specialist's delta seven and its head's (`_Delta`), added by one traced function: a variable
per tensor had cost ~9 MB of save and restore functions for MobileNetV2 with ten specialists.

The network is evaluated from the weights by a small interpreter of the backbone's Keras
graph (the layer types super_sub.models.backbones builds), in float32. Quantization-aware models are
exported with their float weights: outputs then differ from the QAT Keras model by its
fake-quantization noise.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np
import tensorflow as tf

from super_sub import hierarchy as hierarchy_lib
from super_sub._internal.compat import keras
from super_sub.models import classifiers
from super_sub.models import trunk as trunk_lib


def _unwrap(layer):
  """The layer a tfmot QuantizeWrapper wraps (or the layer itself)."""
  return getattr(layer, "layer", layer)


def _weights(layer) -> list[tf.Variable]:
  """The variables the float computation of `layer` needs, in `layer.get_weights()` order.

  A tfmot wrapper lists its layer's variables and then its own quantizer variables (named
  under the wrapper); the wrapped layer's own `.kernel` is a symbolic tensor after wrapping,
  so the wrapper's list is filtered.
  """
  if _unwrap(layer) is layer:
    return list(layer.weights)
  return [v for v in layer.weights if not v.name.startswith(layer.name + "/")]


class _Graph:
  """The float computation of a `build_classifier` model as a function of its weights."""

  def __init__(self, model: keras.Model):
    self.input_shape = tuple(model.input_shape[1:])
    self.steps = []  # (layer name, layer, inbound names)
    for layer in model.layers:
      inner = _unwrap(layer)
      node = classifiers.inbound_node(model, layer)
      inbound = [n.name for n in tf.nest.flatten(node.inbound_layers)]
      self.steps.append((layer.name, inner, inbound))
    self.output = model.layers[-1].name

  def __call__(self, x: tf.Tensor, weights: list[list[tf.Tensor]], start: int = 0,
               stop: int | None = None) -> tf.Tensor:
    """The output of layer stop - 1 (default: the logits) from x, the input of layer `start`
    (the images when 0, else layer start - 1's output: a shared trunk's features)."""
    steps = self.steps[start:stop]
    values: dict[str, tf.Tensor] = {self.steps[start - 1][0]: x} if start else {}
    for (name, layer, inbound), w in zip(steps, weights[start:stop]):
      args = [values[n] for n in inbound] or [x]
      values[name] = _apply(layer, args, w)
    return values[steps[-1][0]]


def _apply(layer, args, w):  # pylint: disable=too-many-return-statements
  """One layer's float output from its inputs and weights."""
  kind = type(layer).__name__
  x = args[0]
  cfg = layer.get_config()
  if kind in ("InputLayer", "QuantizeLayer"):
    return x
  if kind == "Conv2D":
    y = tf.nn.conv2d(x, w[0], strides=cfg["strides"], padding=cfg["padding"].upper(),
                     dilations=cfg["dilation_rate"])
    return _activation(y + w[1] if cfg["use_bias"] else y, cfg["activation"])
  if kind == "DepthwiseConv2D":
    s = cfg["strides"]
    y = tf.nn.depthwise_conv2d(x, w[0], strides=(1, s[0], s[1], 1),
                               padding=cfg["padding"].upper(), dilations=cfg["dilation_rate"])
    return _activation(y + w[1] if cfg["use_bias"] else y, cfg["activation"])
  if kind == "BatchNormalization":
    gamma, beta, mean, var = w
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, cfg["epsilon"])
  if kind == "ReLU":
    y = tf.nn.relu(x) if not cfg.get("negative_slope") else tf.nn.leaky_relu(
        x, cfg["negative_slope"])
    return y if cfg.get("max_value") is None else tf.minimum(y, cfg["max_value"])
  if kind == "Activation":
    return _activation(x, cfg["activation"])
  if kind == "Add":
    return tf.add_n(args)
  if kind == "ZeroPadding2D":
    (top, bottom), (left, right) = cfg["padding"]
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
  if kind == "MaxPooling2D":
    return tf.nn.max_pool2d(x, cfg["pool_size"], cfg["strides"], cfg["padding"].upper())
  if kind == "GlobalAveragePooling2D":
    return tf.reduce_mean(x, axis=(1, 2))
  if kind == "Dense":
    return _activation(tf.matmul(x, w[0]) + w[1], cfg["activation"])
  raise ValueError(f"layer {layer.name!r} of type {kind} is not supported by the SavedModel "
                   "export; super_sub.models' backbones only use Conv2D, DepthwiseConv2D, "
                   "BatchNormalization, ReLU, Add, padding, pooling and Dense")


def _activation(x, name):
  if isinstance(name, dict):  # tfmot replaces a wrapped layer's activation by a wrapper
    if name.get("class_name") == "QuantizeAwareActivation":
      return _activation(x, name["config"]["activation"])
    if name.get("class_name") == "NoOpActivation":
      return x
    name = name.get("class_name", "").lower()
  if name in (None, "linear"):
    return x
  if name == "relu":
    return tf.nn.relu(x)
  if name == "relu6":
    return tf.nn.relu6(x)
  raise ValueError(f"activation {name!r} is not supported by the SavedModel export")


class _Delta(tf.Module):
  """One specialist over the base, packed into a few variables (each costs ~1 KB of SavedModel
  graph for its save and restore functions: per tensor, ~3,000 of them had been 9 MB).

  Each changed weight tensor is stored the cheapest of three ways. Sparse: `positions` (int32,
  into the backbone's weights laid end to end, `SuperSubModule.unflatten` order) and `values`
  (float32 differences), 8 bytes a changed weight. Dense: `dense_tensors` lists such tensors
  (ordinals in that order) and `dense` holds their differences end to end, 4 bytes a weight.
  Signed, where most of each channel's weights moved by +-a (`_sign_form`): `sign_tensors`
  (ordinals), `signs` (one bit a weight, uint8, least significant first, the tensors end to
  end) and `amounts` (float32 a, per channel, the tensors end to end), with the weights that
  moved otherwise corrected in `positions` and `values`. An unchanged tensor stores nothing.

  With `deflate`, `dense` is one string instead: the zlib stream of its little-endian bytes
  laid out as four byte planes (every weight's lowest byte, then every second byte, ...), which
  fine-tuning differences shrink to ~0.8 (their high bytes vary little); each use inflates it.
  """

  def __init__(self, positions, values, dense_tensors, dense, sign_tensors, signs, amounts,
               head, changed, deflate=False):
    super().__init__()
    self.positions = tf.Variable(positions.astype(np.int32), trainable=False)
    self.values = tf.Variable(values.astype(np.float32), trainable=False)
    self.dense_tensors = tf.Variable(dense_tensors.astype(np.int32), trainable=False)
    if deflate:  # byte planes: weight t's byte b at b * n + t
      dense = zlib.compress(dense.astype("<f4").view(np.uint8).reshape(-1, 4).T.tobytes())
    self.dense = tf.Variable(dense if deflate else dense.astype(np.float32), trainable=False)
    self.sign_tensors = tf.Variable(sign_tensors.astype(np.int32), trainable=False)
    self.signs = tf.Variable(signs.astype(np.uint8), trainable=False)
    self.amounts = tf.Variable(amounts.astype(np.float32), trainable=False)
    self.head = [tf.Variable(v, trainable=False) for v in head]
    # (layer, weight, "sparse" or "dense") of each changed tensor: for inspection, not saved.
    self._changed = changed

  @property
  def changed(self) -> list[tuple[int, int, str]]:
    return self._changed

  @property
  def deflated(self) -> bool:
    """Whether `dense` holds the deflated byte planes rather than float32 values."""
    return self.dense.dtype == tf.string

  def stored_bytes(self) -> int:
    """Bytes of the backbone delta (positions, differences, signs and amounts, ordinals)."""
    arrays = (self.positions, self.values, self.dense_tensors, self.sign_tensors, self.signs,
              self.amounts) + (() if self.deflated else (self.dense,))
    return (sum(int(np.prod(v.shape)) * v.dtype.size for v in arrays)
            + (len(self.dense.numpy()) if self.deflated else 0))

  def arrays(self) -> tuple[tf.Tensor, ...]:
    """What `SuperSubModule._add_delta` takes, in its order (`dense` inflated)."""
    dense = self.dense
    if self.deflated:  # byte planes -> little-endian float32 (tf.bitcast: host order)
      planes = tf.io.decode_raw(tf.io.decode_compressed(dense, "ZLIB"), tf.uint8)
      dense = tf.bitcast(tf.transpose(tf.reshape(planes, [4, -1])), tf.float32)
    return (self.positions, self.values, self.dense_tensors, dense, self.sign_tensors,
            self.signs, self.amounts)


def _channels(shape) -> int:
  """Output channels of a Keras weight tensor: its last axis, or the one before for a
  depthwise kernel ([H, W, C, 1]); element t of the flat tensor is channel t % that."""
  return int(shape[-1] if shape[-1] > 1 or len(shape) < 2 else shape[-2])


def _sign_form(diff: np.ndarray, base: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
  """(signs, amounts, exceptions, residuals) when most weights of each channel moved by the
  same amount a up or down, else None: `exceptions` (flat indices) are the weights that did not
  (a sign specialist holds each channel's largest weight, `deltas.range_setters`), `residuals`
  their differences minus the signed amount. Same to float32 rounding: (base + a) - base is a
  only to within an ulp of the base, so the tolerance is a few ulps of the tensor's largest
  weight."""
  if base.ndim < 2:
    return None
  per_channel = np.abs(diff).reshape(-1, _channels(base.shape))
  # The median finds a, the mean over the weights that moved by it refines it. In float64: a
  # float32 mean down a long column drifts past the tolerance below (a 3x3x128 kernel: 1.4e-7
  # against 5e-8), and a sign delta would be stored dense.
  median = np.median(per_channel.astype(np.float64), axis=0)
  tolerance = 2.0**-21 * (np.abs(base).max() + median.max())
  fits = np.abs(per_channel - median) <= tolerance
  if fits.mean() < 0.5:
    return None
  amounts = (np.where(fits, per_channel, 0).sum(axis=0, dtype=np.float64)
             / np.maximum(fits.sum(axis=0), 1)).astype(np.float32)
  signs = diff >= 0
  exceptions = np.flatnonzero(~fits.reshape(-1))
  signed = np.where(signs, 1.0, -1.0).reshape(per_channel.shape) * amounts
  return signs, amounts, exceptions, (diff - signed.reshape(-1))[exceptions].astype(np.float32)


class SuperSubModule(tf.Module):
  """Generalist + specialists stored as one flat base + a packed delta per specialist, served
  as one function."""

  def __init__(self, generalist: keras.Model, specialists: dict[int, keras.Model],
               hierarchy: hierarchy_lib.Hierarchy, shared_stages: int = 0,
               router_head: keras.Model | None = None, deflate: bool = False):
    super().__init__(name="super_sub")
    if deflate and sys.byteorder != "little":  # `_Delta.arrays` reads them in host order
      raise ValueError("deflated SavedModel deltas need a little-endian host")
    self._graph = _Graph(generalist)
    self._h = hierarchy
    # Layers [0, cut) form the shared trunk, computed once per batch; 0: no trunk.
    self._cut = trunk_lib.cut_index(generalist, shared_stages) + 1 if shared_stages else 0
    if router_head is not None and not shared_stages:
      raise ValueError("a router head reads the shared trunk's features: export it with "
                       "shared_stages >= 1")
    for model in ([*specialists.values()] + [router_head] * (router_head is not None)
                  if shared_stages else ()):
      trunk_lib.check_shared(generalist, model, shared_stages)
    # The router head's layers after the trunk, their weights as they are (a few percent of
    # a network); it routes in place of the generalist.
    self._router_graph = _Graph(router_head) if router_head is not None else None
    self.router_head = ([[tf.Variable(v.numpy(), trainable=False) for v in _weights(layer)]
                         for layer in router_head.layers[self._cut:]]
                        if router_head is not None else [])
    if sorted(specialists) != hierarchy.specialist_superclasses():
      raise ValueError(f"specialists must be given for exactly the superclasses that have one "
                       f"{hierarchy.specialist_superclasses()}; got {sorted(specialists)}")
    # The layers from the cut up to the head, traced once: the generalist and every specialist
    # call this one function with their backbone weights laid end to end (one tensor: a call
    # site naming every weight tensor cost ~19 kB of graph per specialist for MobileNetV2), so
    # the graph holds the network and its weights' unpacking once.
    head = len(generalist.layers) - 1
    base = [[v.numpy() for v in _weights(layer)] for layer in generalist.layers]
    self._shapes = [[w.shape for w in layer] for layer in base[:-1]]
    offsets = np.cumsum([0] + [w.size for layer in base[:-1] for w in layer])
    self._sizes = [int(n) for n in np.diff(offsets)]
    # One signature, so the graph holds one trace (saving had stored a second copy).
    features = (generalist.layers[self._cut - 1].output.shape[1:] if self._cut
                else generalist.input_shape[1:])
    self._body = tf.function(
        lambda x, flat: self._graph(x, self.unflatten(flat), start=self._cut, stop=head),
        input_signature=[tf.TensorSpec([None, *features], tf.float32),
                         tf.TensorSpec([int(offsets[-1])], tf.float32)])
    if offsets[-1] >= 2**31:
      raise ValueError(f"the backbone has {offsets[-1]:,} weights; the SavedModel addresses them "
                       "with int32 positions (at most 2**31 - 1)")
    self.base = tf.Variable(np.concatenate([w.ravel() for layer in base[:-1] for w in layer]
                                           ).astype(np.float32), trainable=False)
    self.base_head = [tf.Variable(v, trainable=False) for v in base[-1]]
    # Base + one specialist's delta, traced once.
    self._channels = [_channels(shape) if len(shape) >= 2 else 1
                      for layer in self._shapes for shape in layer]
    self._patched = tf.function(self._add_delta, input_signature=[
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.uint8),
        tf.TensorSpec([None], tf.float32)])
    self.specialists = {}
    for k, model in specialists.items():
      layers = model.layers
      if len(layers) != len(generalist.layers):
        raise ValueError(f"specialist {k} has {len(layers)} layers, the generalist "
                         f"{len(generalist.layers)}: its backbone does not match the base")
      positions, values, dense_tensors, dense, changed = [], [], [], [], []
      sign_tensors, signs, amounts = [], [], []
      tensor = 0
      for i, layer in enumerate(layers[:-1]):
        for j, v in enumerate(_weights(layer)):
          if tuple(v.shape) != base[i][j].shape:
            raise ValueError(f"specialist {k}: weight {v.name} has shape {v.shape}, the base "
                             f"{base[i][j].shape}: its backbone does not match the base")
          diff = (v.numpy() - base[i][j]).ravel()
          where = np.flatnonzero(diff)
          signed = _sign_form(diff, base[i][j]) if where.size else None
          # Bytes: 8 a changed weight (sparse), 4 a weight (dense), 1/8 a weight + 4 a
          # channel + 8 an exception (signed).
          if signed is not None and (diff.size / 8 + 4 * signed[1].size + 8 * signed[2].size
                                     < min(8 * where.size, 4 * diff.size)):
            sign_tensors.append(tensor)
            signs.append(signed[0])
            amounts.append(signed[1])
            positions.append(offsets[tensor] + signed[2])
            values.append(signed[3])
            changed.append((i, j, "signed"))
          elif 2 * where.size < diff.size:
            if where.size:
              positions.append(offsets[tensor] + where)
              values.append(diff[where])
              changed.append((i, j, "sparse"))
          else:
            dense_tensors.append(tensor)
            dense.append(diff)
            changed.append((i, j, "dense"))
          tensor += 1
      self.specialists[str(k)] = _Delta(
          np.concatenate(positions or [np.zeros(0, np.int64)]),
          np.concatenate(values or [np.zeros(0, np.float32)]), np.array(dense_tensors, np.int64),
          np.concatenate(dense or [np.zeros(0, np.float32)]),
          np.array(sign_tensors, np.int64),
          np.packbits(np.concatenate(signs or [np.zeros(0, bool)]), bitorder="little"),
          np.concatenate(amounts or [np.zeros(0, np.float32)]),
          [v.numpy() for v in _weights(layers[-1])], changed, deflate)
    self._any_signed = any(kind == "signed" for d in self.specialists.values()
                           for *_, kind in d.changed)

  def _add_delta(self, positions, values, dense_tensors, dense, sign_tensors, signs,
                 amounts) -> tf.Tensor:
    """The backbone weights of base + delta, end to end as `base` (`_Delta` says what each
    argument holds).

    Each tensor takes its slice of `dense` (and of the signs times its channels' amounts); a
    tensor that stores none slices the zeros placed after the stored values. Where each slice
    starts is computed for all tensors at once, and the slices, end to end, are added to the
    base in one addition, so the graph holds a slice per tensor (it held ~16 operations per
    tensor, 0.5 MB of a MobileNetV2 SavedModel).
    Adding tensor by tensor is the fast way on this CPU: scattering the dense differences (an
    index per stored weight) took ~12x as long, and gathering them by a per-weight index 2x
    (MobileNetV2 and ResNet-50, one-off measurements).
    """
    if not self._sizes:
      return tf.tensor_scatter_nd_add(self.base, positions[:, None], values)
    sizes = tf.constant(self._sizes, tf.int32)

    def starts(chosen, lengths, stored):
      """Per tensor ([1] each), where its values start among the `stored` values of the
      `chosen` tensors (`lengths` values each, end to end in tensor order); `stored` (the
      zeros after them) for a tensor not chosen."""
      mask = tf.scatter_nd(chosen[:, None], tf.ones_like(chosen), tf.shape(sizes)) > 0
      first = tf.where(mask, tf.cumsum(tf.where(mask, lengths, 0), exclusive=True), stored)
      return tf.unstack(first[:, None])

    padding = tf.zeros([max(self._sizes)])
    dense_at = starts(dense_tensors, sizes, tf.size(dense))
    dense = tf.concat([dense, padding], 0)
    if self._any_signed:  # decided when tracing: no sign ops for bundles without them
      channels = tf.constant(self._channels, tf.int32)
      bits = tf.bitwise.bitwise_and(signs[:, None], tf.constant([1 << b for b in range(8)],
                                                                tf.uint8))
      unit = tf.where(tf.reshape(bits, [-1]) > 0, 1.0, -1.0)
      sign_at = starts(sign_tensors, sizes, tf.size(unit))
      amount_at = starts(sign_tensors, channels, tf.size(amounts))
      unit = tf.concat([unit, padding], 0)
      amounts = tf.concat([amounts, tf.zeros([max(self._channels)])], 0)
    moved = []
    for t, (size, c) in enumerate(zip(self._sizes, self._channels)):
      part = tf.slice(dense, dense_at[t], [size])
      if self._any_signed:  # element i of a flat tensor belongs to output channel i % c
        signed = tf.reshape(tf.slice(unit, sign_at[t], [size]), [-1, c]) * tf.slice(
            amounts, amount_at[t], [c])
        part += tf.reshape(signed, [-1])
      moved.append(part)
    return tf.tensor_scatter_nd_add(self.base, positions[:, None], values) + tf.concat(moved, 0)

  def unflatten(self, flat: tf.Tensor, stop: int | None = None) -> list[list[tf.Tensor]]:
    """Per backbone layer (those before `stop`, default all), its weight tensors, from the
    weights laid end to end."""
    shapes = self._shapes[:stop]
    sizes = self._sizes[:sum(len(layer) for layer in shapes)]
    parts = iter(tf.split(flat[:sum(sizes)], sizes) if sizes else [])
    return [[tf.reshape(next(parts), shape) for shape in layer] for layer in shapes]

  def _logits(self, x: tf.Tensor, backbone: tf.Tensor, head: list[tf.Variable]) -> tf.Tensor:
    """One model's logits from x (the images, or the trunk's features), its backbone weights
    end to end and its head's."""
    layers = len(self._shapes)
    return self._graph(self._body(x, backbone), [[]] * layers + [list(head)], start=layers)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """One image's shape, as the serving signature takes it."""
    return self._graph.input_shape

  def assemble(self, k: int) -> tf.Tensor:
    """Specialist k's backbone weights, end to end as `base`: what each routed batch pays
    for a specialist (inflating its deflated differences, if so stored, then adding them)."""
    return self._patched(*self.specialists[str(k)].arrays())

  def _specialist_weights(self, k: int) -> list[list[tf.Tensor]]:
    """Specialist k's weights per layer, as its model lists them (for inspection)."""
    return self.unflatten(self.assemble(k)) + [[tf.convert_to_tensor(v)
                                                for v in self.specialists[str(k)].head]]

  def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """Hard two-stage routing; see export_saved_model for the signature."""
    cut = self._cut
    base = tf.convert_to_tensor(self.base)
    features = self._graph(images, self.unflatten(base, stop=cut), stop=cut) if cut else images
    if self._router_graph is not None:
      head = [[]] * cut + [[tf.convert_to_tensor(v) for v in layer] for layer in self.router_head]
      route = lambda x: self._router_graph(x, head, start=cut)  # noqa: E731
    else:
      route = lambda x: self._logits(x, base, self.base_head)  # noqa: E731

    def specialist(k, x):
      return self._logits(x, self.assemble(k), self.specialists[str(k)].head)

    return two_stage_graph(features, self._h, route, specialist)


def two_stage_graph(images: tf.Tensor, hierarchy: hierarchy_lib.Hierarchy,
                    generalist, specialists) -> dict[str, tf.Tensor]:
  """Hard routing of super_sub.routing.core, as TensorFlow graph operations.

  The same outputs as `core.predict(..., mode="hard")` (tested on the same cases): the
  generalist's argmax superclass (ties: the lower index), its softmax, and label_probs with
  P(subclass | routed superclass) in that superclass's columns, 1 for a superclass without a
  specialist. Specialists run one after another, each on just its routed rows and never on
  zero rows, so only one specialist's weights exist at a time.

  Args:
    images: [batch, ...] float32 model inputs.
    hierarchy: the label tree.
    generalist: images -> superclass logits.
    specialists: (superclass, images) -> that specialist's logits; called for the
      superclasses that have one (`Hierarchy.has_specialist`).
  """
  h = hierarchy
  super_probs = tf.nn.softmax(generalist(images))
  superclass = tf.argmax(super_probs, axis=1, output_type=tf.int64)
  n = tf.shape(images)[0]
  label_probs = tf.zeros([n, h.num_subclasses])
  previous = label_probs
  for k in range(h.num_superclasses):
    rows = tf.where(tf.equal(superclass, k))[:, 0]
    lo, hi = int(h.superclass_offsets[k]), int(h.superclass_offsets[k + 1])
    if not h.has_specialist(k):  # routing to it is the answer
      part = tf.ones([tf.size(rows), 1])
    else:
      with tf.control_dependencies([previous]):  # one specialist's weights at a time
        part = tf.cond(
            tf.size(rows) > 0,  # never a convolution on zero rows (super_sub.routing.core)
            lambda k=k, rows=rows: tf.nn.softmax(specialists(k, tf.gather(images, rows))),
            lambda lo=lo, hi=hi: tf.zeros([0, hi - lo]))
    previous = part
    cols = tf.range(lo, hi, dtype=tf.int64)
    grid = tf.stack(tf.meshgrid(rows, cols, indexing="ij"), axis=-1)
    label_probs = tf.tensor_scatter_nd_update(label_probs, tf.reshape(grid, [-1, 2]),
                                              tf.reshape(part, [-1]))
  return {"superclass": superclass, "superclass_probs": super_probs,
          "label": tf.argmax(label_probs, axis=1, output_type=tf.int64),
          "label_probs": label_probs}


def export_saved_model(path: str, generalist: keras.Model, specialists: dict[int, keras.Model],
                       hierarchy: hierarchy_lib.Hierarchy, shared_stages: int = 0,
                       router_head: keras.Model | None = None, deflate: bool = False) -> None:
  """Saves the module with a `serving_default` signature.

  With shared_stages = K > 0 (specialists trained with --freeze_stages=K), the first K stages
  run once per batch as a shared trunk, and the generalist and the routed specialists start
  from its output, as in the TFLite bundle. A `router_head` (super_sub.models.router_head, on
  the same trunk) then routes instead of the generalist.

  `deflate` stores the dense differences deflated (`_Delta`): ~0.8 of the bytes, but every
  routed batch inflates its specialist's before adding them (MobileNetV2 at 224 px, dense:
  24-34 ms a specialist instead of 3.5-3.8; bench/deployment.py --saved_model_only).

  Signature: `images` float32 [batch, H, W, C] with values in [0, 1] ->
  `superclass` int64 [batch], `superclass_probs` float32 [batch, S], `label` int64 [batch]
  (global subclass index), `label_probs` float32 [batch, num_subclasses] (hard routing:
  P(subclass | routed superclass) in that superclass's columns, 0 elsewhere).
  """
  save_module(SuperSubModule(generalist, specialists, hierarchy, shared_stages, router_head,
                             deflate), path)


def save_module(module: SuperSubModule, path: str) -> None:
  """Saves a built module as `export_saved_model` does (for callers that also use it, e.g. to
  time `SuperSubModule.assemble`)."""
  spec = tf.TensorSpec([None, *module.input_shape], tf.float32, name="images")
  serve = tf.function(module.serve, input_signature=[spec])
  tf.saved_model.save(module, path, signatures={"serving_default": serve})
