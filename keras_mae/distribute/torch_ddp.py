"""Data-parallel MAE training on the torch backend with `DistributedDataParallel`.

Keras has no torch distribution for `fit`, so this module provides the loop:
one process per device, started by `torchrun`; every rank holds a full model
wrapped in `torch.nn.parallel.DistributedDataParallel` (which broadcasts rank
0's weights at the start and averages gradients during `backward`), reads
only its own slice of every global batch, and applies the Keras optimizer to
the averaged gradients, so all ranks keep identical weights. Process groups
use NCCL on GPUs and gloo on CPUs.

Launch (2 processes on this machine; one per GPU on a GPU machine):
    KERAS_BACKEND=torch torchrun --nproc_per_node=2 examples/pretrain.py \
        --distribution ddp ...

In a script:
>>> from keras_mae.distribute import torch_ddp
>>> context = torch_ddp.init_process_group()
>>> keras.utils.set_random_seed(0)
>>> mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch4")
>>> optimizer = keras.optimizers.AdamW(1.5e-4, beta_2=0.95)
>>> history = torch_ddp.fit(mae, optimizer, images, global_batch_size=256,
...                         epochs=1, context=context)
>>> torch_ddp.destroy_process_group()
"""

import dataclasses
import os
import time

import keras
import numpy as np
import torch
import torch.distributed as dist


@dataclasses.dataclass
class DDPContext:
    """Where this process sits in the job (from torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def init_process_group(backend=None):
    """Join the process group torchrun set up; pick the device of this rank.

    Args:
        backend: `"nccl"`, `"gloo"` or `None` (NCCL with CUDA, else gloo).

    Returns:
        `DDPContext`. Without torchrun (no `WORLD_SIZE`), a one-process group
        is not created and the context says rank 0 of 1.
    """
    if keras.backend.backend() != "torch":
        raise RuntimeError(
            "torch_ddp needs KERAS_BACKEND=torch; "
            f"the current backend is {keras.backend.backend()!r}."
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if "WORLD_SIZE" not in os.environ:
        return DDPContext(0, 1, 0, device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return DDPContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def destroy_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_slice(global_batch_size, context):
    """The rows of a global batch that this rank trains on (contiguous)."""
    if global_batch_size % context.world_size:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be divisible by the "
            f"number of processes ({context.world_size})."
        )
    local = global_batch_size // context.world_size
    return slice(context.rank * local, (context.rank + 1) * local)


def rank_batches(arrays, global_batch_size, context, shuffle_seed=None):
    """Yield this rank's part of each global batch of `arrays` (a dict of numpy).

    All ranks draw the same permutation (same `shuffle_seed`) and cut the same
    global batches; rank r keeps rows `[r * b, (r + 1) * b)` of each, with
    `b = global_batch_size / world_size`. A last partial global batch is
    dropped so every rank runs the same number of steps.
    """
    count = len(next(iter(arrays.values())))
    order = np.arange(count)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(count)
    rows = rank_slice(global_batch_size, context)
    for start in range(0, count - global_batch_size + 1, global_batch_size):
        index = order[start : start + global_batch_size][rows]
        yield {name: array[index] for name, array in arrays.items()}


def wrap(model, context):
    """`DistributedDataParallel` around a built Keras model (a torch module)."""
    model.to(context.device)
    if context.world_size == 1:
        return model
    device_ids = [context.local_rank] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def train_step(model, ddp_model, optimizer, batch):
    """One step: forward through DDP, backward (gradients averaged), Keras update.

    Returns the local loss as a tensor (no host sync).
    """
    device = next(model.parameters()).device
    inputs = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
    model.zero_grad(set_to_none=True)
    outputs = ddp_model(inputs, training=True)
    loss = model.compute_loss(x=inputs, y_pred=outputs, training=True)
    optimizer.scale_loss(loss).backward()  # loss scaling under mixed_float16
    variables = model.trainable_variables
    with torch.no_grad():
        optimizer.apply([v.value.grad for v in variables], variables)
    return loss.detach()


def fit(
    model,
    optimizer,
    images,
    global_batch_size,
    epochs=1,
    noise=None,
    context=None,
    shuffle_seed=0,
    log_every=50,
    callback=None,
):
    """Train `model` data-parallel on this rank's share of `images`.

    Every rank must call it with the same arguments (the same full arrays);
    each reads only its own rows of every global batch.

    Args:
        model: a built `keras_mae.MaskedAutoencoder` (same seed on all ranks,
            or rely on DDP's broadcast of rank 0's weights).
        optimizer: a Keras optimizer; wrapped in `LossScaleOptimizer` when the
            global dtype policy is `mixed_float16`.
        images: numpy `(N, H, W, C)`.
        global_batch_size: int, images per step over all ranks.
        epochs: int.
        noise: optional numpy `(N, L)` masking noise (deterministic masks).
        context: `DDPContext`; default `init_process_group()`.
        shuffle_seed: int or None; epoch e shuffles with `shuffle_seed + e`.
        log_every: int, steps between loss all-reduces (host syncs) and prints
            on rank 0; 0 disables.
        callback: optional `callback(step, loss)` called on every rank at each
            logged step with the global mean loss (a float).

    Returns:
        dict with `"loss"` (the logged global losses), `"steps"` and
        `"seconds"`.
    """
    context = context or init_process_group()
    if keras.config.dtype_policy().name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    ddp_model = wrap(model, context)
    arrays = {"images": images}
    if noise is not None:
        arrays["noise"] = noise
    history = {"loss": [], "steps": 0}
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        seed = None if shuffle_seed is None else shuffle_seed + epoch
        for batch in rank_batches(arrays, global_batch_size, context, seed):
            loss = train_step(model, ddp_model, optimizer, batch)
            step += 1
            if log_every and step % log_every == 0:
                value = global_mean(loss, context)
                history["loss"].append(value)
                if callback is not None:
                    callback(step, value)
                if context.is_main:
                    print(f"epoch {epoch + 1} step {step} loss {value:.4f}", flush=True)
    history["steps"] = step
    history["seconds"] = time.perf_counter() - start
    return history


def global_mean(value, context):
    """The mean of a scalar tensor over all ranks, as a float (a host sync)."""
    value = value.detach().float().reshape(1)
    if context.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / context.world_size
    return float(value.item())
