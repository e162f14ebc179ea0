"""examples/attention_maps.py end to end on a tiny encoder: the PNG it writes
holds the images and their overlays, and its maps are the library's."""

import os

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.data.digits import load_digits
from keras_mae.models import attention_maps
from keras_mae.recipes.visualization import spread_over_classes
from tests.conftest import to_numpy
from tests.examples.test_examples import load_example
from tests.examples.test_examples import read_png


@pytest.fixture
def saved_encoder(tmp_path):
    encoder = keras_mae.MAEEncoder.from_preset("mae_vit_micro_patch2", num_layers=2)
    path = os.path.join(tmp_path, "encoder.keras")
    encoder.save(path)
    return encoder, path


def held_out_digits(count):
    _, (images, labels) = load_digits()
    return images[spread_over_classes(labels, count)]


@pytest.mark.parametrize("method", ["rollout", "cls"])
def test_attention_maps_example_writes_the_overlays(tmp_path, capsys, saved_encoder, method):
    encoder, path = saved_encoder
    example = load_example("attention_maps")
    output = os.path.join(tmp_path, "maps.png")
    argv = ["--encoder", path, "--count", "3", "--scale", "2", "--method", method]
    maps = example.main([*argv, "--output", output])
    printed = capsys.readouterr().out
    assert f"{output}: 3 images" in printed
    images = held_out_digits(3)
    if method == "rollout":
        expected = attention_maps.rollout_map(encoder, images)
    else:
        expected = keras.ops.mean(attention_maps.cls_attention(encoder, images), axis=1)
    np.testing.assert_allclose(maps, to_numpy(expected), atol=1e-6)
    grid = read_png(output)
    assert grid.shape == (3 * 18 + 2, 2 * 18 + 2, 3)  # 3 rows x (image, overlay), 8x8 at 2x
    # The first column is the digit itself, in grey; the overlay is redder.
    first = grid[2:18, 2:18].astype(int)
    np.testing.assert_array_equal(first[..., 0], first[..., 1])
    overlay = grid[2:18, 20:36].astype(int)
    assert (overlay[..., 0] >= overlay[..., 1]).all() and (overlay[..., 0] > overlay[..., 1]).any()


def test_attention_maps_example_refuses_another_model(tmp_path):
    path = os.path.join(tmp_path, "other.keras")
    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    example = load_example("attention_maps")
    with pytest.raises(
        ValueError, match="must hold a MAEEncoder or a MaskedAutoencoder.*Functional"
    ):
        example.main(["--encoder", path, "--output", os.path.join(tmp_path, "x.png")])
