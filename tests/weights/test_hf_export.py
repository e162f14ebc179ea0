"""keras-mae models written as Hugging Face ViTMAE directories, read by transformers.

The square tiny model (`SQUARE` in tests/helpers/tiny.py: 16x16 RGB, patch 4,
16-d x 2 blocks, decoder 8-d x 1) with every variable moved off its initial
value (position tables, cls and mask tokens, LayerNorms and biases included), so
that a dropped or swapped weight shows. transformers' `from_pretrained` must load
every entry (nothing missing, unexpected or mis-shaped) and give the same `pred` /
`last_hidden_state` for the same `noise` (relative error max|a - b| / max|b| below
1e-5); the directory must read back into keras-mae with every variable equal.
"""

import json
import os

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import keras_mae  # noqa: E402
from keras_mae import convert  # noqa: E402
from keras_mae.weights.hf_export import export_to_transformers  # noqa: E402
from keras_mae.weights.hf_export import official_state_dict  # noqa: E402
from keras_mae.weights.hf_export import official_to_hf  # noqa: E402
from keras_mae.weights.key_map import hf_to_official  # noqa: E402
from tests.conftest import to_numpy  # noqa: E402
from tests.helpers import mae_oracle_utils as oracle  # noqa: E402
from tests.helpers.backend_grads import rel_err  # noqa: E402
from tests.helpers.tiny import SQUARE  # noqa: E402
from tests.helpers.tiny import SQUARE_PATCHES  # noqa: E402
from tests.helpers.tiny import square_encoder  # noqa: E402
from tests.helpers.tiny import square_hf_config  # noqa: E402
from tests.helpers.tiny import square_mae  # noqa: E402

TOLERANCE = 1e-5


def images_and_noise(seed=0):
    """Two `SQUARE` images and their masking noise."""
    height, _, channels = SQUARE["image_shape"]
    return oracle.images_and_noise(
        size=height, channels=channels, num_patches=SQUARE_PATCHES, seed=seed
    )


def perturbed(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = to_numpy(variable) + 0.1 * rng.standard_normal(variable.shape)
        variable.assign(value.astype("float32"))
    return model


def from_pretrained(cls, directory):
    model, info = cls.from_pretrained(directory, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info[kind], (kind, info[kind])
    return model.eval()


def assert_same_weights(a, b):
    assert [v.path for v in a.weights] == [v.path for v in b.weights]
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y), err_msg=x.path)


@pytest.mark.parametrize("norm_pix", [False, True], ids=["pixels", "norm_pix"])
def test_masked_autoencoder_matches_transformers(tmp_path, norm_pix):
    from transformers import ViTMAEForPreTraining

    mae = perturbed(square_mae(norm_pix_loss=norm_pix, mask_ratio=0.5))
    directory = mae.export_to_transformers(str(tmp_path / "vit-mae"))
    assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors"]
    config = json.load(open(os.path.join(directory, "config.json")))
    assert config["model_type"] == "vit_mae"
    assert config["architectures"] == ["ViTMAEForPreTraining"]
    assert (config["mask_ratio"], config["norm_pix_loss"]) == (0.5, norm_pix)
    mlp_widths = 4 * SQUARE["hidden_dim"], 4 * SQUARE["decoder_hidden_dim"]  # mlp_ratio 4
    assert (config["intermediate_size"], config["decoder_intermediate_size"]) == mlp_widths

    hf_model = from_pretrained(ViTMAEForPreTraining, directory)
    images, noise = images_and_noise()
    ref = oracle.hf_outputs(hf_model, images, noise)
    out = mae({"images": images, "noise": noise})
    loss = float(to_numpy(mae.compute_loss({"images": images, "noise": noise})))
    np.testing.assert_array_equal(to_numpy(out["mask"]), ref["mask"])
    error = rel_err(to_numpy(out["pred"]), ref["pred"])
    print(f"\n[{keras.backend.backend()}] exported pred vs transformers: rel {error:.3g}")
    assert error <= TOLERANCE
    assert abs(loss - ref["loss"]) <= TOLERANCE * abs(ref["loss"])

    # And back: the directory loads into keras-mae with every variable equal.
    back = keras_mae.MaskedAutoencoder.from_official_checkpoint(directory)
    assert back.get_config() == {**mae.get_config(), "name": back.name}
    assert_same_weights(mae, back)


