"""A run's flat network taken from another run (`--flat_from`), its outputs reordered.

The flat network sees every image and every subclass whatever the hierarchy: two runs of one
dataset that group its classes differently (the hand-made hierarchy, or hierarchies of K
groups learned from the flat network's own confusions) differ only in the order of its
outputs, the global subclass index (super_sub.hierarchy.tree). So a run may start from
another run's trained flat network instead of training its own: the backbone is copied as it
is, the head's columns are permuted to this run's class order (matched by class name), and
the generalist and specialists then train from it. Comparing hierarchies this way pairs them
on one flat network, and costs one flat training instead of one per hierarchy.
"""

from __future__ import annotations

from super_sub._internal.compat import keras
from super_sub.models import classifiers
from super_sub.training import run as run_lib


def check_source(source_dir: str) -> run_lib.Run:
  """The run `source_dir`, if its flat stage is finished: checked before anything is prepared
  or written.

  Raises:
    FileNotFoundError: source_dir is not a run.
    run_lib.RunMismatchError: its flat stage is unfinished.
  """
  source = run_lib.Run.open(source_dir)
  if not source.is_done(run_lib.FLAT):
    raise run_lib.RunMismatchError(
        f"--flat_from={source_dir}: {source.stage_dir(run_lib.FLAT)} holds no finished flat "
        "network; train it first (super-sub-train --stage=flat)")
  return source


def reordered_flat(source_dir: str, run: run_lib.Run) -> tuple[keras.Model, dict]:
  """(the flat model of `run` holding `source_dir`'s flat network, the source's metrics).

  Raises:
    FileNotFoundError: source_dir is not a run.
    run_lib.RunMismatchError: its flat stage is unfinished, or it is not a run of the same
      dataset, backbone and image size with the same class names; nothing is written.
  """
  source = check_source(source_dir)
  where = f"--flat_from={source_dir}"
  differ = [f"{key} {getattr(source.config, key)!r} there, {getattr(run.config, key)!r} here"
            for key in ("dataset", "backbone", "image_size", "framing")
            if getattr(source.config, key) != getattr(run.config, key)]
  if differ:
    raise run_lib.RunMismatchError(f"{where} is another network: {'; '.join(differ)}")
  theirs, ours = source.hierarchy.subclass_names, run.hierarchy.subclass_names
  if sorted(theirs) != sorted(ours):
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    raise run_lib.RunMismatchError(
        f"{where} classifies other classes: {missing or 'none'} only here, {extra or 'none'} "
        "only there; the flat network must know the same classes by the same names")
  order = [theirs.index(name) for name in ours]
  flat = source.load_model(run_lib.FLAT)
  model = run.build_model(run_lib.FLAT)
  classifiers.copy_backbone_weights(flat, model)
  kernel, bias = flat.layers[-1].get_weights()
  model.layers[-1].set_weights([kernel[:, order], bias[order]])
  return model, source.metrics(run_lib.FLAT)
