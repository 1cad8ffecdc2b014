"""tf.distribute strategies by name, and a CPU split to try them without accelerators."""

from __future__ import annotations

import tensorflow as tf

from super_sub.training.config import STRATEGIES


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (see STRATEGIES)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":  # Reads the cluster from the TF_CONFIG environment variable.
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def split_cpu(num_devices: int) -> None:
  """Splits the CPU into `num_devices` logical devices (before TensorFlow starts using it)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
