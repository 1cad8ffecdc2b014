"""Two-stage inference on a `tflite/` bundle with LiteRT: the edge twin of routing.TwoStage.

The router stays loaded; a specialist is rebuilt from the base + its delta only when a batch
routes rows to it, and at most `cache_size` rebuilt specialists are kept (least recently used
dropped first), so memory stays about one network at the default of 1. With a `cache_dir`, each
specialist is rebuilt once and kept there as a file that later switches map instead of rebuilding
(super_sub.runtime.disk_cache): about half a switch's cost at 224 px, for disk. With
`packed_weights`, LiteRT also keeps XNNPACK's packed weights of each specialist there, so that
building its interpreter maps them instead of repacking every kernel (most of the other half,
for large tails). Rows are grouped by routed superclass, so each specialist runs once per batch
on just its rows (the interpreter's batch dimension is resized to the group), and never on zero
rows. A bundle with a trunk (stages every model shares, super_sub.models.trunk) runs it once
per image and feeds its output to the generalist and the specialists. A bundle with a router
head routes with it instead of the generalist, whose interpreter is then never built: the
generalist is only the specialists' base. The router head then runs inside the trunk's
interpreter, appended to its graph (super_sub.runtime.fusion): one invoke, no second copy of
the features. The routing itself is super_sub.routing.core's, so semantics and outputs match
TwoStage.predict exactly. Needs only numpy, Pillow and ai_edge_litert.
"""

from __future__ import annotations

import collections
import functools
import importlib.metadata
import os

import numpy as np
from ai_edge_litert import compiled_model as litert_compiled
from ai_edge_litert import cpu_options as litert_cpu
from ai_edge_litert import environment as litert_environment
from ai_edge_litert import hardware_accelerator as litert_accelerator
from ai_edge_litert import interpreter as litert
from ai_edge_litert import options as litert_options

from super_sub.data import images as images_lib
from super_sub.routing import core
from super_sub.runtime import bundle as bundle_lib
from super_sub.runtime import delta as delta_lib
from super_sub.runtime import disk_cache
from super_sub.runtime import fusion


