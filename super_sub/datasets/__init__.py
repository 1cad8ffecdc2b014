"""super-sub's TFDS builders; importing this package registers them with TFDS.

The builders live in the repository's top-level `datasets/<name>/` folders (TFDS's
one-folder-per-dataset layout) and are installed here, as `super_sub.datasets.<name>`,
so that no top-level package called `datasets` is ever installed.

  import super_sub.datasets  # then: tfds.load("superclassed_synthetic")
  tfds build --imports=super_sub.datasets superclassed_synthetic
"""

# pylint: disable=unused-import
from super_sub.datasets.superclassed_fashion_mnist import superclassed_fashion_mnist_dataset_builder
from super_sub.datasets.superclassed_folder import superclassed_folder_dataset_builder
from super_sub.datasets.superclassed_imagenet import superclassed_imagenet_dataset_builder
from super_sub.datasets.superclassed_synthetic import superclassed_synthetic_dataset_builder
from super_sub.datasets.superclassed_tfds import superclassed_tfds_dataset_builder
