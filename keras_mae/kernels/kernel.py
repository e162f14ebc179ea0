import contextlib
import os

import keras

# `KERAS_MAE_KERNELS=reference`: every kernel runs its reference.
ENVIRONMENT_VARIABLE = "KERAS_MAE_KERNELS"


class Kernel:
    """A function with a `keras.ops` reference and optional backend fast paths.

    The implementation for the running Keras backend is chosen once, here, and
    every call goes to it. `reference` and `implementations` stay reachable so
    that tests can compare the two.

    Args:
        name: str, for messages.
        reference: the `keras.ops` implementation, correct on every backend.
        **implementations: backend name (`"jax"`, `"tensorflow"`, `"torch"`)
            -> a function with the reference's signature and results.

    Example:
    >>> double = Kernel("double", lambda x: x * 2, jax=lambda x: x + x)
    >>> double(3)
    6
    """

    # Every kernel made, so that `references()` can switch them all.
    instances = []

    def __init__(self, name, reference, **implementations):
        unknown = set(implementations) - {"jax", "tensorflow", "torch"}
        if unknown:
            raise ValueError(
                f"kernel {name!r}: implementations are keyed by Keras backend "
                f"('jax', 'tensorflow', 'torch'). Received: {sorted(unknown)}"
            )
        self.name = name
        self.reference = reference
        self.implementations = implementations
        self.backend = keras.backend.backend()
        use_reference = os.environ.get(ENVIRONMENT_VARIABLE, "") == "reference"
        self.implementation = (
            reference if use_reference else implementations.get(self.backend, reference)
        )
        Kernel.instances.append(self)

    @property
    def is_fast_path(self):
        """Whether calls go to a backend implementation rather than the reference."""
        return self.implementation is not self.reference

    def __call__(self, *args, **kwargs):
        return self.implementation(*args, **kwargs)

    def __repr__(self):
        which = f"the {self.backend} fast path" if self.is_fast_path else "the reference"
        return f"<Kernel {self.name}: {which}>"


@contextlib.contextmanager
def references():
    """Every kernel runs its `keras.ops` reference inside this context.

    For graphs that leave the process (an exported SavedModel or ONNX file):
    they then hold only what Keras' own ops lower to. A fast path may lower
    to something the consumer cannot read, e.g. JAX's `erf` (the GELU fast
    path) serialises as a StableHLO composite that TensorFlow's
    `XlaCallModule` does not know. The references equal the fast paths
    (`tests/kernels/`), so the exported numbers are the model's.

    Example:

    ```python
    with references():
        exported = encoder.export("encoder", format="tf_saved_model")
    ```
    """
    saved = [(kernel, kernel.implementation) for kernel in Kernel.instances]
    for kernel, _ in saved:
        kernel.implementation = kernel.reference
    try:
        yield
    finally:
        for kernel, implementation in saved:
            kernel.implementation = implementation
