"""The edge runtime: runs a `tflite/` bundle with numpy, ai-edge-litert and Pillow, no TensorFlow.

  runtime = super_sub.runtime.TwoStageLite("export/tflite")
  out = runtime.predict(super_sub.runtime.load_images(["shoe.jpg"], runtime.input_shape,
                                                      runtime.framing))

  bundle     the `tflite/` bundle format: writing (the exporter calls it) and verified loading
  delta      a specialist as a lossless byte delta over the generalist's .tflite
  predictor  `TwoStageLite`: super_sub.routing.core over LiteRT interpreters
  disk_cache rebuilt specialists kept as verified files, so a switch maps one (`cache_dir`),
             and LiteRT's packed weights beside them (`packed_weights`)
  classify   image files and folders in, one answer (probabilities named) or one error per
             image out: super-sub-predict's batch

The bundle writer lives here too (it needs no TensorFlow either), so the exporter and the runtime
share one definition of the format. Images go in through super_sub.data.images (`load_images`).
"""

from super_sub.runtime.bundle import (Bundle, BundleError, find_bundle, load_bundle,
                                      write_tflite_bundle)
from super_sub.runtime.delta import DeltaError, apply_delta, make_delta
from super_sub.data.images import ImageError, load_images
from super_sub.runtime.predictor import TwoStageLite

__all__ = [
    # running a bundle
    "TwoStageLite", "load_images", "load_bundle", "find_bundle", "Bundle",
    # writing one (the exporter) and its deltas
    "write_tflite_bundle", "make_delta", "apply_delta",
    # errors
    "BundleError", "DeltaError", "ImageError",
]
