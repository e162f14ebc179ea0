"""keras-mae against an independent oracle: Hugging Face `ViTMAEForPreTraining`.

A randomly initialised tiny HF model (every parameter perturbed, LayerNorm eps
1e-6) is converted; with the same images and noise, pred, mask, ids_restore and
loss agree in float32 to a relative error (max|a - b| / max|b|) of 1e-5, with
`norm_pix_loss` off and on, and so do the gradients of every trainable variable
(each backend's own autodiff against torch's). The same weights written in the
official layout (`{"model": state_dict}`, torch.save) give the same model, and
agree with a plain-torch forward pass that reads the official layout directly
(`tests/helpers/official_reference.py`).
Runs in-process on every backend (torch is a test dependency everywhere).
"""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import keras  # noqa: E402

import keras_mae  # noqa: E402
from keras_mae.weights import official_assignments  # noqa: E402
from tests.conftest import to_numpy  # noqa: E402
from tests.helpers import mae_oracle_utils as oracle  # noqa: E402
from tests.helpers.backend_grads import outputs_loss_grads  # noqa: E402
from tests.helpers.backend_grads import rel_err  # noqa: E402
from tests.helpers.official_reference import official_forward  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hf_model():
    return oracle.random_hf_model(seed=0)


@pytest.fixture(scope="module")
def checkpoints(hf_model, tmp_path_factory):
    """HF directories (norm_pix_loss off / on) and official .pth files."""
    root = tmp_path_factory.mktemp("oracle")
    paths = {}
    for norm_pix in (False, True):
        hf_model.config.norm_pix_loss = norm_pix
        paths[norm_pix] = str(root / f"hf_norm_pix_{norm_pix}")
        hf_model.save_pretrained(paths[norm_pix])
    hf_model.config.norm_pix_loss = False
    paths["full.pth"] = oracle.save_official(hf_model, str(root / "mae_visualize.pth"))
    paths["encoder.pth"] = oracle.save_official(
        hf_model, str(root / "mae_pretrain.pth"), encoder_only=True
    )
    return paths


def run_hf(hf_model, images, noise, norm_pix, grads=False):
    hf_model.config.norm_pix_loss = norm_pix
    try:
        return oracle.hf_outputs(hf_model, images, noise, grads=grads)
    finally:
        hf_model.config.norm_pix_loss = False


