"""Loss and gradients of a keras-mae model through the current backend's own
autodiff (test code: the model itself never does this).

`outputs_loss_grads(model, inputs)` returns `(outputs, loss, grads)` as numpy:
the model's output dict, the loss and `{variable.path: gradient}`, with
`inputs` the `{"images", "noise"}` dict that `compute_loss` takes. On JAX the
forward and backward pass are one jitted function (far quicker to compile than
op-by-op eager dispatch).
"""

import keras
import numpy as np


def outputs_loss_grads(model, inputs):
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    trainable = list(model.trainable_variables)
    backend = keras.backend.backend()

    def forward():
        outputs = model(inputs, training=False)
        return model.compute_loss(x=inputs, y_pred=outputs, training=False), outputs

    if backend == "jax":
        import jax

        def loss_fn(values):
            with keras.StatelessScope(state_mapping=list(zip(trainable, values))):
                return forward()

        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        (loss, outputs), grads = grad_fn([v.value for v in trainable])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, outputs = forward()
        grads = tape.gradient(loss, [v.value for v in trainable])
    elif backend == "torch":
        for v in trainable:
            v.value.grad = None
        loss, outputs = forward()
        loss.backward()
        grads = [v.value.grad for v in trainable]
    else:
        raise ValueError(f"no gradient helper for backend {backend!r}")

    def numpy(x):
        if backend == "torch":
            x = x.detach()
        return np.asarray(keras.ops.convert_to_numpy(x))

    grads = {v.path: numpy(g) for v, g in zip(trainable, grads)}
    outputs = {k: numpy(v) for k, v in outputs.items()}
    return outputs, float(numpy(loss)), grads


def function_grads(fn, x, variables):
    """Gradients of the scalar `fn(x)` with respect to `x` and `variables`, as numpy."""
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "jax":
        import jax

        def f(x, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(x)

        grad_x, grad_vars = jax.grad(f, argnums=(0, 1))(x, [v.value for v in variables])
        grads = [grad_x, *grad_vars]
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        grads = tape.gradient(value, [x, *[v.value for v in variables]])
    elif backend == "torch":
        x = x.detach().clone().requires_grad_(True)
        for v in variables:
            v.value.grad = None
        fn(x).backward()
        grads = [x.grad, *[v.value.grad for v in variables]]
    else:
        raise ValueError(f"no gradient helper for backend {backend!r}")
    if backend == "torch":
        grads = [g.detach() for g in grads]
    return [np.asarray(keras.ops.convert_to_numpy(g)) for g in grads]


def rel_err(a, b):
    """max |a - b| / max |b|: the relative error used by the numerics tests."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))
