"""Training: one config, one run folder, Keras `fit` per stage, cheap specialists.

  config      `TrainConfig` (each field's flag help lives on the field), `load_config`
  run         `Run` (a model_dir opened once: config, dataset, hierarchy, stages, building
              and loading models); the model_dir's layout and `Stage`s are super_sub.runs'
  fit         `train`: flat, generalist (and its QAT stage), specialists; resumable
  deltas      specialists as sparse deltas over the generalist (budget, proximal L1, pinning)
  qat         the tfmot quantization-aware version of a classifier
  distribute  tf.distribute strategies by name

Importing this package loads nothing; import the module you need (they load TensorFlow).
"""
