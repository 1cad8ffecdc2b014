"""super-sub's internals: not public API, may change without notice.

  compat   the one choice of Keras (tf_keras)
  files    atomic writes, file-name-safe names, folders super-sub owns
  cli      the start-up of the absl entry points
  native_logs  hides TensorFlow's and LiteRT's C++ start-up lines on a command's stderr
"""
