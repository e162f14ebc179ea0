"""Mixed precision keeps float32 where it matters; speed paths keep float32 numerics.

- `mixed_bfloat16` / `mixed_float16`: variables stay float32, matmuls run in
  half precision, LayerNorm statistics and the loss are float32, and the loss
  is close to the float32 model's with the same weights and masks.
- `mixed_float16` gets a `LossScaleOptimizer` from `compile` and trains to
  finite weights.
- Padded attention (`keras_mae.vit_block.set_attention_padding`, for cuDNN
  flash attention on GPUs) gives the unpadded outputs and gradients.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import vit_block
from tests.conftest import to_numpy

SMALL = {"num_layers": 2, "decoder_num_layers": 1}


def small_mae(dtype=None, **overrides):
    return keras_mae.MaskedAutoencoder.from_preset(
        "mae_vit_micro_patch2", dtype=dtype, **{**SMALL, **overrides}
    )


def inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch, 8, 8, 1)).astype("float32")
    noise = rng.uniform(size=(batch, 16)).astype("float32")
    return {"images": images, "noise": noise}


JAX_CPU_FLOAT16 = pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="XLA:CPU has no float16 dot_general with float32 accumulation (F16_F16_F32), "
    "which JAX's attention and backward pass use; mixed_float16 on JAX needs a GPU",
)


@pytest.mark.parametrize(
    "policy", ["mixed_bfloat16", pytest.param("mixed_float16", marks=JAX_CPU_FLOAT16)]
)
def test_mixed_policy_keeps_float32_variables_and_loss(policy):
    reference = small_mae()
    mae = small_mae(dtype=policy)
    mae.set_weights(reference.get_weights())
    assert {w.dtype for w in mae.weights} == {"float32"}
    half = policy.split("_")[1]
    data = inputs()
    # predict_on_batch compiles the forward once (JAX runs eager calls op by op).
    outputs = mae.predict_on_batch(data)
    assert keras.backend.standardize_dtype(outputs["pred"].dtype) == half
    assert keras.backend.standardize_dtype(outputs["latent"].dtype) == half
    loss = mae.compute_loss(x=data, y_pred=outputs, training=False)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = to_numpy(
        reference.compute_loss(x=data, y_pred=reference.predict_on_batch(data), training=False)
    )
    # bfloat16 keeps 8 mantissa bits, float16 11: the loss agrees to ~1e-2 / 1e-3.
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=3e-2 if half == "bfloat16" else 5e-3)


def test_layer_norm_statistics_are_float32_under_bfloat16():
    # Tokens with a large common offset: bfloat16 statistics would lose the
    # small deviations entirely (1000 + 0.1 rounds to 1000 in bfloat16).
    block = vit_block.ViTBlock(8, 2, dtype="mixed_bfloat16")
    block.build((None, 3, 8))
    x = 1000.0 + np.linspace(-4.0, 4.0, 24, dtype="float32").reshape(1, 3, 8)
    normed = to_numpy(ops.cast(block.norm1(ops.cast(x, "bfloat16")), "float32"))
    x16 = to_numpy(ops.cast(ops.cast(x, "bfloat16"), "float32"))  # the input it saw
    expected = (x16 - x16.mean(-1, keepdims=True)) / np.sqrt(x16.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normed, expected, atol=2e-2)
    assert np.std(normed) > 0.5  # not collapsed to zero


@JAX_CPU_FLOAT16
def test_mixed_float16_fit_uses_loss_scaling_and_stays_finite():
    mae = small_mae(dtype="mixed_float16")
    # No XLA (TensorFlow) or torch.compile (torch): compile time would dominate.
    mae.compile(optimizer=keras.optimizers.AdamW(1e-3, beta_2=0.95), jit_compile=False)
    data = inputs(batch=8)
    history = mae.fit(data, batch_size=4, epochs=1, verbose=0)
    assert isinstance(mae.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.all(np.isfinite(np.array(w))) for w in mae.weights)


@pytest.fixture
def attention_padding():
    yield vit_block.set_attention_padding
    vit_block.set_attention_padding("auto")


def test_padded_attention_equals_unpadded_outputs_and_gradients(attention_padding):
    block = vit_block.ViTBlock(12, 3)
    block.build((None, 7, 12))  # 7 tokens, padded to 16
    x = np.random.default_rng(0).standard_normal((2, 7, 12)).astype("float32")
    weights = np.random.default_rng(1).standard_normal((2, 7, 12)).astype("float32")
    results = []
    for multiple in (None, 16):
        attention_padding(multiple)
        results.append(output_and_input_gradient(block, x, weights))
    for out, grad in results[1:]:
        np.testing.assert_allclose(out, results[0][0], atol=1e-6)
        np.testing.assert_allclose(grad, results[0][1], atol=1e-5)
    # The padded keys really are masked: zero-padding without the mask differs.
    q = k = v = ops.convert_to_tensor(x.reshape(2, 7, 3, 4)[:1])
    widths = ((0, 0), (0, 1), (0, 0), (0, 0))
    unmasked = ops.dot_product_attention(*(ops.pad(t, widths) for t in (q, k, v)))[:, :7]
    masked = vit_block.padded_attention(q, k, v, 4)
    assert np.max(np.abs(to_numpy(unmasked) - to_numpy(masked))) > 1e-3
    np.testing.assert_allclose(
        to_numpy(masked), to_numpy(ops.dot_product_attention(q, k, v)), atol=1e-6
    )


def test_padded_mae_matches_unpadded_mae(attention_padding):
    mae = small_mae()
    data = inputs()
    plain = mae.predict_on_batch(data)["pred"]
    attention_padding(8)  # encoder 1 + 4 tokens -> 8, decoder 1 + 16 -> 24
    mae.make_predict_function(force=True)  # retrace with padding on
    padded = mae.predict_on_batch(data)["pred"]
    np.testing.assert_allclose(padded, plain, atol=1e-5)


def test_auto_padding_only_for_half_precision_jax_on_a_gpu(attention_padding, monkeypatch):
    assert vit_block.ATTENTION_PADDING["multiple"] == "auto"  # the default
    on_gpu = {"value": False}
    monkeypatch.setattr(vit_block, "jax_gpu_available", lambda: on_gpu["value"])
    assert vit_block.attention_padding_multiple("bfloat16") is None  # no GPU
    on_gpu["value"] = True
    jax = keras.backend.backend() == "jax"
    assert vit_block.attention_padding_multiple("bfloat16") == (64 if jax else None)
    assert vit_block.attention_padding_multiple("float16") == (64 if jax else None)
    assert vit_block.attention_padding_multiple("float32") is None  # no flash in fp32
    attention_padding(None)
    assert vit_block.attention_padding_multiple("bfloat16") is None
    attention_padding(16)
    assert vit_block.attention_padding_multiple("float32") == 16


@pytest.mark.parametrize("bad", [0, 1, 2.5, True, "64"])
def test_set_attention_padding_rejects_bad_multiples(bad, attention_padding):
    with pytest.raises((ValueError, TypeError), match="multiple"):
        attention_padding(bad)


def output_and_input_gradient(block, x, weights):
    """`block(x)` and d sum(block(x) * weights) / dx, with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def objective(t):
            y = block(t)
            return (y * weights).sum(), y

        (_, y), grad = jax.jit(jax.value_and_grad(objective, has_aux=True))(x)
        return np.asarray(y), np.asarray(grad)
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = block(t)
            total = tf.reduce_sum(y * weights)
        return y.numpy(), tape.gradient(total, t).numpy()
    import torch

    t = torch.tensor(x, requires_grad=True)
    y = block(t)
    (y * torch.tensor(weights)).sum().backward()
    return y.detach().numpy(), t.grad.numpy()
