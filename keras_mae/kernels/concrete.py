"""Whether a tensor holds values now, so that a layer may look at them.

Inside a traced step (a JAX tracer, a TensorFlow graph, a symbolic
`KerasTensor`, `torch.compile`) a value cannot become a Python bool; eagerly it
can. Layers compute a check on values (e.g. a count of non-finite noise) and ask
`is_concrete` of its result: under JAX even operations on constants are
staged inside a trace, so the result, not the input, tells. The check then
runs on eager calls and is skipped inside compiled steps.
"""

import keras
import numpy as np


def is_concrete(x):
    """True when `x` is a numpy value or an eager tensor of the running backend."""
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return False


def host_values(x):
    """`x`'s values as a numpy array when reading them makes no device wait, else None.

    A numpy value, or an eager tensor in host memory (PyTorch, TensorFlow or
    JAX on the CPU), is read where it lies. A tensor on an accelerator is not
    read: the copy to the host would stop the host from queueing the step's
    work until the device has caught up. Traced values have no values.
    """
    if isinstance(x, np.ndarray):
        return x
    if not is_concrete(x):
        return None
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            return x.detach().numpy()
    elif backend == "tensorflow":
        import tensorflow as tf

        if isinstance(x, tf.Tensor) and "CPU" in x.device.upper():
            return x.numpy()
    elif backend == "jax":
        import jax

        if isinstance(x, jax.Array) and all(d.platform == "cpu" for d in x.devices()):
            return np.asarray(x)
    return None
