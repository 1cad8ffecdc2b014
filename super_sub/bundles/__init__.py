"""Bundles: a trained run as deployable files, the shared base stored once.

  export       `export(run, export_dir)`: saved_model/, tflite/ and manifest.json, atomically
  tflite       int8 TFLite conversion and its representative images
  saved_model  one SavedModel (base + sparse deltas) serving hard two-stage routing in-graph
  storage      file listing with checksums; storage as a + b N fp32 networks

The `tflite/` format itself (writing and verified loading) is super_sub.formats' (shared with the
edge runtime; docs/bundle_format.md); the exported bundle's parity with Keras is
super_sub.parity's (it runs the bundle with the runtime).
Importing this package loads nothing; import the module you need (they load TensorFlow).
"""
