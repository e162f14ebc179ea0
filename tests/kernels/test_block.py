"""The ViT block kernels (`keras_mae.kernels.block`): when the PyTorch paths run,
when they hand over to the reference, and that either way the numbers are the
block's.

tests/kernels/test_kernels.py checks each kernel's chosen implementation
against its reference in float32 and `mixed_bfloat16`; here: `mixed_float16`,
drop path and remat through `call_block`, every fallback (quantized and LoRA
Dense layers, explicit token padding, a non-plain LayerNorm, no explicit
`training`, a block made under `keras.RematScope`), a mixed block called
outside any layer, and a whole MAE's outputs, loss and gradients with
the fast paths equal to those with every reference.
"""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import kernels
from tests.conftest import to_numpy
from tests.helpers.backend_grads import outputs_loss_grads
from tests.helpers.backend_grads import rel_err
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae
from tests.helpers.tiny import tiny_noise
from tests.kernels.test_kernels import InScope
from tests.kernels.test_kernels import values_and_grads

# The module, whose kernels the package shadows as attributes.
block_module = importlib.import_module("keras_mae.kernels.block")
TORCH = keras.backend.backend() == "torch"
NOT_JAX_FLOAT16 = pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="XLA:CPU has no float16 dot_general"
)
DTYPES = ["float32", "mixed_bfloat16", pytest.param("mixed_float16", marks=NOT_JAX_FLOAT16)]


def tolerance(dtype):
    # Half precision: a float32 rounding difference may flip the last bit of
    # a half-precision intermediate.
    return 1e-5 if dtype == "float32" else 3e-2


def randomised_block(dtype="float32", **kwargs):
    block = keras_mae.ViTBlock(12, 3, mlp_ratio=2.0, dtype=dtype, **kwargs)
    block.build((None, 5, 12))
    rng = np.random.default_rng(0)
    for w in block.trainable_weights:  # non-trivial LayerNorm and bias values too
        w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))
    return block


def tokens(shape=(2, 5, 12)):
    return np.random.default_rng(1).normal(size=shape).astype("float32")


def assert_same(fast, reference, dtype):
    tol = tolerance(dtype)
    assert fast[2] == reference[2]  # output dtype
    scale = max(1.0, float(np.abs(reference[0]).max()))
    np.testing.assert_allclose(fast[0], reference[0], atol=tol * scale, rtol=tol)
    for a, b in zip(fast[1], reference[1]):  # input, then variables
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, atol=10 * tol * scale, rtol=10 * tol)


@pytest.fixture
def reference_calls(monkeypatch):
    """Counts the calls of each kernel's reference made from inside the kernels."""
    counts = {}
    for name in ("reference_attention_branch", "reference_mlp_branch", "reference_call_block"):
        original = getattr(block_module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(block_module, name, counted)
    return counts


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_call_block_is_the_full_call(dtype, remat, reference_calls):
    block = randomised_block(dtype, remat=remat)
    fast = values_and_grads(
        InScope(lambda t: kernels.call_block(block, t, True), dtype=dtype),
        tokens(),
        block.trainable_weights,
    )
    if TORCH:  # the fast path ran, branches included
        assert reference_calls == {}
    full = values_and_grads(
        InScope(lambda t: block(t, training=True), dtype=dtype), tokens(), block.trainable_weights
    )
    assert fast[2] == keras.backend.standardize_dtype(block.compute_dtype)
    assert_same(fast, full, dtype)


def test_call_block_draws_the_same_drop_path():
    block = randomised_block(drop_path_rate=0.5, seed=3)
    x = ops.convert_to_tensor(np.tile(tokens((1, 5, 12)), (16, 1, 1)))
    state = to_numpy(block.seed_generator.state)
    fast = to_numpy(kernels.call_block(block, x, True))
    block.seed_generator.state.assign(state)
    full = to_numpy(block(x, training=True))
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-5)
    # Some samples dropped a branch, others not: drop path ran.
    assert np.ptp(fast.reshape(16, -1), axis=0).max() > 1e-3
    np.testing.assert_allclose(
        to_numpy(kernels.call_block(block, x, False)), to_numpy(block(x)), rtol=1e-5, atol=1e-5
    )


def quantized(block):
    for dense in (block.qkv, block.proj, block.fc1, block.fc2):
        dense.quantize("int8")  # what `Model.quantize` does to each Dense


def lora(block):
    for dense in (block.qkv, block.proj, block.fc1, block.fc2):
        dense.enable_lora(2)
        dense.lora_kernel_b.assign(np.full(dense.lora_kernel_b.shape, 0.1, "float32"))


def rms_norms(block):
    block.norm1.rms_scaling = block.norm2.rms_scaling = True


FALLBACKS = {
    "quantized": ({}, quantized),
    "lora": ({}, lora),
    "padding": ({"attention_padding": 4}, None),
    "rms_norm": ({}, rms_norms),
}


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_branches_fall_back_to_the_reference(case, reference_calls):
    kwargs, change = FALLBACKS[case]
    block = randomised_block(**kwargs)
    if change is not None:
        change(block)
    x = tokens()
    out = to_numpy(kernels.call_block(block, ops.convert_to_tensor(x), False))
    if TORCH:
        assert reference_calls.get("reference_attention_branch") == 1
        # Padding concerns attention only.
        expected = None if case == "padding" else 1
        assert reference_calls.get("reference_mlp_branch") == expected
    # The reference written with each sublayer's own call.
    with kernels.references():
        expected = to_numpy(block(x, training=False))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_call_block_falls_back_to_the_full_call(reference_calls):
    x = ops.convert_to_tensor(tokens())
    kernels.call_block(randomised_block(), x, None)  # training from the calling layer
    if not TORCH:  # the reference everywhere else
        return
    with keras.RematScope(mode="full"):
        rematerialised = randomised_block()
    kernels.call_block(rematerialised, x, False)
    assert reference_calls == {"reference_call_block": 2}


def test_mixed_block_outside_any_layer_is_the_full_call(reference_calls):
    # No autocast scope is open: the block's own call would open it, and the
    # direct path casts the kernels to bfloat16 as that scope does.
    block = randomised_block("mixed_bfloat16")
    x = ops.cast(tokens(), "bfloat16")
    out = kernels.call_block(block, x, False)
    if TORCH:
        assert reference_calls == {}
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        to_numpy(ops.cast(out, "float32")),
        to_numpy(ops.cast(block(x, training=False), "float32")),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_mae_with_fast_paths_equals_mae_with_references(dtype):
    # One encoder block, then two decoder blocks: a block fed by a block.
    mae = tiny_mae(num_layers=1, decoder_num_layers=2, seed=0, dtype=dtype)
    data = {"images": tiny_images(3), "noise": tiny_noise(3)}
    outputs, loss, grads = outputs_loss_grads(mae, data)
    with kernels.references():
        ref_outputs, ref_loss, ref_grads = outputs_loss_grads(mae, data)
    tol = tolerance(dtype)
    assert loss == pytest.approx(ref_loss, rel=tol)
    assert rel_err(outputs["pred"], ref_outputs["pred"]) < tol
    assert sorted(grads) == sorted(ref_grads)
    for path, grad in grads.items():
        assert rel_err(grad, ref_grads[path]) < 10 * tol, path


def test_remat_trains_under_mixed_precision():
    # The branches recomputed in the backward pass run outside the block's
    # autocast scope; they must still compute in bfloat16.
    mae = tiny_mae(num_layers=1, remat=True, seed=0, dtype="mixed_bfloat16")
    mae.compile(optimizer="adam")
    images = tiny_images(4)
    assert np.isfinite(mae.train_on_batch(images))
