"""Bundles: a trained run as deployable files, the shared base stored once.

  export       `export(run, export_dir)`: saved_model/, tflite/ and manifest.json, atomically
  tflite       int8 TFLite conversion and its representative images
  saved_model  one SavedModel (base + sparse deltas) serving hard two-stage routing in-graph
  storage      file listing with checksums; storage as a + b N fp32 networks
  parity       the exported bundle against the Keras two-stage predictions

The `tflite/` format itself (writing and verified loading) is super_sub.runtime.bundle's.
Importing this package loads nothing; import the module you need (they load TensorFlow).
"""
