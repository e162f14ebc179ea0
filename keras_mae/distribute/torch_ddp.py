"""Data-parallel MAE training on the torch backend with `DistributedDataParallel`.

Keras has no torch distribution for `fit`, so this module provides the loop:
one process per device, started by `torchrun`; every rank holds a full model
wrapped in `torch.nn.parallel.DistributedDataParallel` (which broadcasts rank
0's weights at the start and averages gradients during `backward`), reads
only its own slice of every global batch, and applies the Keras optimizer to
the averaged gradients, so all ranks keep identical weights. Process groups
use NCCL on GPUs and gloo on CPUs.

The loop runs Keras callbacks as `fit` does, so `keras_mae.recipes.pretrain`
checkpoints, resumes, stops on a non-finite loss, draws pictures and logs to
TensorBoard under DDP too: callbacks that write run on rank 0 only
(`main_process_only`), the others on every rank with the same all-reduced
losses, and a stop asked for on any rank stops all of them together. Epoch
e's batches depend only on `(shuffle_seed, e)`, so a run resumed from a
checkpoint (which every rank restores) continues exactly as an uninterrupted
one.

Launch (2 processes on this machine; one per GPU on a GPU machine):
    KERAS_BACKEND=torch torchrun --nproc_per_node=2 examples/pretrain.py \
        --distribution ddp ...

In a script:

```python
from keras_mae.distribute import torch_ddp
context = torch_ddp.init_process_group()
keras.utils.set_random_seed(0)
mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch4")
optimizer = keras.optimizers.AdamW(1.5e-4, beta_2=0.95)
history = torch_ddp.fit(mae, optimizer, images, global_batch_size=256,
                        epochs=1, context=context, verbose=2)
torch_ddp.destroy_process_group()
```
"""

import dataclasses
import os

import keras
import numpy as np
import torch
import torch.distributed as dist

from keras_mae.recipes.progress import with_progress


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


def rank_batches(arrays, global_batch_size, context, shuffle_seed=None, steps=None):
    """Yield this rank's part of each global batch of `arrays` (a dict of numpy).

    All ranks draw the same permutation (same `shuffle_seed`, an int or a
    sequence of ints as `numpy.random.default_rng` takes) and cut the same
    global batches; rank r keeps rows `[r * b, (r + 1) * b)` of each, with
    `b = global_batch_size / world_size`. A last partial global batch is
    dropped so every rank runs the same number of steps; `steps` stops
    earlier.
    """
    count = len(next(iter(arrays.values())))
    order = np.arange(count)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(count)
    rows = rank_slice(global_batch_size, context)
    starts = range(0, count - global_batch_size + 1, global_batch_size)
    for start in starts[:steps]:
        index = order[start : start + global_batch_size][rows]
        yield {name: array[index] for name, array in arrays.items()}


def epoch_seed(shuffle_seed, epoch):
    """The permutation seed of `epoch`: a function of `(shuffle_seed, epoch)` only.

    A resumed run therefore reads the batches an uninterrupted one reads.
    """
    return None if shuffle_seed is None else (shuffle_seed, epoch)


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


# Keras callbacks that write files or print: under DDP they run on rank 0 only,
# so that one process writes each checkpoint, picture and log.
WRITING_CALLBACKS = (
    keras.callbacks.ModelCheckpoint,
    keras.callbacks.TensorBoard,
    keras.callbacks.CSVLogger,
    keras.callbacks.RemoteMonitor,
    keras.callbacks.ProgbarLogger,
)


def main_process_only(callback):
    """Whether `callback` only writes (files, pictures, logs), so runs on rank 0 alone.

    A callback says so itself with a `main_process_only` attribute; otherwise
    Keras' writing callbacks and keras_mae's `EpochCheckpoint` and
    `ReconstructionImages` run on rank 0 only, and every other callback on all
    ranks (those that change training: stops, learning-rate changes).
    """
    flag = getattr(callback, "main_process_only", None)
    if flag is not None:
        return bool(flag)
    from keras_mae.recipes import callbacks as recipe_callbacks

    writers = WRITING_CALLBACKS + (
        recipe_callbacks.EpochCheckpoint,
        recipe_callbacks.ReconstructionImages,
    )
    return isinstance(callback, writers)


