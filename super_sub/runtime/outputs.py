"""Numpy pieces both two-stage routers share (Keras `routing.TwoStage`, LiteRT `TwoStageLite`)."""

from __future__ import annotations

import numpy as np

from super_sub import hierarchy as hierarchy_lib


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax of logits [N, C], computed in float64, returned as float32."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def assemble(parts, hierarchy: hierarchy_lib.Hierarchy) -> dict[str, np.ndarray]:
  """Joins per-batch (superclass, superclass_probs, label_probs) into the routers' output."""
  if not parts:  # no images: never call a model on an empty batch
    return {"superclass": np.zeros(0, np.int64),
            "superclass_probs": np.zeros((0, hierarchy.num_superclasses), np.float32),
            "label": np.zeros(0, np.int64),
            "label_probs": np.zeros((0, hierarchy.num_subclasses), np.float32)}
  supers, super_probs, label_probs = (np.concatenate(p) for p in zip(*parts))
  return {"superclass": supers.astype(np.int64),
          "superclass_probs": super_probs.astype(np.float32),
          "label": np.argmax(label_probs, axis=1).astype(np.int64),
          "label_probs": label_probs}