@pytest.mark.parametrize(
    "source, norm_pix",
    [("official", False), ("hugging_face", True)],
    ids=["official_pth-pixels", "hf_dir-norm_pix"],
)
def test_matches_hugging_face(hf_model, checkpoints, source, norm_pix):
    images, noise = oracle.images_and_noise()
    ref = run_hf(hf_model, images, noise, norm_pix, grads=True)
    if source == "official":
        mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(
            checkpoints["full.pth"], num_heads=4, decoder_num_heads=2, norm_pix_loss=norm_pix
        )
    else:
        mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(checkpoints[norm_pix])
    assert mae.norm_pix_loss is norm_pix and mae.layer_norm_epsilon == 1e-6
    out, loss, grads = outputs_loss_grads(mae, {"images": images, "noise": noise})

    np.testing.assert_array_equal(out["mask"], ref["mask"])
    np.testing.assert_array_equal(out["ids_restore"], ref["ids_restore"])
    assert rel_err(out["pred"], ref["pred"]) <= TOLERANCE
    assert abs(loss - ref["loss"]) <= TOLERANCE * abs(ref["loss"])
    # A wrong map of any trainable variable shows here: compare every one.
    ref_grads, _ = official_assignments(ref["grads"], mae)
    ref_grads = {v.path: g for v, g in ref_grads if v.trainable}
    assert set(ref_grads) == set(grads)
    errors = {path: rel_err(grads[path], ref_grads[path]) for path in grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (worst, errors[worst])

    # Second oracle: a plain-torch forward on the official layout itself.
    pred, mask, official_loss = official_forward(
        oracle.official_state_dict(hf_model),
        images,
        noise,
        mask_ratio=0.75,
        num_heads=4,
        decoder_num_heads=2,
        norm_pix_loss=norm_pix,
    )
    np.testing.assert_array_equal(mask, ref["mask"])
    assert rel_err(pred, ref["pred"]) <= TOLERANCE
    assert rel_err(out["pred"], pred) <= TOLERANCE
    assert abs(loss - official_loss) <= TOLERANCE * abs(official_loss)


def test_official_layout_and_hf_directory_give_the_same_model(checkpoints):
    # Same weights through both key maps: every variable identical, so the
    # oracle agreement above holds for both sources.
    from_hf = keras_mae.MaskedAutoencoder.from_official_checkpoint(checkpoints[False])
    from_pth = keras_mae.MaskedAutoencoder.from_official_checkpoint(
        checkpoints["full.pth"], num_heads=4, decoder_num_heads=2
    )
    assert from_pth.get_config() == {**from_hf.get_config(), "name": from_pth.name}
    assert len(from_hf.weights) == len(from_pth.weights)
    for a, b in zip(from_hf.weights, from_pth.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_encoder_checkpoints_match_hugging_face_encoder(hf_model, checkpoints, tmp_path):
    images, _ = oracle.images_and_noise(seed=2)
    ref = oracle.hf_encoder_tokens(hf_model, images)  # (B, 1 + L, D), no masking
    encoder = keras_mae.MAEEncoder.from_official_checkpoint(checkpoints["encoder.pth"], num_heads=4)
    assert rel_err(to_numpy(encoder(images)), ref) <= TOLERANCE
    # A HF ViTMAEModel directory: names without the "vit." prefix.
    from transformers import ViTMAEModel

    hf_encoder = ViTMAEModel(hf_model.config)
    hf_encoder.load_state_dict(hf_model.vit.state_dict())
    hf_encoder.save_pretrained(str(tmp_path / "vit_mae_model"))
    encoder = keras_mae.MAEEncoder.from_official_checkpoint(str(tmp_path / "vit_mae_model"))
    assert rel_err(to_numpy(encoder(images)), ref) <= TOLERANCE
    # A full checkpoint feeds the encoder too; its decoder entries are ignored.
    with pytest.warns(UserWarning, match="ignored .* decoder entries"):
        encoder = keras_mae.MAEEncoder.from_official_checkpoint(checkpoints[False])
    assert rel_err(to_numpy(encoder(images)), ref) <= TOLERANCE


def test_resampled_positions_match_hugging_face_interpolation(hf_model, checkpoints):
    # A 32 px checkpoint (4x4 grid) in a 48 px encoder (6x6): HF's
    # interpolate_pos_encoding resamples like the official fine-tuning code.
    images, _ = oracle.images_and_noise(size=48, seed=3)
    with pytest.warns(UserWarning, match="resampled the position table from a 4x4 grid to 6x6"):
        encoder = keras_mae.MAEEncoder.from_official_checkpoint(
            checkpoints["encoder.pth"], num_heads=4, image_size=(48, 48)
        )
    assert encoder.image_shape == (48, 48, 3)
    ref = oracle.hf_encoder_tokens(hf_model, images, interpolate=True)
    assert rel_err(to_numpy(encoder(images)), ref) <= TOLERANCE


@pytest.mark.slow
def test_vit_base_conversion_matches_hugging_face(tmp_path):
    """The official ViT-B/16 architecture, HF initialisation + 0.02 noise.

    Prints the differences to HF in float32 and, for scale, both models'
    distance to HF run in float64.
    """
    import copy

    hf_model = oracle.random_hf_model(
        seed=0,
        perturbation=0.02,
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        decoder_hidden_size=512,
        decoder_num_hidden_layers=8,
        decoder_num_attention_heads=16,
        decoder_intermediate_size=2048,
    )
    hf_double = copy.deepcopy(hf_model).double()
    path = oracle.save_official(hf_model, str(tmp_path / "mae_visualize_vit_base.pth"))
    mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(path, preset="mae_vit_base_patch16")
    images, noise = oracle.images_and_noise(batch=2, size=224, num_patches=196, seed=4)
    for norm_pix in (False, True):
        mae.norm_pix_loss = norm_pix
        ref = run_hf(hf_model, images, noise, norm_pix)
        ref64 = run_hf(hf_double, images, noise, norm_pix)
        out = mae({"images": images, "noise": noise})
        pred = to_numpy(out["pred"])
        loss = float(to_numpy(mae.compute_loss({"images": images, "noise": noise})))
        pred_err = rel_err(pred, ref["pred"])
        loss_err = abs(loss - ref["loss"]) / abs(ref["loss"])
        print(
            f"\n[{keras.backend.backend()}] ViT-B/16 norm_pix_loss={norm_pix}: "
            f"keras-mae vs HF fp32: pred max abs diff {np.max(np.abs(pred - ref['pred'])):.3g} "
            f"(rel {pred_err:.3g}), loss {loss:.7f} vs {ref['loss']:.7f} (rel {loss_err:.3g}); "
            f"vs HF fp64: keras-mae pred rel {rel_err(pred, ref64['pred']):.3g}, "
            f"HF fp32 pred rel {rel_err(ref['pred'], ref64['pred']):.3g}"
        )
        np.testing.assert_array_equal(to_numpy(out["mask"]), ref["mask"])
        assert pred_err <= TOLERANCE and loss_err <= TOLERANCE
