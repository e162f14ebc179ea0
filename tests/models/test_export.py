"""The encoder exported for serving computes what Keras computes.

`MAEEncoder.export` writes a TensorFlow SavedModel (TensorFlow and JAX
backends) or an ONNX file (every backend); each is read back by its own
runtime (`tf.saved_model.load`, `onnxruntime`), without keras_mae, and must
give the encoder's tokens within 1e-5 for batch sizes other than any seen at
export time.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_mae
from tests.conftest import to_numpy

BACKEND = keras.backend.backend()
TOLERANCE = 1e-5


def images(batch, seed):
    return np.random.default_rng(seed).random((batch, 8, 8, 1)).astype("float32")


# One block: each block adds ops to convert, not behaviour to check.
def preset_encoder():
    return keras_mae.MAEEncoder.from_preset("mae_vit_micro_patch2", num_layers=1)


def pretraining_encoder():
    mae = keras_mae.MaskedAutoencoder.from_preset(
        "mae_vit_micro_patch2", num_layers=1, decoder_num_layers=1
    )
    return mae.encoder


ENCODERS = {"from_preset": preset_encoder, "mae.encoder": pretraining_encoder}


@pytest.mark.skipif(
    BACKEND == "torch" and importlib.util.find_spec("torch_xla") is None,
    reason="Keras exports a SavedModel from PyTorch only through torch_xla, not installed",
)
@pytest.mark.parametrize("which", ["mae.encoder"])
def test_saved_model_serves_the_encoders_tokens(tmp_path, which):
    import tensorflow as tf

    encoder = ENCODERS[which]()
    path = os.path.join(tmp_path, "encoder")
    encoder.export(path, format="tf_saved_model", verbose=False)
    # Keep the loaded object: its variables live as long as it does.
    served = tf.saved_model.load(path)
    for batch, seed in ((3, 1), (5, 2)):
        x = images(batch, seed)
        tokens = served.serve(tf.constant(x)).numpy()
        assert tokens.shape == (batch, 17, 64)
        np.testing.assert_allclose(tokens, to_numpy(encoder(x)), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "which", ["from_preset", "mae.encoder"] if BACKEND == "torch" else ["from_preset"]
)
def test_onnx_file_serves_the_encoders_tokens(tmp_path, which):
    import onnxruntime

    encoder = ENCODERS[which]()
    path = os.path.join(tmp_path, "encoder.onnx")
    encoder.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path)
    (input_spec,) = session.get_inputs()
    for batch, seed in ((3, 1), (5, 2)):
        x = images(batch, seed)
        (tokens,) = session.run(None, {input_spec.name: x})
        assert tokens.shape == (batch, 17, 64)
        np.testing.assert_allclose(tokens, to_numpy(encoder(x)), atol=TOLERANCE, rtol=0)


def test_export_keeps_the_encoder_and_its_kernels_as_they_were(tmp_path):
    from keras_mae import kernels

    encoder = preset_encoder()
    x = images(2, 0)
    before = to_numpy(encoder(x))
    chosen = [kernel.implementation for kernel in kernels.KERNELS]
    with pytest.raises(ValueError, match="format must be one of .*Received: format='h5'"):
        encoder.export(os.path.join(tmp_path, "encoder.h5"), format="h5")
    with kernels.references():
        assert all(kernel.implementation is kernel.reference for kernel in kernels.KERNELS)
    assert [kernel.implementation for kernel in kernels.KERNELS] == chosen
    np.testing.assert_array_equal(to_numpy(encoder(x)), before)
