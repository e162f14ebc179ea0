"""Every kernel's chosen implementation equals its `keras.ops` reference.

Run on each backend (tests/run.sh), so each backend's fast path is checked in
values and gradients: the forward pass and the gradient of a random linear
function of the output, with respect to the inputs and to any variables.
"""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae import kernels
from tests.conftest import to_numpy
from tests.helpers.backend_grads import function_grads


class InScope(keras.layers.Layer):
    """Runs `fn(x)` inside a layer's `__call__`: its dtype policy's casts and
    autocast scope, as the ViT block gives its sublayers."""

    def __init__(self, fn, dtype=None):
        super().__init__(dtype=dtype)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def randomised(layer, shape, seed=0):
    layer.build(shape)
    rng = np.random.default_rng(seed)
    for w in layer.weights:  # non-trivial scales and offsets
        w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))
    return layer


def layer_norm_case(dtype="float32"):
    norm = randomised(keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype), (None, 16))
    # An offset and a scale that a one-pass variance would get wrong.
    x = np.random.default_rng(1).normal(size=(40, 16)) * 3.0 + 50.0
    return (lambda f: InScope(lambda t: f(norm, t), dtype=dtype)), x, norm.trainable_weights


def dense_case(dtype="float32"):
    dense = randomised(keras.layers.Dense(12, dtype=dtype), (None, 16))
    x = np.random.default_rng(1).normal(size=(40, 16))
    return (lambda f: InScope(lambda t: f(dense, t), dtype=dtype)), x, dense.trainable_weights


def gelu_case(dtype="float32"):
    x = np.linspace(-8.0, 8.0, 401)
    return (lambda f: InScope(f, dtype=dtype)), x, []


def attention_case(dtype="float32", padding=16):
    x = np.random.default_rng(1).normal(size=(2, 7, 3, 4 * 3))

    def split(f):
        def run(t):
            q, k, v = ops.split(t, 3, axis=-1)  # (B, 7, heads, 4) each
            return f(q, k, v, padding)

        return InScope(run, dtype=dtype)

    return split, x, []


def replicas_case(dtype="float32"):
    return (lambda f: InScope(f, dtype=dtype)), np.linspace(-1.0, 1.0, 5), []


CASES = {
    "attention": attention_case,
    "layer_norm": layer_norm_case,
    "gelu": gelu_case,
    "call_sublayer": dense_case,
    "scale_loss_for_replicas": replicas_case,
}


# Kernels of whole steps, random draws and reads, not functions of one tensor:
# checked against their references in tests/kernels/test_train_step.py.
STEP_KERNELS = {"train_step", "uniform_noise", "host_copy"}


def test_every_kernel_has_a_case():
    assert sorted([*CASES, *STEP_KERNELS]) == sorted(kernel.name for kernel in kernels.KERNELS)


def values_and_grads(layer, x, variables):
    x = ops.convert_to_tensor(x.astype("float32"))
    out = layer(x)
    cotangent = ops.convert_to_tensor(
        np.random.default_rng(2).normal(size=out.shape).astype("float32")
    )
    grads = function_grads(
        lambda t: ops.sum(ops.cast(layer(t), "float32") * cotangent), x, variables
    )
    return to_numpy(ops.cast(out, "float32")), grads, keras.backend.standardize_dtype(out.dtype)


@pytest.mark.parametrize(
    "kernel", [k for k in kernels.KERNELS if k.name not in STEP_KERNELS], ids=lambda k: k.name
)
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_chosen_implementation_equals_reference(kernel, dtype):
    wrap, x, variables = CASES[kernel.name](dtype)
    fast = values_and_grads(wrap(kernel.implementation), x, variables)
    reference = values_and_grads(wrap(kernel.reference), x, variables)
    assert fast[2] == reference[2]  # same output dtype
    # bfloat16: a float32 rounding difference may flip the last bit of a
    # bfloat16 intermediate (2^-8 relative).
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    scale = max(1.0, float(np.abs(reference[0]).max()))
    np.testing.assert_allclose(fast[0], reference[0], atol=tolerance * scale, rtol=tolerance)
    for a, b in zip(fast[1], reference[1]):  # input, then variables
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, atol=10 * tolerance * scale, rtol=10 * tolerance)


def test_fast_paths_are_chosen_once_per_backend():
    backend = keras.backend.backend()
    chosen = {k.name for k in kernels.KERNELS if k.is_fast_path}
    expected = {
        "jax": {"attention", "layer_norm", "gelu"},
        "tensorflow": {"layer_norm", "gelu", "scale_loss_for_replicas"},
        "torch": {
            "layer_norm",
            "call_sublayer",
            "attention_branch",
            "mlp_branch",
            "call_block",
            "uniform_noise",
            "train_step",
            "host_copy",
        },
    }[backend]
    assert chosen == expected
    assert all(k.backend == backend for k in kernels.KERNELS)


