import keras
import numpy as np

from keras_mae.kernels.concrete import host_values
from keras_mae.kernels.kernel import Kernel


class HostCopy:
    """A tensor's value at the copy, on its way to the host: `ready()` (without
    waiting), then `value()` (numpy, waiting if it has not arrived)."""

    def __init__(self, read, ready=lambda: True):
        self.read = read
        self.ready = ready

    def value(self):
        return np.asarray(self.read())


def reference_host_copy(x):
    """Read `x` now (`keras.ops.convert_to_numpy`, waiting for the device)."""
    values = np.array(keras.ops.convert_to_numpy(x))
    return HostCopy(lambda: values)


def torch_host_copy(x):
    """Start copying `x` to the host now, without waiting for the device.

    A callback that reads the loss every step (`float(logs["loss"])`) makes
    the host wait for the GPU to finish the step before it can queue the next
    one. Here a CPU tensor is read where it lies, and a CUDA tensor is copied
    into pinned host memory behind the step's kernels with a CUDA event
    recorded after the copy: `ready()` asks the event, without waiting, and
    `value()` waits only if it is asked before the copy is done.
    """
    import torch

    values = host_values(x)
    if values is not None or not isinstance(x, torch.Tensor) or x.device.type != "cuda":
        if values is not None:
            values = np.array(values)  # a copy: the tensor may be updated in place
            return HostCopy(lambda: values)
        return reference_host_copy(x)
    buffer = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    buffer.copy_(x.detach(), non_blocking=True)
    event = torch.cuda.Event()
    event.record()

    def read():
        event.synchronize()
        return buffer.numpy()

    return HostCopy(read, event.query)


host_copy = Kernel("host_copy", reference_host_copy, torch=torch_host_copy)
