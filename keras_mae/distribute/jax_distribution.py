"""Data and model parallel MAE training on JAX through `keras.distribution`.

`keras.distribution` places every variable and batch on a `DeviceMesh` and lets
XLA (GSPMD) insert the collectives, so the model and `fit` are unchanged:
create the model under `distribution.scope()` (or after `set_distribution`) and
call `fit` with the global batch size.

- `data_parallel()`: weights replicated, the batch split over all devices.
- `model_parallel(model_parallelism)`: a `(batch, model)` mesh; the attention
  and MLP kernels of every block (encoder and decoder) are sharded over the
  `model` axis Megatron-style (qkv and fc1 by output column, proj and fc2 by
  input row), everything else replicated, the batch split over `batch`.
- `initialize_multi_host(...)`: `jax.distributed.initialize` for several
  processes (one per host); call it first, before any JAX computation. Each
  process then feeds its own slice of the global batch (`process_shard`), and
  `fit` gets `batch_size = global_batch // jax.process_count()`.

Example (one host, all local devices):

```python
from keras_mae.distribute import jax_distribution
distribution = jax_distribution.model_parallel(model_parallelism=2)
with distribution.scope():
    mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_base_patch16")
    mae.compile(optimizer=keras.optimizers.AdamW(1e-4))
mae.fit(images, batch_size=256)
```
"""

import keras

# Weight paths are `block_3/qkv/kernel` (encoder) and `decoder/block_0/fc1/kernel`
# (decoder); `keras.distribution.LayoutMap` matches keys with `re.fullmatch`.
BLOCK = r"(decoder/)?block_\d+"


def mae_layout_map(device_mesh, model_axis="model"):
    """A `LayoutMap` sharding every block's attention and MLP over `model_axis`.

    Column-parallel qkv and fc1 (kernel `(in, out)` split by `out`, with their
    bias), row-parallel proj and fc2 (split by `in`, bias replicated): one
    all-reduce per sublayer, as Megatron-LM. Variables no key matches (norms,
    patch projection, tokens, position tables, decoder embed and head) are
    replicated.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with an axis `model_axis`.
        model_axis: str, the mesh axis that shards the kernels.

    Returns:
        `keras.distribution.LayoutMap`.
    """
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for column_parallel in ("qkv", "fc1"):
        layout_map[rf"{BLOCK}/{column_parallel}/kernel"] = (None, model_axis)
        layout_map[rf"{BLOCK}/{column_parallel}/bias"] = (model_axis,)
    for row_parallel in ("proj", "fc2"):
        layout_map[rf"{BLOCK}/{row_parallel}/kernel"] = (model_axis, None)
    return layout_map


def data_parallel(devices=None):
    """`keras.distribution.DataParallel` over `devices` (default: all of them)."""
    devices = devices or keras.distribution.list_devices()
    return keras.distribution.DataParallel(devices=devices)


def model_parallel(model_parallelism=2, devices=None):
    """`keras.distribution.ModelParallel` on a `(batch, model)` mesh.

    Args:
        model_parallelism: int, devices per model replica (the size of the
            `model` axis); must divide the device count, and the sharded
            widths (3 x hidden_dim, mlp width, hidden_dim) must be multiples of it.
        devices: list of device strings; default all (`keras.distribution.list_devices()`).

    Returns:
        `keras.distribution.ModelParallel` with `batch_dim_name="batch"`.
    """
    devices = devices or keras.distribution.list_devices()
    if model_parallelism < 1 or len(devices) % model_parallelism:
        raise ValueError(
            f"model_parallelism={model_parallelism} must divide the number of "
            f"devices ({len(devices)}); pick a divisor or pass `devices`."
        )
    mesh = keras.distribution.DeviceMesh(
        shape=(len(devices) // model_parallelism, model_parallelism),
        axis_names=("batch", "model"),
        devices=devices,
    )
    return keras.distribution.ModelParallel(
        layout_map=mae_layout_map(mesh, "model"), batch_dim_name="batch"
    )


def initialize_multi_host(coordinator_address=None, num_processes=None, process_id=None):
    """Join the processes of a multi-host job (`jax.distributed.initialize`).

    Call once per process before anything touches a device. On Cloud TPU and
    under SLURM or Open MPI the arguments can stay `None` (JAX reads them from
    the environment); elsewhere give the coordinator's `host:port`, the
    process count and this process's index. After it, `keras.distribution`
    sees the devices of every host.
    """
    import jax

    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def process_shard(array):
    """This process's contiguous slice of a global array (first axis).

    With several processes each feeds `fit` its own part of the data with
    `batch_size = global_batch // jax.process_count()`; every step then trains
    on `global_batch` images, an equal share from each process. With one
    process the array is returned as is.
    """
    import jax

    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return array
    size = len(array) // count
    return array[index * size : (index + 1) * size]


def make_distribution(kind, model_parallelism=2):
    """The distribution named by `examples/pretrain.py --distribution` (JAX).

    Args:
        kind: `"none"`, `"data_parallel"` or `"model_parallel"`.

    Returns:
        a `keras.distribution.Distribution`, or `None` for `"none"`.
    """
    if kind == "none":
        return None
    if kind == "data_parallel":
        return data_parallel()
    if kind == "model_parallel":
        return model_parallel(model_parallelism)
    raise ValueError(
        f"the JAX backend supports --distribution none, data_parallel or "
        f"model_parallel. Received: {kind!r}"
    )
