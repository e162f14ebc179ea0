"""Checkpoint import: key map, layouts, position resampling and every refusal.

Uses a synthetic official-layout state dict of the square tiny model (`SQUARE`
in tests/helpers/tiny.py: 16x16 RGB, patch 4, 16-d x 2 blocks, decoder 8-d x 1
block). The numerical oracle is in
test_oracle.py; this file checks the plumbing.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae import convert
from keras_mae import weights
from keras_mae.weights.config import config_from_hf
from keras_mae.weights.readers import read_checkpoint
from tests.conftest import to_numpy
from tests.helpers.tiny import SQUARE
from tests.helpers.tiny import SQUARE_ENCODER
from tests.helpers.tiny import SQUARE_GRID
from tests.helpers.tiny import square_encoder
from tests.helpers.tiny import square_hf_config
from tests.helpers.tiny import square_mae

torch = pytest.importorskip("torch")

# What a checkpoint's shapes cannot tell.
HEADS = {key: SQUARE[key] for key in ("num_heads", "decoder_num_heads")}


def official_state_dict(seed=0, grid=SQUARE_GRID, encoder_only=False):
    """Random weights of `SQUARE` under the official names and shapes (torch layouts)."""
    rng = np.random.default_rng(seed)
    d, dd, p = SQUARE["hidden_dim"], SQUARE["decoder_hidden_dim"], SQUARE["patch_size"]
    c, hidden = SQUARE["image_shape"][-1], square_hf_config()["intermediate_size"]
    length = grid * grid

    def r(*shape):
        return rng.standard_normal(shape).astype("float32")

    def blocks(prefix, dim, count):
        out = {}
        for i in range(count):
            for name, shape in (
                ("norm1", (dim,)),
                ("norm2", (dim,)),
                ("attn.qkv", (3 * dim, dim)),
                ("attn.proj", (dim, dim)),
                ("mlp.fc1", (4 * dim, dim)),
                ("mlp.fc2", (dim, 4 * dim)),
            ):
                out[f"{prefix}.{i}.{name}.weight"] = r(*shape)
                out[f"{prefix}.{i}.{name}.bias"] = r(shape[0])
        return out

    def table(dim):
        return np.concatenate([np.zeros((1, 1, dim), "float32"), r(1, length, dim)], axis=1)

    sd = {
        "patch_embed.proj.weight": r(d, c, p, p),
        "patch_embed.proj.bias": r(d),
        "cls_token": r(1, 1, d),
        "pos_embed": table(d),
        "norm.weight": r(d),
        "norm.bias": r(d),
        **blocks("blocks", d, SQUARE["num_layers"]),
    }
    if not encoder_only:
        sd.update(
            {
                "mask_token": r(1, 1, dd),
                "decoder_pos_embed": table(dd),
                "decoder_embed.weight": r(dd, d),
                "decoder_embed.bias": r(dd),
                "decoder_norm.weight": r(dd),
                "decoder_norm.bias": r(dd),
                "decoder_pred.weight": r(p * p * c, dd),
                "decoder_pred.bias": r(p * p * c),
                **blocks("decoder_blocks", dd, SQUARE["decoder_num_layers"]),
            }
        )
    assert hidden == 4 * d
    return sd


def save_pth(sd, path):
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    return str(path)


def snapshot(model):
    return [to_numpy(v).copy() for v in model.weights]


def assert_unchanged(model, before):
    for value, old in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(value), old)


@pytest.mark.backend_free
@pytest.mark.parametrize("source, target", [(4, 6), (14, 10), (14, 16), (7, 3), (5, 5)])
def test_position_resampling_matches_torch_bicubic(source, target):
    table = np.random.default_rng(0).standard_normal((source * source, 8)).astype("float32")
    ours = weights.resample_position_table(table, (target, target))
    # The official interpolate_pos_embed: (1, D, h, w), bicubic, align_corners=False.
    grid = torch.from_numpy(table.reshape(1, source, source, 8)).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(
        grid, size=(target, target), mode="bicubic", align_corners=False
    )
    ref = ref.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    if source == target:
        np.testing.assert_allclose(ours, table, atol=1e-6)


def test_weights_land_where_the_official_model_uses_them():
    sd = official_state_dict()
    mae = square_mae()
    weights.load_official_weights(mae, sd)
    kernel = to_numpy(mae.encoder.patch_encoder.projection.kernel)
    w = sd["patch_embed.proj.weight"]  # (D, C, p, p)
    for d, c, i, j in [(0, 0, 0, 0), (3, 2, 1, 3), (15, 1, 3, 2)]:
        assert kernel[(i * 4 + j) * 3 + c, d] == w[d, c, i, j]
    # The patch encoder is the official conv + the table without its cls row.
    images = np.random.default_rng(1).standard_normal((2, *SQUARE["image_shape"]))
    images = images.astype("float32")
    conv = torch.nn.functional.conv2d(
        torch.from_numpy(images).permute(0, 3, 1, 2),
        torch.from_numpy(w),
        torch.from_numpy(sd["patch_embed.proj.bias"]),
        stride=SQUARE["patch_size"],
    )
    ref = conv.flatten(2).transpose(1, 2).numpy() + sd["pos_embed"][:, 1:]
    ours = to_numpy(mae.encoder.patch_encoder(images))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    block = mae.encoder.blocks[0]
    np.testing.assert_array_equal(to_numpy(block.qkv.kernel), sd["blocks.0.attn.qkv.weight"].T)
    np.testing.assert_array_equal(to_numpy(block.norm2.beta), sd["blocks.0.norm2.bias"])
    np.testing.assert_array_equal(to_numpy(mae.decoder.mask_token), sd["mask_token"])
    np.testing.assert_array_equal(
        to_numpy(mae.decoder.position_embedding), sd["decoder_pos_embed"][0, 1:]
    )
    np.testing.assert_array_equal(to_numpy(mae.decoder.head.kernel), sd["decoder_pred.weight"].T)


def test_hugging_face_names_in_both_transformers_layouts(tmp_path):
    pytest.importorskip("transformers")
    from tests.helpers import mae_oracle_utils as oracle

    model = oracle.random_hf_model(**square_hf_config())
    in_memory = oracle.numpy_state_dict(model)  # transformers 5 names (q_proj, mlp.fc1)
    model.save_pretrained(str(tmp_path))
    on_disk, hf_config = read_checkpoint(str(tmp_path))  # Hub names (attention.query, ...)
    assert any(".attention.attention.query." in k for k in on_disk)
    assert any(".q_proj." in k for k in in_memory)
    a, b = weights.hf_to_official(in_memory), weights.hf_to_official(on_disk)
    layers = SQUARE["num_layers"], SQUARE["decoder_num_layers"]
    assert set(a) == set(b) == set(official_state_dict_keys(*layers))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    d = SQUARE["hidden_dim"]  # qkv rows: query, key, value
    np.testing.assert_array_equal(
        a["blocks.1.attn.qkv.weight"][d : 2 * d], in_memory["vit.layers.1.attention.k_proj.weight"]
    )
    assert config_from_hf(hf_config)["decoder_num_heads"] == SQUARE["decoder_num_heads"]


def official_state_dict_keys(num_layers, decoder_layers):
    keys = {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "cls_token",
        "pos_embed",
        "norm.weight",
        "norm.bias",
        "mask_token",
        "decoder_pos_embed",
    }
    for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
        keys |= {f"{name}.weight", f"{name}.bias"}
    for prefix, count in (("blocks", num_layers), ("decoder_blocks", decoder_layers)):
        for i in range(count):
            for sub in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys |= {f"{prefix}.{i}.{sub}.weight", f"{prefix}.{i}.{sub}.bias"}
    return keys


def test_misfit_checkpoint_lists_every_problem_and_loads_nothing():
    mae = square_mae()
    before = snapshot(mae)
    sd = official_state_dict()
    del sd["blocks.0.attn.qkv.bias"]
    sd["head.weight"] = np.zeros((10, 16), "float32")
    sd["blocks.2.norm1.weight"] = np.ones(16, "float32")  # SQUARE has 2 blocks
    sd["decoder_pred.weight"] = np.zeros((24, 8), "float32")
    with pytest.raises(ValueError) as info:
        weights.load_official_weights(mae, sd)
    message = str(info.value)
    assert "nothing was loaded" in message
    assert "missing keys (1): blocks.0.attn.qkv.bias" in message
    assert "unexpected keys (2): blocks.2.norm1.weight, head.weight" in message
    assert "decoder_pred.weight: checkpoint (24, 8), model (48, 8)" in message
    assert_unchanged(mae, before)


def test_encoder_only_checkpoint_needs_the_encoder_class(tmp_path):
    path = save_pth(official_state_dict(encoder_only=True), tmp_path / "pretrain.pth")
    with pytest.raises(
        ValueError, match=r"(?s)missing keys \(20\): .*decoder_embed.weight.*MAEEncoder"
    ):
        keras_mae.MaskedAutoencoder.from_official_checkpoint(path, **SQUARE)
    encoder = keras_mae.MAEEncoder.from_official_checkpoint(path, **SQUARE_ENCODER)
    np.testing.assert_array_equal(
        to_numpy(encoder.norm.gamma), official_state_dict(encoder_only=True)["norm.weight"]
    )


def test_wrong_preset_is_refused_with_the_shapes(tmp_path):
    path = save_pth(official_state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight: checkpoint \(16, 3, 4, 4\)"):
        keras_mae.MaskedAutoencoder.from_official_checkpoint(path, preset="mae_vit_micro_patch2")
    with pytest.raises(ValueError, match="cannot tell num_heads, decoder_num_heads"):
        keras_mae.MaskedAutoencoder.from_official_checkpoint(path)
    # Shapes give the rest of the architecture.
    mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(path, **HEADS)
    assert {k: mae.get_config()[k] for k in SQUARE} == SQUARE


def test_unreadable_files_get_clear_errors(tmp_path):
    good = save_pth(official_state_dict(), tmp_path / "good.pth")
    data = open(good, "rb").read()
    cases = {
        "truncated.pth": data[: len(data) // 2],
        "garbage.pth": b"this is not a checkpoint\n" * 10,
        "garbage.safetensors": b"\x00\x01\x02 not safetensors",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="truncated or not a checkpoint"):
            read_checkpoint(str(tmp_path / name))
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    with pytest.raises(ValueError, match="holds no state dict"):
        read_checkpoint(str(tmp_path / "list.pth"))
    with pytest.raises(FileNotFoundError):
        read_checkpoint(str(tmp_path / "absent.pth"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="holds no weights"):
        read_checkpoint(str(tmp_path / "empty_dir"))


def test_reading_pth_without_torch_says_so(tmp_path, monkeypatch):
    path = save_pth(official_state_dict(), tmp_path / "model.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match="needs torch.*Nothing else in keras-mae needs torch"):
        read_checkpoint(path)


def test_safetensors_file_in_official_layout(tmp_path):
    from safetensors.numpy import save_file

    sd = official_state_dict()
    save_file(sd, str(tmp_path / "mae.safetensors"))
    mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(
        str(tmp_path / "mae.safetensors"), **SQUARE
    )
    np.testing.assert_array_equal(to_numpy(mae.decoder.norm.gamma), sd["decoder_norm.weight"])


def test_cls_position_rows():
    # Encoder: the official model adds pos_embed[:, 0] to the cls token; folded in.
    sd = official_state_dict(encoder_only=True)
    sd["pos_embed"][0, 0] = 0.5
    encoder = square_encoder()
    weights.load_official_weights(encoder, sd)
    np.testing.assert_allclose(to_numpy(encoder.class_token.token), sd["cls_token"] + 0.5)
    # Decoder: no place for a non-zero cls row; refused, nothing loaded.
    sd = official_state_dict()
    sd["decoder_pos_embed"][0, 0, 3] = 0.25
    mae = square_mae()
    before = snapshot(mae)
    with pytest.raises(ValueError, match="decoder_pos_embed: the cls row is not zero"):
        weights.load_official_weights(mae, sd)
    assert_unchanged(mae, before)


def test_other_resolution_resamples_both_tables_with_a_notice(tmp_path):
    sd = official_state_dict()
    path = save_pth(sd, tmp_path / "mae16.pth")
    with pytest.warns(UserWarning, match="4x4 grid to 6x6") as record:
        mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(
            path, **{**SQUARE, "image_shape": (24, 24, 3)}
        )
    assert len([w for w in record if "resampled" in str(w.message)]) == 2
    np.testing.assert_allclose(
        to_numpy(mae.encoder.patch_encoder.position_embedding),
        weights.resample_position_table(sd["pos_embed"][0, 1:], (6, 6)),
    )
    np.testing.assert_allclose(
        to_numpy(mae.decoder.position_embedding),
        weights.resample_position_table(sd["decoder_pos_embed"][0, 1:], (6, 6)),
    )


def test_command_line_writes_a_loadable_model(tmp_path, capsys):
    sd = official_state_dict()
    path = save_pth(sd, tmp_path / "mae.pth")
    # A directory with a config.json (as save_pretrained writes) names the
    # whole architecture, head counts included.
    import json

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    save_file = pytest.importorskip("safetensors.numpy").save_file
    save_file(sd, str(hf_dir / "model.safetensors"))
    (hf_dir / "config.json").write_text(
        json.dumps({"model_type": "vit_mae", **square_hf_config(layer_norm_eps=1e-6)})
    )
    output = str(tmp_path / "mae.keras")
    convert.main([str(hf_dir), "--output", output, "--norm-pix-loss"])
    assert "wrote" in capsys.readouterr().out
    loaded = keras.saving.load_model(output)
    assert loaded.norm_pix_loss is True
    reference = keras_mae.MaskedAutoencoder.from_official_checkpoint(path, **HEADS)
    for a, b in zip(loaded.weights, reference.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # A bare official .pth of no preset: heads on the command line.
    weights_out = str(tmp_path / "mae.weights.h5")
    heads = ["--num-heads", str(HEADS["num_heads"])]
    heads += ["--decoder-num-heads", str(HEADS["decoder_num_heads"])]
    convert.main([path, "--output", weights_out, *heads])
    reference.load_weights(weights_out)  # same architecture, so it fits
    with pytest.raises(SystemExit, match="error: .*does not fit the model; nothing was loaded"):
        convert.main([path, "--output", output, "--preset", "mae_vit_micro_patch2"])
    encoder_out = str(tmp_path / "encoder.weights.h5")
    with pytest.warns(UserWarning, match="ignored 20 decoder entries"):
        convert.main([str(hf_dir), "--output", encoder_out, "--encoder-only"])
    assert os.path.getsize(encoder_out) > 0


@pytest.mark.backend_free
def test_import_and_help_need_no_torch():
    # torch cannot be imported at all in the child; keras_mae must not need it.
    code = "\n".join(
        [
            "import sys, importlib.abc",
            "class NoTorch(importlib.abc.MetaPathFinder):",
            "    def find_spec(self, name, path, target=None):",
            "        if name.split('.')[0] == 'torch':",
            "            raise ModuleNotFoundError(name)",
            "sys.meta_path.insert(0, NoTorch())",
            "import keras_mae, keras_mae.convert, keras_mae.weights",
            "assert 'torch' not in sys.modules",
            "sys.argv = ['convert', '--help']",
            "keras_mae.convert.main()",
        ]
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "python -m keras_mae.convert" in result.stdout


def write_hf_directory(directory, sd, config_json=True, **changes):
    """An official-layout safetensors file and, optionally, a ViTMAE config.json."""
    import json

    directory.mkdir()
    pytest.importorskip("safetensors.numpy").save_file(sd, str(directory / "model.safetensors"))
    if config_json:
        config = {"model_type": "vit_mae", **square_hf_config(mask_ratio=0.6, **changes)}
        (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def test_stray_key_without_preset_names_the_keys(tmp_path):
    sd = official_state_dict()
    sd["blocks.2.norm1.weight"] = np.ones(16, "float32")  # a third block, incomplete
    del sd["decoder_norm.bias"]
    path = save_pth(sd, tmp_path / "stray.pth")
    with pytest.raises(ValueError) as info:
        keras_mae.MaskedAutoencoder.from_official_checkpoint(path)
    message = str(info.value)
    assert "does not have the layout of an official MAE checkpoint" in message
    assert "unexpected keys (1): blocks.2.norm1.weight" in message
    assert "missing keys (1): decoder_norm.bias" in message
    assert "cannot tell num_heads" not in message


def test_random_bytes_pth_is_not_a_readable_checkpoint(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ValueError) as info:
        read_checkpoint(str(path))
    message = str(info.value)
    assert f"{str(path)!r} (2,048 bytes) is not a readable PyTorch checkpoint" in message
    assert "expected an official MAE .pth" in message and "save_pretrained" in message
    assert "weights_only" not in message
    good = open(save_pth(official_state_dict(), tmp_path / "good.pth"), "rb").read()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="its end is missing \\(truncated\\)"):
        read_checkpoint(str(tmp_path / "cut.pth"))
    import argparse

    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, str(tmp_path / "args.pth"))
    with pytest.raises(ValueError, match="holds Python objects besides tensors.*If you trust"):
        read_checkpoint(str(tmp_path / "args.pth"))


def test_preset_or_argument_contradicting_config_json_is_refused(tmp_path):
    directory = write_hf_directory(tmp_path / "hf", official_state_dict())
    with pytest.raises(ValueError) as info:
        keras_mae.MaskedAutoencoder.from_official_checkpoint(
            directory, preset="mae_vit_micro_patch2"
        )
    message = str(info.value)
    assert "config.json describes the architecture" in message
    for line in (
        "patch_size: preset 2, config.json 4",
        "hidden_dim: preset 64, config.json 16",
        "num_heads: preset 4, config.json 2",
        "channels: preset 1 (image_shape=(8, 8, 1)), config.json 3",
    ):
        assert line in message
    with pytest.raises(ValueError, match="num_heads: argument 4, config.json 2"):
        keras_mae.MaskedAutoencoder.from_official_checkpoint(directory, num_heads=4)
    # Settings that are not the architecture may still be given.
    mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(directory, mask_ratio=0.9)
    assert (mae.num_heads, mae.mask_ratio) == (2, 0.9)


def test_missing_config_json_names_the_defaulted_settings(tmp_path):
    directory = write_hf_directory(tmp_path / "hf", official_state_dict(), config_json=False)
    with pytest.warns(UserWarning) as record:
        mae = keras_mae.MaskedAutoencoder.from_official_checkpoint(
            directory, **HEADS, norm_pix_loss=True
        )
    (message,) = [str(w.message) for w in record if "config.json" in str(w.message)]
    assert "comes with no config.json and no preset was given" in message
    assert "mask_ratio=0.75, layer_norm_epsilon=1e-06 (defaults)" in message
    assert "norm_pix_loss" not in message  # given
    assert mae.mask_ratio == 0.75