def rank_callbacks(callbacks, context):
    """The callbacks this rank runs: all of them on rank 0, the non-writing ones elsewhere."""
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            raise ValueError(
                "keras.callbacks.BackupAndRestore does not run in the DDP loop (every "
                "rank would write the same backup). Resume with "
                "keras_mae.recipes.callbacks.EpochCheckpoint and restore_checkpoint "
                "(what keras_mae.recipes.pretrain does with output_dir), which rank 0 "
                "writes and every rank restores."
            )
    if context.is_main:
        return callbacks
    return [callback for callback in callbacks if not main_process_only(callback)]


def fit(
    model,
    optimizer,
    images,
    global_batch_size,
    epochs=1,
    noise=None,
    context=None,
    shuffle_seed=0,
    initial_epoch=0,
    callbacks=None,
    verbose=0,
    validation_data=None,
    steps_per_epoch=None,
):
    """Train `model` data-parallel on this rank's share of `images`, with Keras callbacks.

    Every rank must call it with the same arguments (the same full arrays);
    each reads only its own rows of every global batch. The callbacks run as
    in `model.fit` (`logs["loss"]` the epoch's running mean, `"val_loss"` at
    each epoch's end, `model.stop_training` honoured), with two differences
    that keep the ranks in step: the logged losses are means over all ranks
    (one all-reduce per step), so a callback that stops on them
    (`StopOnNonFiniteLoss`) stops every rank at the same step; and
    `model.stop_training` set on any rank (`TimeLimit` reads each rank's
    clock) stops all ranks after the same batch or epoch. Callbacks that
    write (`main_process_only`) run on rank 0 only.

    Args:
        model: a built `keras_mae.MaskedAutoencoder` (same seed on all ranks,
            or rely on DDP's broadcast of rank 0's weights).
        optimizer: a Keras optimizer, usually `model.optimizer` (then a
            restored checkpoint's optimizer state continues); wrapped in
            `LossScaleOptimizer` when the global dtype policy is
            `mixed_float16`.
        images: numpy `(N, H, W, C)`.
        global_batch_size: int, images per step over all ranks.
        epochs: int, the epoch to stop at (as `fit`'s `epochs`).
        noise: optional numpy `(N, L)` masking noise (deterministic masks).
        context: `DDPContext`; default `init_process_group()`.
        shuffle_seed: int or None; epoch e's order depends only on
            `(shuffle_seed, e)`, so a resumed run reads the same batches.
            None keeps the order of `images`.
        initial_epoch: int, epochs already done (a resumed run).
        callbacks: optional Keras callbacks.
        verbose: `"auto"`, 0, 1 or 2, the progress on rank 0 as
            `keras_mae.recipes.progress` draws it: `"auto"` a bar on a
            terminal and one line per epoch otherwise, 1 the bar, 2 one line
            per epoch, 0 nothing. Defaults to 0.
        validation_data: optional `(x,)` or `x`; each rank evaluates an equal
            share at every epoch end (rows beyond `world_size` equal shares
            are left out) and `"val_loss"` is their mean.
        steps_per_epoch: optional int, at most the number of full global
            batches (the default).

    Returns:
        The `keras.callbacks.History` of the run, as `model.fit` returns it.
    """
    context = context or init_process_group()
    steps = epoch_steps(len(images), global_batch_size, steps_per_epoch)
    optimizer = with_loss_scaling(optimizer)
    ddp_model = wrap(model, context)  # rank 0's weights on every rank from here on
    callback_list, history = rank_callback_list(
        callbacks, context, model=model, verbose=verbose, epochs=epochs, steps=steps
    )
    arrays = {"images": images} if noise is None else {"images": images, "noise": noise}
    model.stop_training = False
    callback_list.on_train_begin()
    training_logs = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        model.train()
        seed = epoch_seed(shuffle_seed, epoch)
        batches = rank_batches(arrays, global_batch_size, context, seed, steps)
        epoch_logs = train_epoch(model, ddp_model, optimizer, batches, callback_list, context)
        model.eval()
        if validation_data is not None:
            epoch_logs["val_loss"] = validation_loss(
                model, validation_data, global_batch_size, context
            )
        callback_list.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if agree_to_stop(model, context):
            break
    if isinstance(optimizer, keras.optimizers.Optimizer) and epochs > initial_epoch:
        optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=training_logs)
    return history


