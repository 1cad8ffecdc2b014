"""The file formats the trainer, the exporter and the edge runtime share (no TensorFlow, ever).

  errors          DeltaError, BundleError
  flatbuffer      TFLite flatbuffers parsed and packed byte for byte (`parse_model`, `pack_model`)
  encodings       the difference stream's lossless encodings (sparse, dense, signed, factored)
  delta_arrays    a delta's .npz members, read and checked
  delta           `make_delta` / `apply_delta`: a specialist as a delta over the generalist
  fast_rebuild    `FastRebuild`: later rebuilds of one specialist by copying bytes
  manifest        a bundle's manifest.json and its checks
  bundle_writer   `write_tflite_bundle`
  bundle_loader   `load_bundle`, `find_bundle`, `Bundle`: every byte verified before use

The bundle layout, the manifest and the delta arrays are specified in docs/bundle_format.md.
Importing this package loads nothing; import the module you need.
"""
