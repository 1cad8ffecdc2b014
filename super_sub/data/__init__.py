"""From a TFDS dataset to model inputs.

  features   the features every super-sub TFDS dataset shares
  sources    what --dataset may name: a TFDS name, folder:<PATH>, tfds:<name> (no TensorFlow)
  folders    your own image folders checked and read into a plan of labelled files
  encoding   how builders store an image file: kept, or re-encoded in the dataset's encoding
  prepare    open and build a dataset, and summarise it per superclass
  synthetic  the procedural shapes behind `superclassed_synthetic`
  images     the image contract: dtype, range, resize method, framing (numpy + Pillow, no
             TensorFlow)
  crops      random-resized and center crops that decode only their box (large images)
  pipeline   tf.data over TFDS: filter, decode, frame, cache or stream, shuffle, augment;
             targets per role

The dataset builders themselves live in `super_sub.datasets` (the repository's `datasets/`).
Importing this package loads nothing; import the module you need.
"""