def test_environment_variable_selects_every_reference():
    code = (
        "from keras_mae import kernels\n"
        "assert not any(k.is_fast_path for k in kernels.KERNELS), kernels.KERNELS\n"
    )
    env = {**os.environ, "KERAS_MAE_KERNELS": "reference"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_kernel_rejects_unknown_backends():
    with pytest.raises(ValueError, match="keyed by Keras backend"):
        kernels.Kernel("bad", lambda x: x, numpy=lambda x: x)


# === LayerNorm against float64 numpy ===


@pytest.mark.parametrize("implementation", ["implementation", "reference"])
def test_layer_norm_equals_float64_numpy(implementation):
    wrap, x, (gamma, beta) = layer_norm_case()
    layer = wrap(getattr(kernels.layer_norm, implementation))
    out = to_numpy(layer(ops.convert_to_tensor(x.astype("float32"))))
    x64 = x.astype("float32").astype(np.float64)
    gamma, beta = (to_numpy(w).astype(np.float64) for w in (gamma, beta))
    centred = x64 - x64.mean(-1, keepdims=True)
    exact = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-6) * gamma + beta
    # float32 rounding of the statistics at this offset: a few 1e-6.
    np.testing.assert_allclose(out, exact, rtol=2e-5, atol=2e-5)


def test_layer_norm_statistics_are_float32_under_bfloat16():
    # Tokens with a large common offset: bfloat16 statistics would lose the
    # small deviations entirely (1000 + 0.1 rounds to 1000 in bfloat16).
    norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype="mixed_bfloat16")
    norm.build((None, 8))
    layer = InScope(lambda t: kernels.layer_norm(norm, t), dtype="mixed_bfloat16")
    x = 1000.0 + np.linspace(-4.0, 4.0, 24, dtype="float32").reshape(3, 8)
    normed = to_numpy(ops.cast(layer(x), "float32"))
    x16 = to_numpy(ops.cast(ops.cast(x, "bfloat16"), "float32"))  # the input it saw
    expected = (x16 - x16.mean(-1, keepdims=True)) / np.sqrt(x16.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normed, expected, atol=2e-2)
    assert np.std(normed) > 0.5  # not collapsed to zero


# === GELU against float64 erf ===


def test_gelu_is_exact_erf_gelu_with_its_derivative():
    x = np.linspace(-8.0, 8.0, 2001).astype("float32")
    x64 = x.astype(np.float64)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x64 / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x64**2) / math.sqrt(2.0 * math.pi)
    np.testing.assert_allclose(to_numpy(kernels.gelu(x)), x64 * cdf, rtol=1e-6, atol=1e-6)
    (grad,) = function_grads(lambda t: ops.sum(kernels.gelu(t)), x, [])
    np.testing.assert_allclose(grad, cdf + x64 * pdf, rtol=1e-5, atol=1e-5)


# === The ViT block's branches (keras_mae.kernels.block) ===


def block_branch_case(branch):
    """A ViT block's attention or MLP branch on `(batch * tokens, dim)` rows,
    with the gradients of the branch's own sublayers' variables, or the whole
    block (`call_block`) with all of its variables."""

    def case(dtype="float32"):
        import keras_mae

        block = randomised(keras_mae.ViTBlock(12, 3, mlp_ratio=2.0, dtype=dtype), (None, 5, 12))
        x = np.random.default_rng(1).normal(size=(2 * 5, 12))
        if branch == "block":  # the whole block, on (batch, tokens, dim)
            x = np.reshape(x, (2, 5, 12))
            sublayers = (block,)
            run = lambda f: lambda t: f(block, t, True)  # noqa: E731
        elif branch == "attention":
            sublayers = (block.norm1, block.qkv, block.proj)
            run = lambda f: lambda t: f(block, t, 5)  # noqa: E731
        else:
            sublayers = (block.norm2, block.fc1, block.fc2)
            run = lambda f: lambda t: f(block, t)  # noqa: E731
        variables = [w for layer in sublayers for w in layer.trainable_weights]
        return (lambda f: InScope(run(f), dtype=dtype)), x, variables

    return case


CASES["attention_branch"] = block_branch_case("attention")
CASES["mlp_branch"] = block_branch_case("mlp")
CASES["call_block"] = block_branch_case("block")
