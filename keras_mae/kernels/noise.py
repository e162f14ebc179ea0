import functools
import weakref

import keras

from keras_mae.kernels.kernel import Kernel


def reference_uniform(shape, seed_generator, dtype="float32"):
    """`keras.random.uniform(shape, seed=seed_generator, dtype=dtype)` in [0, 1)."""
    return keras.random.uniform(shape, seed=seed_generator, dtype=dtype)


# SeedGenerator -> (state tensor, its version, (seed, counter)) after the last draw.
MIRRORS = weakref.WeakKeyDictionary()
# (device, dtype) -> the state's increment [0, 1], uploaded once.
INCREMENTS = {}


def wrapped_int32(value):
    """`value` as the int32 the seed state holds (two's complement)."""
    return (value + 2**31) % 2**32 - 2**31


def torch_uniform(shape, seed_generator, dtype="float32"):
    """The reference's numbers without reading the seed state on the host.

    Keras' torch `uniform` copies the generator's `(seed, counter)` state to
    the host on every draw, to seed a `torch.Generator`: on a GPU a blocking
    read that stops the host from queueing the step's work. The state after
    each draw is known without reading it (the counter goes up by one), so
    this keeps a host copy, seeds the same `torch.Generator` with the same
    `(seed + counter) mod 2^32`, and advances the device state in place. The
    copy is trusted only while the state tensor is the same object at the
    version this function left it (`Tensor._version` counts in-place
    writes): after anything else writes it (a checkpoint restored, a draw
    through Keras), the state is read once again.
    """
    import torch

    state = seed_generator.state
    tensor = state.value
    # Keras' `Variable._value`: the tensor the variable holds itself, which
    # `.value` returns unless a stateless scope substitutes another.
    if tensor is not state._value or tensor.device.type == "meta":
        # A stateless call (the value is not the variable's) or a symbolic one.
        return reference_uniform(shape, seed_generator, dtype)
    mirror = MIRRORS.get(seed_generator)
    if mirror is not None and mirror[0] is tensor and mirror[1] == tensor._version:
        seed, counter = mirror[2]
    else:
        seed, counter = (int(v) for v in tensor.tolist())
    generator = torch.Generator(device=tensor.device)
    generator.manual_seed((seed + counter) & 0xFFFFFFFF)
    torch_dtype = getattr(torch, keras.backend.standardize_dtype(dtype))
    noise = torch.rand(tuple(shape), generator=generator, dtype=torch_dtype, device=tensor.device)
    key = (tensor.device, tensor.dtype)
    if key not in INCREMENTS:
        INCREMENTS[key] = torch.tensor([0, 1], dtype=tensor.dtype, device=tensor.device)
    with torch.no_grad():
        tensor.add_(INCREMENTS[key])
    MIRRORS[seed_generator] = (tensor, tensor._version, (seed, wrapped_int32(counter + 1)))
    return noise


@functools.cache
def torch_uniform_uncompiled():
    # torch.compile cannot trace a torch.Generator (Keras' own draw is
    # excluded from compilation the same way).
    import torch

    return torch.compiler.disable(torch_uniform)


def torch_uniform_outside_compile(shape, seed_generator, dtype="float32"):
    return torch_uniform_uncompiled()(shape, seed_generator, dtype)


uniform_noise = Kernel("uniform_noise", reference_uniform, torch=torch_uniform_outside_compile)