def test_encoder_matches_transformers_vit_mae_model(tmp_path):
    from transformers import ViTMAEModel

    encoder = perturbed(square_encoder(), seed=1)
    directory = export_to_transformers(encoder, tmp_path / "vit-mae-encoder")
    config = json.load(open(os.path.join(directory, "config.json")))
    assert config["architectures"] == ["ViTMAEModel"] and config["mask_ratio"] == 0.0

    hf_model = from_pretrained(ViTMAEModel, directory)
    images, _ = images_and_noise(seed=3)
    # mask_ratio 0 keeps every patch; increasing noise keeps them in order.
    noise = torch.arange(SQUARE_PATCHES, dtype=torch.float32).expand(2, SQUARE_PATCHES)
    with torch.no_grad():
        tokens = hf_model(
            pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), noise=noise
        ).last_hidden_state.numpy()
    error = rel_err(to_numpy(encoder(images)), tokens)
    print(f"\n[{keras.backend.backend()}] exported encoder vs transformers: rel {error:.3g}")
    assert error <= TOLERANCE

    back = keras_mae.MAEEncoder.from_official_checkpoint(directory)
    assert_same_weights(encoder, back)


@pytest.mark.backend_free
def test_key_maps_are_inverses():
    hf_model = oracle.random_hf_model(seed=2, **square_hf_config())
    hub_names = oracle.numpy_state_dict(hf_model)
    official = hf_to_official(hub_names)
    written = official_to_hf(official)
    assert sorted(hf_to_official(written)) == sorted(official)
    for name, value in hf_to_official(written).items():
        np.testing.assert_array_equal(value, official[name], err_msg=name)
    # Without the "vit." prefix, as ViTMAEModel.
    encoder_names = official_to_hf(
        {k: v for k, v in official.items() if not k.startswith(("decoder_", "mask_token"))},
        prefix="",
    )
    assert "embeddings.cls_token" in encoder_names and "encoder.layer.1.layernorm_after.bias" in (
        encoder_names
    )


def test_official_state_dict_reloads_exactly():
    mae = perturbed(square_mae(), seed=4)
    official = official_state_dict(mae)
    assert not np.any(official["pos_embed"][0, 0]) and not np.any(
        official["decoder_pos_embed"][0, 0]
    )
    fresh = square_mae()
    keras_mae.weights.load_official_weights(fresh, official)
    assert_same_weights(mae, fresh)


def test_refusals(tmp_path):
    wide = square_encoder(image_shape=(32, 48, 3))
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"square images only.*\(32, 48, 3\)"):
        export_to_transformers(wide, target)
    assert not target.exists()  # refused before anything was written
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(FileExistsError, match="is not a directory"):
        export_to_transformers(square_encoder(), a_file)
    with pytest.raises(TypeError, match="MaskedAutoencoder or keras_mae.MAEEncoder"):
        export_to_transformers(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "x")


def test_command_line_keras_file_to_transformers(tmp_path, capsys):
    from transformers import ViTMAEForPreTraining
    from transformers import ViTMAEModel

    mae = perturbed(square_mae(), seed=5)
    path = str(tmp_path / "mae.keras")
    mae.save(path)
    out_dir = str(tmp_path / "hf")
    convert.main([path, "--to", "transformers", "--output", out_dir])
    hf_model = from_pretrained(ViTMAEForPreTraining, out_dir)
    # As many trainable parameters as transformers' model, its fixed position tables aside.
    count = sum(
        p.numel()
        for name, p in hf_model.named_parameters()
        if not name.endswith(("position_embeddings", "decoder_pos_embed"))
    )
    assert f"MaskedAutoencoder: {count:,} trainable parameters; wrote {out_dir}" in (
        capsys.readouterr().out
    )
    images, noise = images_and_noise(seed=6)
    ref = oracle.hf_outputs(hf_model, images, noise)
    assert rel_err(to_numpy(mae({"images": images, "noise": noise})["pred"]), ref["pred"]) <= (
        TOLERANCE
    )
    # The encoder alone, and what the command refuses.
    convert.main([path, "--to", "transformers", "--encoder-only", "--output", out_dir + "_enc"])
    from_pretrained(ViTMAEModel, out_dir + "_enc")
    with pytest.raises(SystemExit, match="is a saved model: drop --preset and the overrides"):
        convert.main([path, "--to", "transformers", "--norm-pix-loss", "--output", out_dir])
