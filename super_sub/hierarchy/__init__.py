"""The two-level label tree every part of super-sub shares, and its derivation from WordNet.

  tree      `Hierarchy` (validated, immutable), its JSON form, the shipped hierarchies
  wordnet   WordNet 3.0 reader; superclasses from hypernym closures

Needs only numpy: the edge runtime reads hierarchies too.
"""

from super_sub.hierarchy.tree import (Hierarchy, HierarchyError, Subclass, Superclass, from_groups,
                                      load, shipped_hierarchies)

__all__ = ["Hierarchy", "HierarchyError", "Subclass", "Superclass", "from_groups", "load",
           "shipped_hierarchies"]
