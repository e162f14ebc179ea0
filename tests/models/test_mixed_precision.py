"""Mixed precision keeps float32 where it matters; speed paths keep float32 numerics.

- `mixed_bfloat16` / `mixed_float16`: variables stay float32, matmuls run in
  half precision, LayerNorm statistics and the loss are float32, and the loss
  is close to the float32 model's with the same weights and masks.
- `mixed_float16` gets a `LossScaleOptimizer` from `compile` and trains to
  finite weights.
- A model with padded attention (`attention_padding`, for cuDNN flash
  attention on GPUs) predicts what the unpadded one does (the kernel itself:
  tests/kernels/test_attention.py). LayerNorm statistics in float32 under
  bfloat16: tests/kernels/test_kernels.py.
"""

import keras
import numpy as np
import pytest

import keras_mae
from tests.conftest import to_numpy

SMALL = {"num_layers": 1, "decoder_num_layers": 1}


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


def test_padded_mae_matches_unpadded_mae():
    mae = small_mae()
    data = inputs()
    plain = mae.predict_on_batch(data)["pred"]
    # encoder 1 + 4 tokens -> 8, decoder 1 + 16 -> 24
    padded_mae = small_mae(attention_padding=8)
    padded_mae.set_weights(mae.get_weights())
    assert padded_mae.encoder.blocks[0].attention_padding == 8
    assert padded_mae.decoder.blocks[0].attention_padding == 8
    padded = padded_mae.predict_on_batch(data)["pred"]
    np.testing.assert_allclose(padded, plain, atol=1e-5)
