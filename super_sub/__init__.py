"""super-sub: a generalist routes each image to its superclass's specialist.

Importing `super_sub` stays light (numpy only) so the edge runtime works without
TensorFlow. TFDS builders are registered by `import super_sub.datasets`.
"""

from super_sub.hierarchy import Hierarchy, HierarchyError, Subclass, Superclass, load as load_hierarchy

__version__ = "0.1.0"
__all__ = ["Hierarchy", "HierarchyError", "Subclass", "Superclass", "load_hierarchy"]
