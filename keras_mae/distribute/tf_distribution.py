"""Data-parallel MAE training on TensorFlow through `tf.distribute`.

Keras 3 runs `fit` under a `tf.distribute` strategy unchanged: create and
compile the model inside `strategy.scope()` and pass the global batch size;
Keras splits each batch over the replicas, and the optimizer all-reduces the
gradients (`MaskedAutoencoder.compute_loss` divides by the replica count as
Keras losses do, so the update equals one device's).

- `"mirrored"`: `MirroredStrategy`, all GPUs of one machine (or the given
  devices; on CPUs gradients are reduced on one device, as NCCL needs GPUs).
- `"multi_worker"`: `MultiWorkerMirroredStrategy`, several machines, each
  started with its own `TF_CONFIG` environment variable (cluster + task).
- `"tpu"`: `TPUStrategy` on a Cloud TPU (`tpu` names it; `None` = local).

Example:

```python
from keras_mae.distribute import tf_distribution
strategy = tf_distribution.make_strategy("mirrored")
with strategy.scope():
    mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_base_patch16")
    mae.compile(optimizer=keras.optimizers.AdamW(1e-4))
mae.fit(dataset)  # batches of the global batch size
```
"""

import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Make `num_devices` logical CPU devices (for tests and CPU-only machines).

    Must run before TensorFlow initialises its devices (before any op).
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def make_strategy(kind, devices=None, tpu=None):
    """The `tf.distribute.Strategy` named `kind`.

    Args:
        kind: one of `"none"` (the default strategy), `"mirrored"`,
            `"multi_worker"`, `"tpu"`.
        devices: for `"mirrored"`, device names; default all GPUs (or the CPU
            when there is none).
        tpu: for `"tpu"`, the TPU name or address (`None`: the local TPU).

    Returns:
        `tf.distribute.Strategy`.
    """
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if devices is None and gpus:
            return tf.distribute.MirroredStrategy()
        if devices is None:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        cross_device_ops = None
        if not any("GPU" in name.upper() for name in devices):
            cross_device_ops = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"the TensorFlow backend supports --distribution {', '.join(STRATEGIES)}. "
        f"Received: {kind!r}"
    )


def distribute_dataset(strategy, dataset):
    """Shard a `tf.data.Dataset` of global batches by data across workers.

    `fit` does this itself; use it when iterating the dataset by hand.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))
