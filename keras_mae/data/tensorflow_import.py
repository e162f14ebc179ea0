"""TensorFlow for the input pipeline, imported without its start-up noise.

TensorFlow prints C++ log lines when it is imported and when it looks for
GPUs (oneDNN notices, `failed call to cuInit` on a machine without a GPU), and
`TF_CPP_MIN_LOG_LEVEL` does not reach the ones written before its logging
starts. Under a JAX or PyTorch backend TensorFlow is only the `tf.data`
pipeline: it is imported with the process' stderr sent to /dev/null, and its
GPUs are hidden from it (so it neither initialises CUDA nor reserves GPU memory
beside the backend that trains; JAX and PyTorch still see every GPU). Under
the TensorFlow backend Keras has imported it already and it is left as it is.
Python errors raised by the import still surface (stderr is restored first).
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def silenced_stderr():
    """Send file descriptor 2 (C++ logs as well as Python's) to /dev/null inside."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def import_tensorflow():
    """`tensorflow`, imported quietly; GPUs hidden from it unless Keras runs on it."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    with silenced_stderr():
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # devices already initialised: too late, harmless
                pass
    return tf
