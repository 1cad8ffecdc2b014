"""The two-level label tree every part of super-sub shares, and its derivation from WordNet.

  tree      `Hierarchy` (validated, immutable), its JSON form, the shipped hierarchies,
            `format_tree` (the tree as text for a person)
  wordnet   WordNet 3.0 reader; superclasses from hypernym closures

Needs only numpy: the edge runtime reads hierarchies too.
"""

from super_sub.hierarchy.tree import (Hierarchy, HierarchyError, Subclass, Superclass, format_tree,
                                      from_groups, load_hierarchy, shipped_hierarchies)

__all__ = ["Hierarchy", "HierarchyError", "Subclass", "Superclass", "format_tree", "from_groups",
           "load_hierarchy", "shipped_hierarchies"]
