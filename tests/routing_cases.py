"""Hand-computed two-stage cases that every router is tested on: the numpy core, the Keras
`TwoStage`, the SavedModel's graph function (and, through the core, the LiteRT runtime).

Superclass A = {a0, a1}, B = {b0, b1, b2}, C = {c0}: global subclass indices 0..5. Image i is
the one-hot vector e_i; each model's class probabilities for it are row i of its table.
"""

import numpy as np

from super_sub import hierarchy

TOY = hierarchy.from_groups("toy", [("A", [("a0", 0), ("a1", 1)]),
                                    ("B", [("b0", 2), ("b1", 3), ("b2", 4)]),
                                    ("C", [("c0", 5)])])
NUM_IMAGES = 4
GENERALIST = [[0.50, 0.40, 0.10],   # img0: A first, B close behind
              [0.10, 0.20, 0.70],   # img1: C (one subclass, no specialist)
              [0.30, 0.60, 0.10],   # img2: B
              [0.20, 0.05, 0.75]]   # img3: C
SPEC_A = [[0.55, 0.45], [0.50, 0.50], [0.20, 0.80], [0.60, 0.40]]
SPEC_B = [[0.90, 0.05, 0.05], [0.20, 0.30, 0.50], [0.10, 0.10, 0.80], [1 / 3, 1 / 3, 1 / 3]]
SPECIALISTS = {0: SPEC_A, 1: SPEC_B}

# Hard routing: img0 -> A: a0 (0.55); img1 -> C: c0; img2 -> B: b2 (0.8); img3 -> C: c0.
HARD_SUPERCLASS = [0, 2, 1, 2]
HARD_LABEL = [0, 5, 4, 5]
HARD_LABEL_PROBS = [[0.55, 0.45, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0, 1],
                    [0, 0, 0.10, 0.10, 0.80, 0],
                    [0, 0, 0, 0, 0, 1]]
# Soft routing, k = 2: img0: A 0.5 x (0.55, 0.45), B 0.4 x (0.9, 0.05, 0.05): b0 = 0.36 beats
# a0 = 0.275, whereas hard routing answered a0.
SOFT2_LABEL = [2, 5, 4, 5]
SOFT2_LABEL_PROBS = [[0.275, 0.225, 0.36, 0.02, 0.02, 0],
                     [0, 0, 0.04, 0.06, 0.10, 0.70],         # C 0.7, B 0.2
                     [0.06, 0.24, 0.06, 0.06, 0.48, 0],      # B 0.6, A 0.3
                     [0.12, 0.08, 0, 0, 0, 0.75]]            # C 0.75, A 0.2
# Oracle routing by the true superclasses (B, A, A, C): no generalist.
ORACLE_SUPERCLASSES = [1, 0, 0, 2]
ORACLE_LABEL_PROBS = [[0, 0, 0.90, 0.05, 0.05, 0],
                      [0.50, 0.50, 0, 0, 0, 0],
                      [0.20, 0.80, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0, 1]]

# A flat network over the six subclasses, for the "flat" and "product" routers.
FLAT = [[0.10, 0.10, 0.50, 0.10, 0.10, 0.10],   # img0: A 0.2, B 0.7, C 0.1
        [0.05, 0.05, 0.10, 0.10, 0.10, 0.60],   # img1: A 0.1, B 0.3, C 0.6
        [0.30, 0.25, 0.15, 0.10, 0.10, 0.10],   # img2: A 0.55, B 0.35, C 0.1
        [0.10, 0.10, 0.10, 0.10, 0.10, 0.50]]   # img3: A 0.2, B 0.3, C 0.5
FLAT_SUPERCLASS_PROBS = [[0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.55, 0.35, 0.1], [0.2, 0.3, 0.5]]
# Generalist x flat, normalised: img0 (0.10, 0.28, 0.01) / 0.39; img1 (0.01, 0.06, 0.42) / 0.49;
# img2 (0.165, 0.21, 0.01) / 0.385; img3 (0.04, 0.015, 0.375) / 0.43.
PRODUCT_SUPERCLASS_PROBS = [[0.10 / 0.39, 0.28 / 0.39, 0.01 / 0.39],
                            [0.01 / 0.49, 0.06 / 0.49, 0.42 / 0.49],
                            [0.165 / 0.385, 0.21 / 0.385, 0.01 / 0.385],
                            [0.04 / 0.43, 0.015 / 0.43, 0.375 / 0.43]]
# Hard routing by the flat router: img0 -> B: b0 (0.9); img2 -> A: a1 (0.8). By the product:
# img0 -> B: b0, img2 -> B: b2 (the generalist's 0.6 for B outweighs the flat's 0.55 for A).
FLAT_HARD_LABEL = [2, 5, 1, 5]
PRODUCT_HARD_LABEL = [2, 5, 4, 5]

# A dustbin specialist for A: its last column is "not mine". img0: not mine wins, so hard
# routing answers from B, the generalist's second choice (b0, 0.9). Soft k=2 scores A's
# subclasses with the dustbin's mass left out: img0 A 0.5 x (0.2, 0.2), B 0.4 x (0.9, ...).
SPEC_A_DUSTBIN = [[0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
DUSTBIN_HARD_LABEL = [2, 5, 4, 5]
DUSTBIN_HARD_LABEL_PROBS = [[0, 0, 0.90, 0.05, 0.05, 0],
                            [0, 0, 0, 0, 0, 1],
                            [0, 0, 0.10, 0.10, 0.80, 0],
                            [0, 0, 0, 0, 0, 1]]
DUSTBIN_SOFT2_LABEL_PROBS = [[0.10, 0.10, 0.36, 0.02, 0.02, 0],
                             [0, 0, 0.04, 0.06, 0.10, 0.70],
                             [0.15, 0.09, 0.06, 0.06, 0.48, 0],
                             [0.02, 0.02, 0, 0, 0, 0.75]]


def images(indices=range(NUM_IMAGES)) -> np.ndarray:
  """The one-hot images e_i, shape [n, 1, 1, NUM_IMAGES]."""
  return np.eye(NUM_IMAGES, dtype=np.float32)[list(indices)].reshape(-1, 1, 1, NUM_IMAGES)


def logits(table, x: np.ndarray) -> np.ndarray:
  """Logits whose softmax is row i of `table` for image e_i (numpy, for the core)."""
  rows = np.asarray(x).reshape(len(x), NUM_IMAGES).argmax(axis=1)
  return np.log(np.asarray(table, np.float64)[rows])
