"""The two-stage algorithm, written once in numpy: every router runs it on its own models.

A generalist's logits pick superclasses; the specialists of the picked superclasses score
their subclasses. Within a batch the rows are grouped by routed superclass, so each
specialist runs once per batch on just its rows, and never on an empty group (on this stack
oneDNN's CPU Conv2D rejects a zero-row batch with InvalidArgumentError, as cuDNN's did in
tensorflow/tensorflow#14657). The Keras router
(`super_sub.routing.TwoStage`) and the LiteRT runtime (`super_sub.runtime.TwoStageLite`)
call `predict` and `oracle` with their own model-calling functions; the SavedModel's graph
(`super_sub.bundles.saved_model`) mirrors hard routing and is tested on the same cases.

Output of `predict` and `oracle`: a dict of numpy arrays over the N images,
  superclass [N] int64: the generalist's argmax (for `oracle`, the given superclasses);
  superclass_probs [N, S] float32: the generalist's softmax (for `oracle`, one-hot);
  label [N] int64: the predicted global subclass index, argmax of label_probs;
  label_probs [N, num_subclasses] float32, which depends on the routing:
    hard / oracle: P(subclass | routed superclass) in the routed superclass's columns and 0
      elsewhere (each row sums to 1; a one-subclass superclass gives its subclass 1; with
      dustbin specialists a row sums to 1 minus the dustbin's probability, and hard routing
      answers from the second superclass where the first one's specialist said "not mine");
    soft: P(superclass) * P(subclass | superclass) for each of the top-k superclasses, 0 for
      the others. Not renormalised, so a row sums to the top-k superclasses' total
      probability (<= 1): the product is the model's joint estimate and the lost mass says
      how much the truncation left out. The argmax is the same either way.
Needs only numpy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from super_sub.hierarchy import tree as hierarchy_lib

MODES = ("hard", "soft")
# What picks the superclasses (`router_logits`): the generalist's own probabilities, the flat
# network's (its subclass probabilities summed per superclass), their normalised product, or a
# router head's (a small network on the shared trunk, super_sub.models.router_head).
ROUTERS = ("generalist", "flat", "product", "head")

# (features [n, ...]) -> logits [n, C]; n >= 1.
Model = Callable[[np.ndarray], np.ndarray]
# (superclass, features [n, ...]) -> that specialist's logits [n, subclasses]; n >= 1.
Specialists = Callable[[int, np.ndarray], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax of logits [N, C], computed in float64, returned as float32."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def superclass_probs(label_probs: np.ndarray, hierarchy: hierarchy_lib.Hierarchy
                     ) -> np.ndarray:
  """P(superclass) [N, S] from P(subclass) [N, num_subclasses]: each superclass's columns
  summed (subclass columns are grouped by superclass, `hierarchy.superclass_offsets`)."""
  return np.add.reduceat(np.asarray(label_probs, np.float64), hierarchy.superclass_offsets[:-1],
                         axis=1).astype(np.float32)


def router_logits(router: str, generalist_logits: np.ndarray | None,
                  flat_logits: np.ndarray | None, hierarchy: hierarchy_lib.Hierarchy,
                  head_logits: np.ndarray | None = None) -> np.ndarray:
  """Superclass logits [n, S] whose softmax is the chosen router's P(superclass).

  "generalist": the generalist's logits as they are; "head": the router head's, likewise.
  "flat": log of the flat network's subclass probabilities summed per superclass. "product":
  the generalist's log-probabilities plus the flat network's, so the softmax is their
  normalised product (two experts that must agree; each one's confident mistakes are outvoted
  by the other).

  Raises:
    ValueError: an unknown router, or one without the logits it needs.
  """
  check_router(router, has_generalist=generalist_logits is not None,
               has_flat=flat_logits is not None, has_head=head_logits is not None)
  if router in ("generalist", "head"):
    return np.asarray(generalist_logits if router == "generalist" else head_logits, np.float32)
  tiny = np.finfo(np.float32).tiny  # log(0) would make -inf and, summed, NaN
  flat_log = np.log(np.maximum(superclass_probs(softmax(flat_logits), hierarchy), tiny))
  if router == "flat":
    return flat_log.astype(np.float32)
  gen_log = np.log(np.maximum(softmax(generalist_logits), tiny))
  return (gen_log + flat_log).astype(np.float32)


def check_router(router: str, has_generalist: bool = True, has_flat: bool = True,
                 has_head: bool = True) -> None:
  """Raises ValueError for an unknown router, or one whose network is missing."""
  if router not in ROUTERS:
    raise ValueError(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}")
  needs = {"generalist": (has_generalist,), "flat": (has_flat,),
           "product": (has_generalist, has_flat), "head": (has_head,)}[router]
  if not all(needs):
    network = {"product": "generalist and flat", "head": "router head (--router_head)"
               }.get(router, router)
    raise ValueError(f"router {router!r} needs the {network} network's logits")


def check_options(mode: str, k: int, batch_size: int) -> None:
  """Raises ValueError naming the bad routing option."""
  if mode not in MODES:
    raise ValueError(f"unknown routing mode {mode!r}; choose one of {', '.join(MODES)}")
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
    raise ValueError(f"k must be a positive integer; got {k!r}")
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or (
      batch_size < 1):
    raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


def top_superclasses(super_probs: np.ndarray, mode: str, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Which superclasses each row goes to, and with what weight.

  Returns:
    order [n, k'] int: the k' most probable superclasses, most probable first (ties: the lower
      index first, as `np.argmax` and `tf.argmax` break them); k' = 1 for hard routing, else
      min(k, S).
    weights [n, k'] float32: 1 for hard routing, else the superclasses' probabilities.
  """
  k = 1 if mode == "hard" else min(int(k), super_probs.shape[1])
  order = np.argsort(-super_probs, axis=1, kind="stable")[:, :k]
  weights = (np.ones(order.shape, np.float32) if mode == "hard"
             else np.take_along_axis(super_probs, order, axis=1).astype(np.float32))
  return order, weights


