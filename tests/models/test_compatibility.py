"""`.keras` files saved by earlier releases load and reproduce their outputs.

`tests/fixtures/<release>/` holds what `tests/fixtures/make_fixtures.py` wrote
with that release: a `MaskedAutoencoder` with an augmentation, its encoder
alone and a fine-tuning classifier on the encoder, and the outputs each gave.
Registered names, constructor arguments and variable paths must keep
matching for these to load, on every backend.
"""

import os

import keras
import numpy as np
import pytest

import keras_mae

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
RELEASES = sorted(
    name for name in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, name))
)
# The files were written under one backend; others compute the same float32
# arithmetic in another order.
ATOL = 2e-4


@pytest.fixture(params=RELEASES)
def release(request):
    directory = os.path.join(FIXTURES, request.param)
    with np.load(os.path.join(directory, "outputs.npz")) as data:
        expected = dict(data)
    return directory, expected


def test_there_is_a_fixture_per_release():
    assert {"v0.1.0", "v0.2.0"} <= set(RELEASES)


def test_masked_autoencoder_with_augmentation_reproduces(release):
    directory, expected = release
    mae = keras.models.load_model(os.path.join(directory, "mae_with_augmentation.keras"))
    assert isinstance(mae, keras_mae.MaskedAutoencoder)
    assert mae.augmentation is not None and mae.norm_pix_loss
    assert int(mae.optimizer.iterations) == 1  # the optimizer state came along
    out = mae({"images": expected["images"], "noise": expected["noise"]}, training=False)
    for key in ("images", "pred", "mask", "ids_restore", "latent"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out[key]),
            expected[f"mae_{key}"],
            atol=ATOL,
            err_msg=key,
        )
    # It keeps training from where it was saved. The files were compiled with
    # jit_compile=True (the JAX default where they were written); the step runs
    # as `compile()` would choose on this machine, for XLA on a CPU and
    # torch.compile spend a minute compiling one step.
    mae.jit_compile = None  # "auto"
    before = [np.array(v) for v in mae.trainable_variables]
    mae.fit({"images": expected["images"], "noise": expected["noise"]}, batch_size=4, verbose=0)
    assert int(mae.optimizer.iterations) == 2
    assert any(not np.allclose(a, np.array(v)) for a, v in zip(before, mae.trainable_variables))


def test_encoder_reproduces(release):
    directory, expected = release
    encoder = keras.models.load_model(os.path.join(directory, "encoder.keras"))
    assert isinstance(encoder, keras_mae.MAEEncoder)
    tokens = encoder(expected["cropped"], training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(tokens), expected["encoder_tokens"], atol=ATOL
    )


def test_classifier_reproduces(release):
    directory, expected = release
    classifier = keras.models.load_model(os.path.join(directory, "classifier.keras"))
    assert isinstance(classifier.get_layer("encoder"), keras_mae.MAEEncoder)
    logits = classifier(expected["cropped"], training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), expected["classifier_logits"], atol=ATOL
    )
    # The layer-decay multipliers are keyed by variable path: they still match.
    optimizer = classifier.optimizer
    assert type(optimizer).__name__ == "LayerDecayAdamW"
    head = classifier.get_layer("head").kernel
    first_block = classifier.get_layer("encoder").blocks[0].qkv.kernel
    multipliers = optimizer.learning_rate_multipliers
    assert multipliers[head.path] == pytest.approx(1.0)
    assert multipliers[first_block.path] == pytest.approx(0.65**2)