class TwoStageLite:
  """A verified bundle's router (router head or generalist) and specialists, run with LiteRT.

  Attributes:
    bundle: the loaded `Bundle` (hierarchy, manifest, verified bytes).
    hierarchy: the bundle's hierarchy.
    input_shape: (H, W, C) of the images `predict` takes.
    framing: how `load_images` should frame image files for these models ("resize" or
      "center_crop"), from the manifest.
    trunk: the shared trunk's interpreter, or None for a bundle without one. With a router
      head it holds the head too, and a call gives (features, superclass logits).
    router: the generalist's interpreter, which picks superclasses; None where the bundle's
      router head (super_sub.models.router_head) routes, inside `trunk`.
    cache_size: how many rebuilt specialists stay in memory.
    cache_dir: the `disk_cache.SpecialistFiles` holding rebuilt specialists on disk, or None.
    packed_weights: whether cache_dir also keeps LiteRT's packed weights.
    num_rebuilds: how many times a specialist has been rebuilt from base + delta so far.
    num_loads: how many specialist interpreters have been built so far (one per switch to a
      specialist that is not in memory), whether rebuilt or mapped from `cache_dir`.
  """

  def __init__(self, bundle_dir: str | os.PathLike | bundle_lib.Bundle, cache_size: int = 1,
               num_threads: int | None = None,
               cache_dir: str | os.PathLike | None = None, packed_weights: bool = False):
    """Loads and verifies the bundle (every checksum before any interpreter exists).

    Args:
      bundle_dir: a `tflite/` bundle folder, or an already loaded `Bundle`.
      cache_size: rebuilt specialists kept in memory (>= 1).
      num_threads: LiteRT threads per interpreter (None: LiteRT's default).
      cache_dir: a folder (created if missing) where each specialist, once rebuilt, is kept as
        a verified file that later switches map instead of rebuilding; None: rebuild each time.
      packed_weights: with a cache_dir, also keep LiteRT's packed weights of each specialist
        there, so that a switch maps them instead of repacking. It pays for large tails
        (ResNet-50 k4, 15 MB, with a router head: batch 1 at 1.2x the flat network instead of
        1.6x, for as much disk again) and not for small ones (MobileNetV2 k4, 2 MB):
        bench/deployment.py.

    Raises:
      BundleError: the bundle does not verify or its models do not fit its hierarchy.
      ValueError: a bad cache_size, num_threads or cache_dir.
    """
    if not isinstance(cache_size, (int, np.integer)) or cache_size < 1:
      raise ValueError(f"cache_size must be a positive integer; got {cache_size!r}")
    if num_threads is not None and (not isinstance(num_threads, (int, np.integer))
                                    or num_threads < 1):
      raise ValueError(f"num_threads must be a positive integer or None (LiteRT's default); "
                       f"got {num_threads!r}")
    self.bundle = (bundle_dir if isinstance(bundle_dir, bundle_lib.Bundle)
                   else bundle_lib.load_bundle(bundle_dir))
    self.hierarchy = self.bundle.hierarchy
    self.input_shape = self.bundle.input_shape
    self.framing = self.bundle.input_framing
    self.cache_size = int(cache_size)
    self.num_threads = num_threads
    self.cache_dir = disk_cache.SpecialistFiles(cache_dir) if cache_dir is not None else None
    self.packed_weights = bool(packed_weights)
    self.num_rebuilds = 0
    self.num_loads = 0
    self._cache: collections.OrderedDict[int, _LiteModel] = collections.OrderedDict()
    self._digests: dict[int, bytes] = {}  # superclass -> its specialist's sha256 (cache_dir)
    # With a trunk, it takes the images and every other model takes its output (features).
    head = self.bundle.router_head  # read once: the trunk's interpreter then holds it
    self.trunk = self._load_trunk(self.bundle.trunk, head)
    self._model_input = self.trunk.output_shape if self.trunk is not None else self.input_shape
    # (dtype, scale, zero point) of int8 features that every tail must take as they are.
    self._features = self.trunk.raw_output if self.trunk is not None else None
    self.router = None
    if head is None:
      self.router = _LiteModel(self.bundle.generalist, num_threads, "generalist")
      self._check(self.router, self.hierarchy.num_superclasses)

  def predict(self, images: np.ndarray, mode: str = "hard", k: int = 2,
              batch_size: int = 256) -> dict[str, np.ndarray]:
    """Classifies images through the router (router head or generalist) and the routed
    specialists.

    Args:
      images: [N, H, W, C] float with values in [0, 1], or uint8 (divided by 255).
      mode: "hard" sends each image to its argmax superclass's specialist only; "soft" to the
        specialists of its k most probable superclasses, scoring subclasses by
        P(superclass) * P(subclass | superclass).
      k: superclasses soft routing follows (capped at the superclass count); ignored when hard.
      batch_size: images per router call; each specialist runs at most once per batch.

    Returns:
      {"superclass": [N] int64, "superclass_probs": [N, S] float32, "label": [N] int64 global
      subclass index, "label_probs": [N, num_subclasses] float32}, as TwoStage.predict.

    Raises:
      ValueError: a bad mode, k, batch_size, or image shape (naming expected vs got).
      TypeError: images that are neither uint8 nor floating point.
    """
    core.check_options(mode, k, batch_size)
    images = self._check_images(images)
    return core.predict(images, self.hierarchy, self.router,
                        lambda sup, x: self.specialist(sup)(x), mode=mode, k=k,
                        batch_size=batch_size, trunk=self.trunk,
                        # Cached specialists run first, before a rebuild evicts them: fewer
                        # rebuilds, same result.
                        first=lambda sup: sup in self._cache)

  def specialist(self, k: int) -> "_LiteModel":
    """Superclass k's specialist interpreter: from memory if cached, else from `cache_dir`'s
    verified file if any, else rebuilt from base + delta."""
    if k in self._cache:
      self._cache.move_to_end(k)
      return self._cache[k]
    while len(self._cache) >= self.cache_size:  # free before building: peak stays ~cache_size
      self._cache.popitem(last=False)
    if self.cache_dir is None:
      source = self._rebuild(k)
    else:
      if k not in self._digests:
        self._digests[k] = self.bundle.specialist_sha256(k)
      source = self.cache_dir.get(self._digests[k], lambda: self._rebuild(k))
    packed = (self.cache_dir.packed_weights(self._digests[k], _litert_version())
              if self.packed_weights and self.cache_dir is not None and isinstance(source, str)
              else None)
    model = None
    try:
      model = _LiteModel(source, self.num_threads,
                         f"specialist {k} ({self.hierarchy.superclasses[k].name!r})",
                         packed_weights=packed.path if packed is not None else None)
    finally:
      if packed is not None:
        packed.commit(built=model is not None)
    self._check(model, len(self.hierarchy.subclass_range(k)))
    self.num_loads += 1
    self._cache[k] = model
    return model

  # --- internals -------------------------------------------------------------------------------
  def _load_trunk(self, trunk: bytes | None, head: bytes | None) -> "_LiteModel | None":
    """The trunk's interpreter; with a router head, one for both (fusion.fuse_router)."""
    if trunk is None:
      return None
    if head is not None:
      try:
        trunk = fusion.fuse_router(trunk, head)
      except delta_lib.DeltaError as e:
        raise bundle_lib.BundleError(f"{self.bundle.path}: the router head cannot read the "
                                     f"trunk's output: {e}") from None
    model = _LiteModel(trunk, self.num_threads,
                       "trunk and router head" if head is not None else "trunk", raw_output=True)
    if model.input_shape != self.input_shape:
      raise bundle_lib.BundleError(f"{self.bundle.path}: the trunk takes inputs of shape "
                                   f"{model.input_shape}; the manifest says {self.input_shape}")
    if head is not None and model.widths[1] != self.hierarchy.num_superclasses:
      raise bundle_lib.BundleError(f"{self.bundle.path}: the router head outputs "
                                   f"{model.widths[1]} logits; the hierarchy needs "
                                   f"{self.hierarchy.num_superclasses}")
    return model

  def _rebuild(self, k: int) -> bytes:
    model = self.bundle.specialist(k)
    self.num_rebuilds += 1
    return model

  def _check(self, model: "_LiteModel", width: int) -> None:
    if len(model.widths) != 1:
      raise bundle_lib.BundleError(f"{self.bundle.path}: {model.name} has {len(model.widths)} "
                                   f"outputs; expected one (logits)")
    if model.input_shape != self._model_input:
      what = "the trunk's output" if self.trunk is not None else "the manifest's input"
      raise bundle_lib.BundleError(f"{self.bundle.path}: {model.name} takes inputs of shape "
                                   f"{model.input_shape}; {what} has {self._model_input}")
    if self._features is not None:
      # int8 features go to the tails as they are, so the tails must read them alike.
      if model.input_quantization != self._features:
        raise bundle_lib.BundleError(
            f"{self.bundle.path}: {model.name} takes {model.input_quantization[0]} inputs with "
            f"(scale, zero point) {model.input_quantization[1:]}; the trunk gives "
            f"{self._features[0]} features with {self._features[1:]}")
    if model.width != width:
      raise bundle_lib.BundleError(f"{self.bundle.path}: {model.name} outputs {model.width} "
                                   f"logits; the hierarchy needs {width}")

  def _check_images(self, images) -> np.ndarray:
    """The image contract's model input, mapped linearly from [0, 1] onto the bundle's range."""
    images = images_lib.to_model_input(images, self.input_shape)
    lo, hi = self.bundle.input_range
    return images if (lo, hi) == (0.0, 1.0) else (lo + images * (hi - lo)).astype(np.float32)


