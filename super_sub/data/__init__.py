"""From a TFDS dataset to model inputs.

  features   the features every super-sub TFDS dataset shares
  prepare    build a dataset and summarise it per superclass
  synthetic  the procedural shapes behind `superclassed_synthetic`
  images     the image contract: dtype, range, resize method, framing (numpy + Pillow, no
             TensorFlow)
  crops      random-resized and center crops that decode only their box (large images)
  pipeline   tf.data over TFDS: filter, decode, frame, cache or stream, shuffle, augment;
             targets per role

The dataset builders themselves live in `super_sub.datasets` (the repository's `datasets/`).
Importing this package loads nothing; import the module you need.
"""
