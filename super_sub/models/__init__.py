"""tf_keras models: backbones, the three classifier roles on them, and the shared trunk.

  backbones     small_resnet, small_resnet_wide, resnet18, resnet50, mobilenet_v2 as flat
                functional graphs named by stage (tfmot quantizes them)
  classifiers   flat / generalist / specialist heads, `ClassifierSpec`, `make_specialist`
  trunk         the first K stages every model shares, cut off as one trunk and tails

Importing this package loads nothing; import the module you need (they load TensorFlow).
"""

# The backbones build_backbone knows, here so that a config can be checked without TensorFlow.
BACKBONES = ("small_resnet", "small_resnet_wide", "resnet18", "resnet50", "mobilenet_v2")
