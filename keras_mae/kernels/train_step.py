"""The training step: Keras' own, or under PyTorch one that never waits for the device.

Keras' torch step (`TorchTrainer.train_step`) makes the host wait for the
device several times a step: each Python number it turns into a tensor (the
loss tracker's batch size, AdamW's `beta_1`, `beta_2`, weight decay, the
step count's `+ 1`, the iteration counter's `+ 1`) is a fresh host-to-device
copy, blocking on a GPU. While the host waits it cannot queue the next
kernels, so the GPU idles for the host's whole Python time. The torch step
here computes the same numbers with those constants uploaded once and the
counters advanced in place, so the host only queues work.
"""

import functools
import weakref

import keras

from keras_mae.kernels.compat import variable_index
from keras_mae.kernels.kernel import Kernel


def reference_train_step(model, *args):
    """Keras' own training step for the running backend (JAX's takes `(state, data)`)."""
    return keras.Model.train_step(model, *args)


# (value, dtype, device) -> a 0-d tensor, uploaded once.
CONSTANTS = {}


def device_constant(value, like):
    import torch

    key = (value, like.dtype, like.device)
    if key not in CONSTANTS:
        CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return CONSTANTS[key]


@functools.cache
def torch_adam_class():
    """Keras' torch Adam class (the `_foreach` one the backend swaps in; AdamW derives from it)."""
    # Keras' torch `TorchOptimizer.__new__`: `Adam(...)` makes an instance of
    # the torch backend's own Adam subclass, which uses `torch._foreach` ops.
    return type(keras.optimizers.Adam.__new__(keras.optimizers.Adam))


def has_fast_update(optimizer):
    """Whether `torch_apply` computes exactly what `optimizer.apply` would.

    Keras' torch Adam/AdamW (or a subclass that keeps their update) with no
    gradient accumulation, clipping, loss scaling, EMA or variable
    constraints, already built.
    """
    adam = torch_adam_class()
    kind = type(optimizer)
    # Keras' torch `BaseOptimizer` private methods `_parallel_update_step`,
    # `_backend_update_step` and `_apply_weight_decay`: the update
    # `torch_apply` repeats; a subclass that overrides one computes another.
    # `_trainable_variables`: the variables the optimizer was built with.
    return (
        isinstance(optimizer, adam)
        and kind._parallel_update_step is adam._parallel_update_step
        and kind._backend_update_step is adam._backend_update_step
        and kind.apply is adam.apply
        and kind._apply_weight_decay is adam._apply_weight_decay
        and optimizer.built
        and not optimizer.amsgrad
        and not optimizer.gradient_accumulation_steps
        and not optimizer.use_ema
        and optimizer.loss_scale_factor is None
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not any(v.constraint is not None for v in optimizer._trainable_variables)
    )


# optimizer -> `UpdateTensors` of its last step.
UPDATE_TENSORS = weakref.WeakKeyDictionary()


class UpdateTensors:
    """The torch tensors one AdamW step updates in place, for `variables`.

    Reading a Keras variable's `.value` goes through Python scope and
    autocast checks, and a step would read three per parameter (the parameter
    and its two moments). The tensors are the variables' own storage, updated
    in place, so they are kept from step to step and used while every
    variable still holds the same tensor (a variable given a new one is read
    again).
    """

    def __init__(self, optimizer, variables):
        self.variables = list(variables)
        indices = [variable_index(optimizer, v) for v in variables]
        # Keras' `Adam._momentums` and `Adam._velocities`: its slot variables,
        # in the order of the variables it was built with.
        self.sources = [
            *self.variables,
            *(optimizer._momentums[i] for i in indices),
            *(optimizer._velocities[i] for i in indices),
        ]
        self.tensors = [v.value for v in self.sources]
        count = len(self.variables)
        self.values = self.tensors[:count]
        self.momentums = self.tensors[count : 2 * count]
        self.velocities = self.tensors[2 * count :]
        # Keras' `BaseOptimizer._use_weight_decay`: its exclusion rules
        # (`exclude_from_weight_decay`) for one variable.
        self.decayed = [
            value
            for v, value in zip(self.variables, self.values)
            if optimizer.weight_decay and optimizer._use_weight_decay(v)
        ]

    def holds(self, variables):
        # Keras' `Variable._value`: the tensor the variable holds itself
        # (`.value` goes through the stateless and autocast scopes).
        return (
            len(variables) == len(self.variables)
            and all(a is b for a, b in zip(variables, self.variables))
            and all(v._value is t for v, t in zip(self.sources, self.tensors))
        )


