import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mae
from tests.conftest import to_numpy
from tests.helpers.tiny import BATCH
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import TINY
from tests.helpers.tiny import tiny_encoder
from tests.helpers.tiny import tiny_images
from tests.helpers.tiny import tiny_mae

TOKENS = NUM_PATCHES + 1  # the cls token and the patches


def toy_classification(n=64, seed=0):
    """Bright-left vs bright-right images: linearly separable by position."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.random((n, *TINY["image_shape"])).astype("float32") * 0.2
    half = TINY["image_shape"][1] // 2
    images[labels == 0, :, :half] += 0.8
    images[labels == 1, :, half:] += 0.8
    return images, labels.astype("int32")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_trains_inside_a_classifier(pooling):
    encoder = tiny_encoder()
    classifier = keras.Sequential([encoder, keras_mae.TokenPooling(pooling), keras.layers.Dense(2)])
    classifier.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    images, labels = toy_classification()
    before = to_numpy(encoder.blocks[0].qkv.kernel).copy()
    history = classifier.fit(images, labels, epochs=15, batch_size=16, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    assert not np.allclose(before, to_numpy(encoder.blocks[0].qkv.kernel))


def test_mae_encoder_is_a_functional_backbone_sharing_weights():
    mae = tiny_mae()
    encoder = mae.encoder
    images = tiny_images()
    before = to_numpy(encoder(images))
    # Functional: its graph can be re-wrapped as a plain keras.Model.
    plain = keras.Model(encoder.inputs, encoder.outputs)
    np.testing.assert_array_equal(to_numpy(plain(images)), before)
    assert before.shape == (BATCH, TOKENS, TINY["hidden_dim"])
    mae.compile(optimizer=keras.optimizers.Adam(1e-2))
    mae.fit(images, epochs=1, batch_size=BATCH, verbose=0)
    assert not np.allclose(before, to_numpy(encoder(images)))


def test_exported_encoder_reloads_in_a_fresh_process(tmp_path):
    encoder = tiny_encoder(mlp_ratio=2.0)
    images = tiny_images()
    path, data = os.path.join(tmp_path, "encoder.keras"), os.path.join(tmp_path, "data.npz")
    encoder.save(path)
    np.savez(data, images=images, tokens=to_numpy(encoder(images)))
    script = (
        "import sys, keras, numpy as np, keras_mae\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "assert type(model) is keras_mae.MAEEncoder, type(model)\n"
        "data = np.load(sys.argv[2])\n"
        "tokens = keras.ops.convert_to_numpy(model(data['images']))\n"
        "assert np.array_equal(tokens, data['tokens']), np.abs(tokens - data['tokens']).max()\n"
        "print('identical', tokens.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, path, data],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"identical {(BATCH, TOKENS, TINY['hidden_dim'])}" in result.stdout


def test_encoder_from_preset_and_bad_input():
    encoder = keras_mae.MAEEncoder.from_preset("mae_vit_micro_patch2", num_layers=1)
    assert encoder.num_layers == 1 and encoder.image_shape == (8, 8, 1)
    with pytest.raises(ValueError, match=r"image size \(8, 10\) is not divisible by patch_size=4"):
        keras_mae.MAEEncoder((8, 10, 3), 4, 16, 1, 2)
    with pytest.raises(ValueError, match="unknown preset"):
        keras_mae.MAEEncoder.from_preset("vit_tiny")