class _LiteModel:
  """One LiteRT interpreter: float inputs in, float32 outputs out, any batch size.

  A shared trunk whose output is int8 gives its features as they are (`raw_output`: the dtype
  name, scale and zero point); tails take them as they are when their input has the same.
  A model with more outputs (a trunk with its router head) gives a tuple, the first output
  first; `output_shape` and `width` describe the first, `widths` every one.
  """

  def __init__(self, model: bytes | str, num_threads: int | None, name: str,
               raw_output: bool = False, packed_weights: str | None = None):
    """`model`: .tflite bytes, or the path of a verified .tflite file (LiteRT maps it);
    `raw_output`: give an integer output as it is instead of dequantized; `packed_weights`: a
    file where LiteRT keeps XNNPACK's packed weights (`model` must then be a path): read if it
    holds them, else written (super_sub.runtime.disk_cache)."""
    self.name = name
    source = {"model_path": model} if isinstance(model, str) else {"model_content": model}
    self._interpreter = litert.Interpreter(**source, num_threads=num_threads)
    self._compiled = None
    if packed_weights is None:
      self._interpreter.allocate_tensors()
    else:  # the interpreter above only describes the tensors; the compiled model runs them
      self._compiled = _PackedRunner(model, num_threads, packed_weights)
    (self._in,), self._outs = self._details()
    self._out = self._outs[0]
    self.input_shape = tuple(int(d) for d in self._in["shape"][1:])
    self.output_shape = tuple(int(d) for d in self._out["shape"][1:])
    self.widths = tuple(int(out["shape"][-1]) for out in self._outs)
    self.width = self.widths[0]
    # A batch dimension of -1 in the signature can be resized to each group's size; a fixed one
    # (a model converted with a fixed batch) is fed in chunks of that size, the last one padded.
    self._resizable = int(self._in["shape_signature"][0]) == -1
    self._batch = int(self._in["shape"][0])
    self.input_quantization = _quantization(self._in)
    integer_output = not np.issubdtype(np.dtype(self._out["dtype"]), np.floating)
    self.raw_output = _quantization(self._out) if raw_output and integer_output else None
    if self._compiled is not None:
      # It only described the tensors, and it holds the whole file in memory (reading it
      # verifies the flatbuffer): 17 MB for a ResNet-50 k4 tail (a one-off probe).
      self._interpreter = None

  def __call__(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
    """Outputs [n, ...] (logits, or a trunk's features) for x [n, ...] (n >= 1); a tuple of
    them for a model with more than one output."""
    if self._resizable:
      outs = self._invoke(x)
    else:
      step = self._batch
      chunks = []
      for start in range(0, len(x), step):
        chunk = x[start:start + step]
        pad = np.zeros((step - len(chunk),) + chunk.shape[1:], chunk.dtype)
        chunks.append([out[:len(chunk)] for out in self._invoke(np.concatenate([chunk, pad]))])
      outs = [np.concatenate(parts) for parts in zip(*chunks)]
    return outs[0] if len(outs) == 1 else tuple(outs)

  def _details(self):
    return self._interpreter.get_input_details(), self._interpreter.get_output_details()

  def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
    if self._compiled is not None:
      out = self._compiled(_quantize(x, self._in), np.dtype(self._out["dtype"]))
      return [out if self.raw_output is not None else _dequantize(out, self._out)]
    it = self._interpreter
    if self._resizable and int(self._in["shape"][0]) != len(x):
      it.resize_tensor_input(self._in["index"], [len(x), *self.input_shape])
      it.allocate_tensors()
      (self._in,), self._outs = self._details()
      self._out = self._outs[0]
    it.set_tensor(self._in["index"], _quantize(x, self._in))
    it.invoke()
    outs = [it.get_tensor(out["index"]) for out in self._outs]
    first = outs[0] if self.raw_output is not None else _dequantize(outs[0], self._out)
    return [first] + [_dequantize(y, out) for y, out in zip(outs[1:], self._outs[1:])]


class _PackedRunner:
  """A LiteRT CompiledModel of one .tflite file whose XNNPACK packed weights live in a file.

  The classic Interpreter cannot be given that file; the CompiledModel API can
  (CpuOptions.xnnpack_weight_cache_path). The caller quantizes inputs and dequantizes outputs.
  """

  def __init__(self, path: str, num_threads: int | None, packed_weights: str):
    options = litert_options.Options(
        hardware_accelerators=litert_accelerator.HardwareAccelerator.CPU,
        cpu_options=litert_cpu.CpuOptions(num_threads=num_threads or 0,
                                          xnnpack_weight_cache_path=packed_weights))
    self._model = litert_compiled.CompiledModel.from_file(path, environment=_environment(),
                                                          options=options)
    self._inputs = self._model.create_input_buffers(0)
    self._outputs = self._model.create_output_buffers(0)
    (detail,) = self._model.get_input_tensor_details(self._model.get_signature_list().popitem()[0]
                                                     ).values()
    self._rows = int(detail["shape"][0])  # a fixed batch is only ever fed whole

  def __call__(self, x: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """The model's output [n, ...] for x [n, ...], whose batch dimension it resizes to n."""
    if self._rows != len(x):
      self._model.resize_input_tensor(0, list(x.shape))
      self._inputs = self._model.create_input_buffers(0)
      self._outputs = self._model.create_output_buffers(0)
      self._rows = len(x)
    self._inputs[0].write(np.ascontiguousarray(x))
    self._model.run_by_index(0, self._inputs, self._outputs)
    shape = self._outputs[0].get_tensor_details()["shape"]
    return self._outputs[0].read(int(np.prod(shape)), out_dtype).reshape(shape)


_ENVIRONMENT = None


def _environment():
  """One LiteRT environment for every compiled model of this process, for the CPU only.

  `Environment.create()` would look for NPU compiler plugins in the package and try each one
  at every model build (a few ms and a page of log each time; LiteRT's Python package has no
  log level yet: https://github.com/google-ai-edge/LiteRT/issues/7420); empty plugin and
  dispatch paths tell the native environment there are none.
  """
  global _ENVIRONMENT
  if _ENVIRONMENT is None:
    runtime_path = os.path.dirname(os.path.abspath(litert_environment.__file__))
    _ENVIRONMENT = litert_environment.Environment(
        litert_environment._env.CreateEnvironment(  # pylint: disable=protected-access
            runtime_path=runtime_path, compiler_plugin_path="", dispatch_library_path=""),
        litert_environment.EnvironmentOptions(runtime_path=runtime_path))
  return _ENVIRONMENT


@functools.cache  # read from the package metadata once, not at every specialist switch
def _litert_version() -> str:
  """The installed ai-edge-litert version: packed weights are kept per version."""
  return importlib.metadata.version("ai-edge-litert")


def _quantization(detail: dict) -> tuple[str, float, int]:
  """(dtype name, scale, zero point) of a tensor; ("float32", 0.0, 0) for a float one."""
  scale, zero_point = detail["quantization"]
  return np.dtype(detail["dtype"]).name, float(scale), int(zero_point)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
  """x as the input tensor's dtype: float as is; int8/uint8 with its quantization parameters."""
  dtype = np.dtype(detail["dtype"])
  if np.issubdtype(dtype, np.floating):
    return x.astype(dtype, copy=False)
  if x.dtype == dtype:  # a trunk's raw features, whose parameters TwoStageLite._check matched
    return x
  scale, zero_point = detail["quantization"]
  info = np.iinfo(dtype)
  return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
  """Output as float32 logits: quantized outputs scaled back with their parameters."""
  if np.issubdtype(y.dtype, np.floating):
    return y.astype(np.float32)
  scale, zero_point = detail["quantization"]
  return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