def update_tensors(optimizer, variables):
    tensors = UPDATE_TENSORS.get(optimizer)
    if tensors is None or not tensors.holds(variables):
        tensors = UPDATE_TENSORS[optimizer] = UpdateTensors(optimizer, variables)
    return tensors


def torch_apply(optimizer, gradients, tensors):
    """Keras' torch Adam/AdamW `apply` (see `has_fast_update`), same arithmetic.

    Weight decay `p *= 1 - wd * lr` on the variables the optimizer decays;
    `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, `p -= alpha m / (sqrt(v) + eps)`
    with `alpha = lr sqrt(1 - b2^t) / (1 - b1^t)`, `t` the iteration + 1; then
    the iteration counter + 1. The Python constants are device tensors made
    once; the counter is incremented in place. `tensors`: `update_tensors`.
    """
    import torch

    learning_rate = optimizer.learning_rate  # a schedule's value, or the variable
    lr = getattr(learning_rate, "value", learning_rate)
    iterations = optimizer.iterations.value
    # torch's multi-tensor `_foreach` ops, as Keras' torch Adam uses them.
    if tensors.decayed:
        torch._foreach_mul_(tensors.decayed, 1 - optimizer.weight_decay * lr)
    values, m_list, v_list = tensors.values, tensors.momentums, tensors.velocities
    dtype = values[0].dtype
    lr = lr.to(dtype)
    local_step = (iterations + 1).to(dtype)
    beta_1_power = torch.pow(device_constant(optimizer.beta_1, lr), local_step)
    beta_2_power = torch.pow(device_constant(optimizer.beta_2, lr), local_step)
    alpha = lr * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    torch._foreach_mul_(m_list, optimizer.beta_1)
    torch._foreach_add_(m_list, gradients, alpha=1 - optimizer.beta_1)
    torch._foreach_mul_(v_list, optimizer.beta_2)
    torch._foreach_add_(
        v_list, torch._foreach_mul(gradients, gradients), alpha=1 - optimizer.beta_2
    )
    torch._foreach_add_(
        values,
        torch._foreach_div(
            torch._foreach_mul(m_list, alpha),
            torch._foreach_add(torch._foreach_sqrt(v_list), optimizer.epsilon),
        ),
        alpha=-1,
    )
    iterations.add_(1)


def loss_tracker(model):
    """The `Mean` that `fit` reports as `loss` (Keras' own attribute; without
    it, the step is Keras')."""
    # Keras' `Trainer._loss_tracker`: the `Mean` its `train_step` updates with
    # each batch's loss.
    tracker = getattr(model, "_loss_tracker", None)
    return tracker if isinstance(tracker, keras.metrics.Mean) else None


def track_loss(tracker, loss, batch_size):
    """`tracker.update_state(loss, sample_weight=batch_size)`, in place."""
    import torch

    with torch.no_grad():
        total, count = tracker.total.value, tracker.count.value
        total.add_(loss.detach().to(total.dtype) * batch_size)
        count.add_(batch_size)


def torch_train_step(model, data):
    """Keras' torch `train_step` for a model whose loss is its `compute_loss`.

    Same sequence (forward, `zero_grad`, loss, loss tracker, backward, update,
    metrics), with the loss tracker and the Adam/AdamW update done without
    uploading Python numbers. Anything else (another optimizer, loss scaling,
    gradient accumulation, an optimizer not built yet: the first step) takes
    Keras' step.
    """
    import torch

    tracker = loss_tracker(model)
    optimizer = model.optimizer
    if tracker is None or optimizer is None or not has_fast_update(optimizer):
        return reference_train_step(model, data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=True)
    model.zero_grad()
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    batch_size = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
    track_loss(tracker, loss, batch_size)
    loss.backward()
    variables = model.trainable_weights[:]
    tensors = update_tensors(optimizer, variables)
    gradients = [value.grad for value in tensors.values]
    with torch.no_grad():
        if all(g is not None for g in gradients):
            torch_apply(optimizer, gradients, tensors)
        else:  # Keras leaves variables without a gradient as they are
            optimizer.apply(gradients, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


train_step = Kernel("train_step", reference_train_step, torch=torch_train_step)