def epoch_steps(count, global_batch_size, steps_per_epoch=None):
    """The steps of an epoch: `steps_per_epoch`, or every full global batch of `count` images."""
    steps = count // global_batch_size
    if steps_per_epoch is not None:
        if not 1 <= steps_per_epoch <= steps:
            raise ValueError(
                f"steps_per_epoch={steps_per_epoch} must be between 1 and the "
                f"{steps} full global batches of {global_batch_size} in "
                f"{count} images."
            )
        steps = steps_per_epoch
    if steps < 1:
        raise ValueError(
            f"{count} images are fewer than one global batch of "
            f"{global_batch_size}: lower the batch size."
        )
    return steps


def with_loss_scaling(optimizer):
    """`optimizer` in a `LossScaleOptimizer` under the `mixed_float16` policy (once)."""
    if keras.config.dtype_policy().name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def rank_callback_list(callbacks, context, **params):
    """`(CallbackList, History)` of this rank's callbacks, a `History` added if none.

    `params` (`model`, `verbose`, `epochs`, `steps`) go to the `CallbackList`;
    the progress that `verbose` asks for (`keras_mae.recipes.progress`: a bar
    that reads no loss on the host mid-epoch, or one line per epoch) shows on
    rank 0 only, Keras' own bar nowhere.
    """
    callbacks = rank_callbacks(callbacks, context)
    if context.is_main:
        callbacks = with_progress(callbacks, params["verbose"])
    history = next((c for c in callbacks if isinstance(c, keras.callbacks.History)), None)
    if history is None:
        history = keras.callbacks.History()
        callbacks.append(history)
    return keras.callbacks.CallbackList(callbacks, **params), history


def train_epoch(model, ddp_model, optimizer, batches, callback_list, context):
    """Train on one epoch's `batches`; the epoch's logs (`"loss"`: the mean over ranks).

    The batch callbacks see the epoch's running mean, as in `fit`; a stop agreed
    by all ranks (`agree_to_stop`) ends the epoch after the batch.
    """
    logs, total = {}, 0.0
    for step, batch in enumerate(batches):
        callback_list.on_train_batch_begin(step)
        total += global_mean(train_step(model, ddp_model, optimizer, batch), context)
        logs = {"loss": total / (step + 1)}  # the epoch's running mean, as in fit
        callback_list.on_train_batch_end(step, logs)
        if agree_to_stop(model, context):
            break
    return dict(logs)


def agree_to_stop(model, context):
    """`model.stop_training` on any rank, set on every rank (one all-reduce)."""
    if context.world_size > 1:
        flag = torch.tensor([float(bool(model.stop_training))], device=context.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        model.stop_training = bool(flag.item())
    return model.stop_training


def validation_loss(model, validation_data, global_batch_size, context):
    """The mean loss over every rank's equal share of `validation_data`."""
    x = validation_data
    if isinstance(x, (tuple, list)):
        if len(x) != 1:
            raise ValueError(
                "the DDP loop validates a masked autoencoder on inputs alone: give "
                f"validation_data as (x,); received a tuple of {len(x)}."
            )
        x = x[0]
    count = len(keras.tree.flatten(x)[0])
    share = count // context.world_size
    if share < 1:
        raise ValueError(
            f"{count} validation images are fewer than the {context.world_size} "
            "processes: give at least one per process."
        )
    rows = slice(context.rank * share, (context.rank + 1) * share)
    part = keras.tree.map_structure(lambda array: np.asarray(array)[rows], x)
    batch_size = max(1, global_batch_size // context.world_size)
    loss = model.evaluate(part, batch_size=batch_size, verbose=0)
    return global_mean(torch.tensor(float(loss), device=context.device), context)


def global_mean(value, context):
    """The mean of a scalar tensor over all ranks, as a float (a host sync)."""
    value = value.detach().float().reshape(1)
    if context.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / context.world_size
    return float(value.item())
