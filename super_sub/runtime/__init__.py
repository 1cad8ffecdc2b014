"""The edge runtime: runs a `tflite/` bundle with numpy, ai-edge-litert and Pillow, no TensorFlow.

  runtime = super_sub.runtime.TwoStageLite("export/tflite")
  out = runtime.predict(super_sub.runtime.load_images(["shoe.jpg"], runtime.input_shape,
                                                      runtime.framing))

  predictor  `TwoStageLite`: super_sub.routing.core over LiteRT interpreters; `LiteModel`, one
             interpreter (float inputs in, float32 outputs out, any batch size)
  disk_cache rebuilt specialists kept as verified files, so a switch maps one (`cache_dir`),
             and LiteRT's packed weights beside them (`packed_weights`)
  fusion     a trunk and its router head as one interpreter
  classify   image files and folders in, one answer (probabilities named) or one error per
             image out: super-sub-predict's batch

The bundle format itself (writing, verified loading, deltas) is super_sub.formats', which the
exporter shares (docs/bundle_format.md); its names are re-exported here. Images go in through
super_sub.data.images (`load_images`).
"""

from super_sub.data.images import ImageError, load_images
from super_sub.formats.bundle_loader import Bundle, find_bundle, load_bundle
from super_sub.formats.bundle_writer import write_tflite_bundle
from super_sub.formats.delta import apply_delta, make_delta
from super_sub.formats.errors import BundleError, DeltaError
from super_sub.runtime.predictor import LiteModel, TwoStageLite

__all__ = [
    # running a bundle
    "TwoStageLite", "LiteModel", "load_images", "load_bundle", "find_bundle", "Bundle",
    # writing one (the exporter) and its deltas
    "write_tflite_bundle", "make_delta", "apply_delta",
    # errors
    "BundleError", "DeltaError", "ImageError",
]
