"""super-sub: a generalist routes each image to its superclass's specialist.

The public API, grouped by use. Names load lazily: `import super_sub` imports numpy only, so
the edge runtime works where TensorFlow is absent; a name that needs TensorFlow loads it when
first used.

  errors      SuperSubError (the base of every error below: a user's mistake, one line and
              exit status 2, or 1 where the command could not finish)
  keras       keras: the Keras every super-sub model is built with (tf_keras, Keras 2, which
              tfmot needs); use it for models you pass to super-sub
  hierarchy   Hierarchy, HierarchyError, Subclass, Superclass, load_hierarchy,
              shipped_hierarchies, derive_hierarchy (WordNet), read_wordnet, WordNetError,
              learn_hierarchy (from confusions), LearnError
  datasets    prepare_dataset (a TFDS name, folder:<PATH>, tfds:<name>), summarize_dataset,
              DatasetError, InputSpec, make_dataset
              (TFDS builders register with `import super_sub.datasets`)
  training    TrainConfig, train, Run, Stage, load_config; ConfigError, RunMismatchError,
              NonFiniteError, FolderLockedError
  evaluation  evaluate, TwoStage, ROUTERS
  export      export, tflite_parity, storage_fit, OutputDirError
  runtime     TwoStageLite, load_images, load_bundle, BundleError, ImageError, DeltaError
  analysis    analyze, write_report, Predictions, read_predictions, AnalysisError,
              write_findings

The pipeline's packages, in the order an image travels: hierarchy -> data -> models ->
training -> routing -> bundles -> formats -> runtime -> analysis (README: "What is in the box").
"""

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    # errors
    "SuperSubError": ("super_sub.errors", "SuperSubError"),
    "keras": ("super_sub._internal.compat", "keras"),
    # hierarchy
    "Hierarchy": ("super_sub.hierarchy.tree", "Hierarchy"),
    "HierarchyError": ("super_sub.hierarchy.tree", "HierarchyError"),
    "Subclass": ("super_sub.hierarchy.tree", "Subclass"),
    "Superclass": ("super_sub.hierarchy.tree", "Superclass"),
    "load_hierarchy": ("super_sub.hierarchy.tree", "load_hierarchy"),
    "shipped_hierarchies": ("super_sub.hierarchy.tree", "shipped_hierarchies"),
    "derive_hierarchy": ("super_sub.hierarchy.wordnet", "derive_hierarchy"),
    "read_wordnet": ("super_sub.hierarchy.wordnet", "read_wordnet"),
    "WordNetError": ("super_sub.hierarchy.wordnet", "WordNetError"),
    "learn_hierarchy": ("super_sub.hierarchy.learned", "learn_hierarchy"),
    "LearnError": ("super_sub.hierarchy.learned", "LearnError"),
    # datasets
    "prepare_dataset": ("super_sub.data.prepare", "prepare_dataset"),
    "summarize_dataset": ("super_sub.data.prepare", "summarize_dataset"),
    "DatasetError": ("super_sub.data.sources", "DatasetError"),
    "InputSpec": ("super_sub.data.pipeline", "InputSpec"),
    "make_dataset": ("super_sub.data.pipeline", "make_dataset"),
    # training
    "TrainConfig": ("super_sub.training.config", "TrainConfig"),
    "load_config": ("super_sub.training.config", "load_config"),
    "train": ("super_sub.training.fit", "train"),
    "Run": ("super_sub.training.run", "Run"),
    "Stage": ("super_sub.runs", "Stage"),
    "ConfigError": ("super_sub.training.config", "ConfigError"),
    "RunMismatchError": ("super_sub.training.run", "RunMismatchError"),
    "NonFiniteError": ("super_sub.training.guards", "NonFiniteError"),
    "FolderLockedError": ("super_sub.errors", "FolderLockedError"),
    # evaluation
    "evaluate": ("super_sub.evaluation", "evaluate"),
    "TwoStage": ("super_sub.routing.two_stage", "TwoStage"),
    "ROUTERS": ("super_sub.routing.core", "ROUTERS"),
    # export
    "export": ("super_sub.bundles.export", "export"),
    "tflite_parity": ("super_sub.parity", "tflite_parity"),
    "storage_fit": ("super_sub.bundles.storage", "storage_fit"),
    "OutputDirError": ("super_sub.errors", "OutputDirError"),
    # runtime
    "TwoStageLite": ("super_sub.runtime.predictor", "TwoStageLite"),
    "load_images": ("super_sub.data.images", "load_images"),
    "load_bundle": ("super_sub.formats.bundle_loader", "load_bundle"),
    "BundleError": ("super_sub.formats.errors", "BundleError"),
    "ImageError": ("super_sub.data.images", "ImageError"),
    "DeltaError": ("super_sub.formats.errors", "DeltaError"),
    # analysis
    "analyze": ("super_sub.analysis.report", "analyze"),
    "write_report": ("super_sub.analysis.writer", "write_report"),
    "Predictions": ("super_sub.analysis.predictions", "Predictions"),
    "read_predictions": ("super_sub.analysis.loading", "read_predictions"),
    "AnalysisError": ("super_sub.analysis.predictions", "AnalysisError"),
    "write_findings": ("super_sub.analysis.findings", "write_findings"),
}

__all__ = sorted(_API)


def __getattr__(name):
  try:
    module, attribute = _API[name]
  except KeyError:
    raise AttributeError(f"module 'super_sub' has no attribute {name!r}") from None
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(_API))
