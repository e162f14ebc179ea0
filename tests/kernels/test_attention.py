"""Padded attention (for cuDNN flash attention on GPUs) is the unpadded one.

`keras_mae.kernels.attention` zero-pads the tokens to a multiple of
`padding`, masks the padded keys and drops the padded rows; `"auto"` pads
only under JAX on a GPU with half-precision inputs.
"""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import kernels
from tests.conftest import to_numpy
from tests.helpers.backend_grads import function_grads
from tests.helpers.backend_grads import to_numpy as detached_numpy

# The module, which the package's `attention` kernel shadows as an attribute.
attention_module = importlib.import_module("keras_mae.kernels.attention")


def output_and_input_gradient(block, x, weights):
    """`block(x)` and d sum(block(x) * weights) / dx, with the backend's autodiff."""
    weights = ops.convert_to_tensor(weights)
    (grad,) = function_grads(lambda t: ops.sum(block(t) * weights), x, [])
    return detached_numpy(block(x)), grad


def test_padded_attention_equals_unpadded_outputs_and_gradients():
    x = np.random.default_rng(0).standard_normal((2, 7, 12)).astype("float32")
    weights = np.random.default_rng(1).standard_normal((2, 7, 12)).astype("float32")
    results = []
    for padding in (None, 16):
        block = keras_mae.ViTBlock(12, 3, attention_padding=padding)
        block.build((None, 7, 12))  # 7 tokens, padded to 16
        block.set_weights(results[0][2] if results else block.get_weights())
        results.append((*output_and_input_gradient(block, x, weights), block.get_weights()))
    out, grad, _ = results[1]
    np.testing.assert_allclose(out, results[0][0], atol=1e-6)
    np.testing.assert_allclose(grad, results[0][1], atol=1e-5)
    # The padded keys really are masked: zero-padding without the mask differs.
    q = k = v = ops.convert_to_tensor(x.reshape(2, 7, 3, 4)[:1])
    widths = ((0, 0), (0, 1), (0, 0), (0, 0))
    unmasked = ops.dot_product_attention(*(ops.pad(t, widths) for t in (q, k, v)))[:, :7]
    masked = kernels.padded_attention(q, k, v, 4)
    assert np.max(np.abs(to_numpy(unmasked) - to_numpy(masked))) > 1e-3
    np.testing.assert_allclose(
        to_numpy(masked), to_numpy(ops.dot_product_attention(q, k, v)), atol=1e-6
    )


def test_auto_padding_only_for_half_precision_jax_on_a_gpu(monkeypatch):
    assert keras_mae.ViTBlock(8, 2).attention_padding == "auto"  # the default
    on_gpu = {"value": False}
    monkeypatch.setattr(attention_module, "jax_gpu_available", lambda: on_gpu["value"])
    calls = []
    monkeypatch.setattr(
        attention_module,
        "padded_attention",
        lambda q, k, v, multiple: calls.append(multiple) or ops.dot_product_attention(q, k, v),
    )

    def multiple(padding, dtype):
        calls.clear()
        q = ops.zeros((1, 5, 2, 4), dtype=dtype)
        kernels.attention(q, q, q, padding)
        return calls[0] if calls else None

    assert multiple("auto", "bfloat16") is None  # no GPU
    on_gpu["value"] = True
    jax = keras.backend.backend() == "jax"
    assert multiple("auto", "bfloat16") == (64 if jax else None)
    assert multiple("auto", "float16") == (64 if jax else None)
    assert multiple("auto", "float32") is None  # no flash in fp32
    assert multiple(None, "bfloat16") is None
    assert multiple(16, "float32") == 16


@pytest.mark.parametrize("bad", [0, 1, 2.5, True, "64"])
def test_attention_padding_rejects_bad_multiples(bad):
    with pytest.raises(ValueError, match="attention_padding"):
        keras_mae.ViTBlock(8, 2, attention_padding=bad)
    with pytest.raises(ValueError, match="attention_padding"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_micro_patch2", attention_padding=bad)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX name stack")
def test_jax_attention_ops_are_named_for_profiles():
    # benchmarks/profile_xla_cpu.py adds up the ops named under the scope
    # "attention" (".../attention/...", or "jvp(attention)/..." when outermost).
    import jax

    q = np.random.default_rng(0).standard_normal((2, 5, 2, 4)).astype("float32")

    def loss(q):
        return jax.numpy.sum(kernels.attention(q, q, q, None))

    hlo = jax.jit(jax.grad(loss)).lower(q).as_text(debug_info=True)
    named = [line for line in hlo.splitlines() if attention_module.PROFILE_SCOPE.search(line)]
    assert any("dot_general" in line for line in named)
    assert any("transpose(" in line for line in named)  # the gradient's ops too