def route(x: np.ndarray, order: np.ndarray, weights: np.ndarray,
          hierarchy: hierarchy_lib.Hierarchy, specialists: Specialists,
          first: Callable[[int], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The routed specialists' answers.

  Each routed superclass's specialist runs once, on just the rows routed to it. `first`
  (optional) says which superclasses to visit before the others (the runtime visits cached
  specialists first, so a rebuild does not evict one that this batch still needs).

  A specialist with one output more than its superclass has subclasses has a dustbin: its last
  output is "not mine" (trained on other superclasses' images, `--dustbin`). Its subclass
  columns are used as they are, not renormalised, so the dustbin's mass lowers the row's
  scores for that superclass.

  Returns:
    label_probs [n, num_subclasses]: the sum over j of weights[:, j] * P(sub | order[:, j]).
    rejected [n] bool: a routed specialist gave its dustbin the largest probability.

  Raises:
    ValueError: a specialist whose output width is neither its subclass count nor one more.
  """
  h = hierarchy
  label_probs = np.zeros((len(x), h.num_subclasses), np.float32)
  rejected = np.zeros(len(x), bool)
  routed = [int(s) for s in np.unique(order)]
  if first is not None:
    routed.sort(key=lambda sup: not first(sup))
  for sup in routed:
    rows, slot = np.nonzero(order == sup)  # each superclass appears at most once per row
    lo, hi = h.superclass_offsets[sup], h.superclass_offsets[sup + 1]
    if h.has_specialist(sup):
      conditional = softmax(specialists(sup, x[rows]))
      if conditional.shape[1] not in (hi - lo, hi - lo + 1):
        raise ValueError(f"the specialist of superclass {sup} ({h.superclasses[sup].name!r}) "
                         f"gave {conditional.shape[1]} outputs; expected {hi - lo} subclasses "
                         f"(or {hi - lo + 1} with a dustbin)")
      if conditional.shape[1] > hi - lo:
        rejected[rows] |= conditional.argmax(axis=1) == hi - lo
        conditional = conditional[:, :hi - lo]
    else:
      conditional = np.ones((len(rows), 1), np.float32)
    label_probs[rows, lo:hi] = weights[rows, slot][:, None] * conditional
  return label_probs, rejected


def predict(images: np.ndarray, hierarchy: hierarchy_lib.Hierarchy, generalist: Model | None,
            specialists: Specialists, mode: str = "hard", k: int = 2, batch_size: int = 256,
            trunk: Model | None = None,
            first: Callable[[int], bool] | None = None) -> dict[str, np.ndarray]:
  """Two-stage classification of model-ready images (see the module docstring's output).

  Args:
    images: [N, ...] as the models take them (`super_sub.data.images.to_model_input`).
    hierarchy: the label tree the models were trained on.
    generalist: images (or the trunk's features) -> superclass logits; None when the trunk
      also routes (a router head inside the trunk's interpreter, super_sub.runtime.fusion).
    specialists: (superclass, images or features) -> that specialist's subclass logits (and,
      with a dustbin, a last "not mine" logit; see `route`).
    mode: "hard" (the argmax superclass's specialist; where a dustbin specialist answers "not
      mine", the second superclass's specialist answers instead, with P 1 for that
      superclass) or "soft" (the top-k superclasses' specialists, subclasses scored by
      P(superclass) * P(subclass | superclass)).
    k: superclasses soft routing follows (capped at the superclass count); hard ignores it.
    batch_size: images per generalist call; each specialist runs at most once per batch.
    trunk: optional stages every model shares, run once per image before the others; with
      generalist None, it gives (features, superclass logits).
    first: as in `route`.

  Raises:
    ValueError: a bad mode, k or batch_size, or neither a generalist nor a trunk.
  """
  check_options(mode, k, batch_size)
  if generalist is None and trunk is None:
    raise ValueError("two-stage prediction needs a generalist, or a trunk that routes")
  parts = []
  for start in range(0, len(images), batch_size):
    x = images[start:start + batch_size]
    if trunk is not None:
      x = trunk(x)
    if generalist is None:
      x, logits = x
    else:
      logits = generalist(x)
    super_probs = softmax(logits)
    order, weights = top_superclasses(super_probs, mode, k)
    label_probs, rejected = route(x, order, weights, hierarchy, specialists, first)
    if mode == "hard" and rejected.any() and super_probs.shape[1] > 1:
      rows = np.nonzero(rejected)[0]
      second = np.argsort(-super_probs[rows], axis=1, kind="stable")[:, 1:2]
      label_probs[rows], _ = route(x[rows], second, np.ones(second.shape, np.float32),
                                   hierarchy, specialists, first)
    parts.append((order[:, 0], super_probs, label_probs))
  return assemble(parts, hierarchy)


def oracle(images: np.ndarray, superclasses: np.ndarray, hierarchy: hierarchy_lib.Hierarchy,
           specialists: Specialists, batch_size: int = 256,
           trunk: Model | None = None) -> dict[str, np.ndarray]:
  """Routes each image to the specialist of its given (e.g. true) superclass; no generalist.

  Measures the specialists alone: its label accuracy bounds hard routing's from above.

  Raises:
    ValueError: superclasses of the wrong shape, type or range, or a bad batch_size.
  """
  check_options("hard", 1, batch_size)
  supers = np.asarray(superclasses)
  num = hierarchy.num_superclasses
  if supers.shape != (len(images),) or not np.issubdtype(supers.dtype, np.integer):
    raise ValueError(f"superclasses must be an integer array of shape ({len(images)},); got "
                     f"{supers.dtype} {supers.shape}")
  if supers.size and (supers.min() < 0 or supers.max() >= num):
    raise ValueError(f"superclasses must lie in [0, {num}); got values in "
                     f"[{supers.min()}, {supers.max()}]")
  parts = []
  for start in range(0, len(images), batch_size):
    x = images[start:start + batch_size]
    if trunk is not None:
      x = trunk(x)
    s = supers[start:start + batch_size].astype(np.int64)
    one_hot = np.eye(num, dtype=np.float32)[s]
    parts.append((s, one_hot, route(x, s[:, None], np.ones((len(s), 1), np.float32),
                                    hierarchy, specialists)[0]))
  return assemble(parts, hierarchy)


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
