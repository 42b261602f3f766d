"""Distribution strategies by name, over ``tf.distribute`` (TensorFlow-specific).

    auto         MirroredStrategy when more than one GPU is visible, else the default strategy
    mirrored     MirroredStrategy over all GPUs, or over all logical CPU devices without GPUs
    multiworker  MultiWorkerMirroredStrategy, configured by the TF_CONFIG environment variable
    one_device   OneDeviceStrategy on the first GPU (or the CPU)
    default      TensorFlow's default (no-op) strategy

The global batch is the per-replica batch times ``strategy.num_replicas_in_sync``; Keras'
``fit`` divides the summed loss by the global batch, so the learning rate does not grow
with the replica count. ``split_logical_cpus(n)`` turns the CPU into ``n`` logical devices,
which lets MirroredStrategy be exercised without GPUs; it must run before TensorFlow
initialises its devices. ``make_strategy`` does it when ``DERMNET_LOGICAL_CPUS=n`` is set
(the tests use it; on a GPU machine leave it unset).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "one_device", "default")


def split_logical_cpus(count: int) -> None:
    """Expose the CPU as ``count`` logical devices (before any other TensorFlow use)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy called ``name`` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if os.environ.get("DERMNET_LOGICAL_CPUS"):
        split_logical_cpus(int(os.environ["DERMNET_LOGICAL_CPUS"]))
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker)")
        # Before anything initialises TensorFlow's runtime (listing devices does).
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes outputs, from ``TF_CONFIG``: no config or task type
    "chief" -> True; "worker" index 0 -> True when the cluster has no "chief" task; any
    other worker, evaluator or parameter server -> False."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    task_type = task.get("type")
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task_type == "worker" and int(task.get("index", 0)) == 0 and not has_chief


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    """One line for logs: strategy class and replica count."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # the class is CollectiveAllReduceStrategy
    else:
        name = type(strategy).__name__.lstrip("_").replace("DistributionStrategy", "Strategy")
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"


def enable_determinism() -> None:
    """Bit-identical repeats on one machine: TensorFlow's deterministic ops, and no Grappler
    graph rewrites. With op determinism alone, about 1 GAN training process in 10 on a
    2-core CPU ended a few ULPs away from the others from its first stage on (8 of 94
    smoke-run processes, whatever the thread counts or oneDNN setting; none of 34 with the
    rewrites off), which a GAN then amplifies. Costs the rewrites' speed-ups (fusions,
    layout changes); use it to debug or to test resumes."""
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
