"""Values and gradients through the current backend's own autodiff (test code:
the model itself never does this).

`value_and_grads(fn, variables, x)` is the one place that dispatches on the
backend; on JAX the forward and backward pass are one jitted function (far
quicker to compile than op-by-op eager dispatch). On top of it:
`outputs_loss_grads(model, inputs)` returns `(outputs, loss, grads)` as numpy:
the model's output dict, the loss and `{variable.path: gradient}`, with
`inputs` the `{"images", "noise"}` dict that `compute_loss` takes;
`function_grads(fn, x, variables)` the gradients of a scalar function.
"""

import keras
import numpy as np


def to_numpy(x):
    if keras.backend.backend() == "torch":
        x = x.detach()
    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grads(fn, variables, x=None):
    """`fn(x)` returns `(scalar, aux)`; returns `(scalar, aux, grads)`, the
    gradients (numpy) for `x` first where it is given, then for `variables`."""
    backend = keras.backend.backend()
    if x is not None:
        x = keras.ops.convert_to_tensor(x)
    if backend == "jax":
        import jax

        def f(x, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(x)

        argnums = (0, 1) if x is not None else 1
        grad_fn = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))
        (value, aux), grads = grad_fn(x, [v.value for v in variables])
        grads = [grads[0], *grads[1]] if x is not None else list(grads)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            if x is not None:
                tape.watch(x)
            value, aux = fn(x)
        sources = [v.value for v in variables]
        grads = tape.gradient(value, sources if x is None else [x, *sources])
    elif backend == "torch":
        if x is not None:
            x = x.detach().clone().requires_grad_(True)
        for v in variables:
            v.value.grad = None
        value, aux = fn(x)
        value.backward()
        grads = [v.value.grad for v in variables]
        grads = grads if x is None else [x.grad, *grads]
    else:
        raise ValueError(f"no gradient helper for backend {backend!r}")
    return value, aux, [to_numpy(g) for g in grads]


def outputs_loss_grads(model, inputs):
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    trainable = list(model.trainable_variables)

    def forward(_):
        outputs = model(inputs, training=False)
        return model.compute_loss(x=inputs, y_pred=outputs, training=False), outputs

    loss, outputs, grads = value_and_grads(forward, trainable)
    grads = {v.path: g for v, g in zip(trainable, grads)}
    outputs = {k: to_numpy(v) for k, v in outputs.items()}
    return outputs, float(to_numpy(loss)), grads


def function_grads(fn, x, variables):
    """Gradients of the scalar `fn(x)` with respect to `x` and `variables`, as numpy."""
    return value_and_grads(lambda x: (fn(x), None), variables, x)[2]


def rel_err(a, b):
    """max |a - b| / max |b|: the relative error used by the numerics tests."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))
