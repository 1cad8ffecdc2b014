"""tf.distribute strategies by name, the multi-worker roles, and a CPU split to try them
without accelerators."""

from __future__ import annotations

import json
import os

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


_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def worker_task() -> tuple[str, bool]:
  """(this process's task, e.g. "worker_1", whether it is the chief) from TF_CONFIG.

  The chief is the task of type "chief", or worker 0 in a cluster without one (TensorFlow's
  rule). Under --strategy=multi_worker only the chief writes the run's model_dir; the other
  workers train in private folders (Keras's multi-worker convention).

  Raises:
    ValueError: TF_CONFIG is unset, does not parse, or does not describe this task in a
      cluster with a chief; the message shows what is expected.
  """
  raw = os.environ.get("TF_CONFIG")
  expected = f"expected, e.g., TF_CONFIG='{_TF_CONFIG_EXAMPLE}'"
  if not raw:
    raise ValueError(f"--strategy=multi_worker reads the cluster from the TF_CONFIG environment "
                     f"variable, which is not set; {expected}")
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG does not parse as JSON ({e}); {expected}") from None
  cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
  task = tf_config.get("task") if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not all(
      isinstance(v, list) and v and all(isinstance(a, str) for a in v) for v in cluster.values()):
    raise ValueError(f"TF_CONFIG's 'cluster' must map task types to lists of host:port "
                     f"addresses; got {cluster!r:.200}; {expected}")
  if not ("chief" in cluster or "worker" in cluster):
    raise ValueError(f"TF_CONFIG's cluster has no chief: it needs a 'chief' task or 'worker' "
                     f"tasks (worker 0 is then the chief); got types {sorted(cluster)}")
  if (not isinstance(task, dict) or task.get("type") not in cluster
      or not isinstance(task.get("index"), int)
      or not 0 <= task["index"] < len(cluster[task["type"]])):
    raise ValueError(f"TF_CONFIG's 'task' must name this process's type and index in the "
                     f"cluster ({ {k: len(v) for k, v in cluster.items()} }); got {task!r:.200}")
  chief = task["type"] == "chief" or ("chief" not in cluster and task["type"] == "worker"
                                      and task["index"] == 0)
  return f"{task['type']}_{task['index']}", chief


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` sharded across workers by elements, not files: a TFDS split may have fewer files
  than there are workers (FILE sharding then fails on the first step)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return ds.with_options(options)
