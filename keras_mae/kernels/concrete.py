"""Whether a tensor holds values now, so that a layer may look at them.

Inside a traced step (a JAX tracer, a TensorFlow graph, a symbolic
`KerasTensor`, `torch.compile`) a value cannot become a Python bool; eagerly it
can. Layers compute a check on values (e.g. a count of non-finite noise) and ask
`is_concrete` of its result: under JAX even operations on constants are
staged inside a trace, so the result, not the input, tells. The check then
runs on eager calls and is skipped inside compiled steps.
"""

import keras


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
