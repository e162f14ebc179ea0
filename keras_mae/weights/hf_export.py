"""keras-mae models as Hugging Face transformers ViTMAE directories.

The reverse of the loader: a `MaskedAutoencoder` is written as a
`ViTMAEForPreTraining` directory, a `MAEEncoder` as a `ViTMAEModel` one
(`config.json` with every `ViTMAEConfig` field + `model.safetensors` in the Hub
layout, float32), which transformers' `from_pretrained` reads and
`from_official_checkpoint` reads back. The Keras variables go to the official MAE
names first (`official_state_dict`, the inverse of `assign`) and then to the
Hugging Face ones (`official_to_hf`, the inverse of `key_map.hf_to_official`).

Only `numpy` and `safetensors` are needed (no torch). Nothing here imports a model
class: the model is told apart by what it has (a `decoder` or not).
"""

import json
import os

import keras
import numpy as np

from keras_mae.weights.key_map import HF_TOP_LEVEL

# Official block names -> Hugging Face ones, in the Hub layout that transformers
# 4 and 5 both read (`facebook/vit-mae-*`).
OFFICIAL_BLOCK_NAMES = (
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)
QKV_NAMES = ("query", "key", "value")
OFFICIAL_TOP_LEVEL = {official: hf for hf, official in HF_TOP_LEVEL.items()}
# ViTMAEConfig's defaults, for the fields a model does not set (an encoder's decoder).
HF_DECODER_DEFAULTS = {
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 2048,
}


def to_numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float32")


def linear(out, key, dense):
    """Keras Dense kernel `(in, out)` -> torch Linear `(out, in)` and bias."""
    out[f"{key}.weight"] = to_numpy(dense.kernel).T
    out[f"{key}.bias"] = to_numpy(dense.bias)


def layer_norm(out, key, norm):
    out[f"{key}.weight"] = to_numpy(norm.gamma)
    out[f"{key}.bias"] = to_numpy(norm.beta)


def block(out, key, layer):
    layer_norm(out, f"{key}.norm1", layer.norm1)
    linear(out, f"{key}.attn.qkv", layer.qkv)
    linear(out, f"{key}.attn.proj", layer.proj)
    layer_norm(out, f"{key}.norm2", layer.norm2)
    linear(out, f"{key}.mlp.fc1", layer.fc1)
    linear(out, f"{key}.mlp.fc2", layer.fc2)


def with_cls_row(table):
    """Ours `(L, D)` -> official `(1, 1 + L, D)`, with the zero cls row."""
    return np.concatenate([np.zeros((1, table.shape[1]), "float32"), table])[None]


def official_state_dict(model):
    """The official MAE state dict of a `MaskedAutoencoder` or a `MAEEncoder`.

    The inverse of `keras_mae.weights.assign.official_assignments`: loading the
    result gives back every variable exactly. The cls token keeps the position
    row folded into it, and the position tables get a zero cls row (the same
    sums as the official model).

    Returns:
        dict, official names -> float32 numpy arrays (torch layouts).
    """
    full = hasattr(model, "decoder")
    encoder = model.encoder if full else model
    out = {}
    patch = encoder.patch_encoder
    p = patch.patch_size
    kernel = to_numpy(patch.projection.kernel)  # (p*p*C, D), rows in (i, j, c) order
    channels = kernel.shape[0] // (p * p)
    out["patch_embed.proj.weight"] = kernel.reshape(p, p, channels, -1).transpose(3, 2, 0, 1)
    out["patch_embed.proj.bias"] = to_numpy(patch.projection.bias)
    out["pos_embed"] = with_cls_row(to_numpy(patch.position_embedding))
    out["cls_token"] = to_numpy(encoder.class_token.token)
    for i, layer in enumerate(encoder.blocks):
        block(out, f"blocks.{i}", layer)
    layer_norm(out, "norm", encoder.norm)
    if full:
        decoder = model.decoder
        out["mask_token"] = to_numpy(decoder.mask_token)
        linear(out, "decoder_embed", decoder.embed)
        out["decoder_pos_embed"] = with_cls_row(to_numpy(decoder.position_embedding))
        for i, layer in enumerate(decoder.blocks):
            block(out, f"decoder_blocks.{i}", layer)
        layer_norm(out, "decoder_norm", decoder.norm)
        linear(out, "decoder_pred", decoder.head)
    return out


def official_to_hf(state_dict, prefix="vit."):
    """Rename an official MAE state dict to Hugging Face ViTMAE names.

    The inverse of `keras_mae.weights.key_map.hf_to_official`: the fused
    `attn.qkv` is split into query, key and value, and the names are the Hub
    layout (`vit.encoder.layer.N.attention.attention.query.weight`,
    `decoder.decoder_layers.N...`).

    Args:
        state_dict: dict, official names -> arrays.
        prefix: str, `"vit."` for `ViTMAEForPreTraining`, `""` for `ViTMAEModel`.

    Returns:
        A new dict with Hugging Face names.
    """
    hf = {}
    for name, value in state_dict.items():
        if name in OFFICIAL_TOP_LEVEL:
            new = OFFICIAL_TOP_LEVEL[name]
            hf[new if new.startswith("decoder.") else prefix + new] = value
            continue
        where, _, rest = name.partition(".")
        index, _, param = rest.partition(".")
        if where == "blocks":
            layer = f"{prefix}encoder.layer.{index}."
        elif where == "decoder_blocks":
            layer = f"decoder.decoder_layers.{index}."
        else:
            raise ValueError(
                f"{name!r} is not an official MAE name: expected cls_token, pos_embed, "
                "patch_embed.*, blocks.N.*, norm.*, mask_token, decoder_*."
            )
        if param.startswith("attn.qkv."):
            kind = param[len("attn.qkv.") :]
            for part, piece in zip(QKV_NAMES, np.split(value, 3, axis=0)):
                hf[f"{layer}attention.attention.{part}.{kind}"] = piece
            continue
        renamed = next(
            (new + param[len(old) :] for old, new in OFFICIAL_BLOCK_NAMES if param.startswith(old)),
            None,
        )
        if renamed is None:
            raise ValueError(
                f"{name!r}: unknown block parameter {param!r}; expected norm1, attn.qkv, "
                "attn.proj, norm2, mlp.fc1 or mlp.fc2."
            )
        hf[layer + renamed] = value
    return hf


def hf_config(model):
    """The `config.json` of a `MaskedAutoencoder` or `MAEEncoder` as a ViTMAE one.

    An encoder is a `ViTMAEModel` with `mask_ratio` 0: it keeps every patch (in
    the order of `noise`, as transformers' ViTMAE always shuffles by it).
    """
    full = hasattr(model, "decoder")
    encoder = model.encoder if full else model
    height, width, channels = encoder.image_shape
    if height != width:
        raise ValueError(
            f"transformers' ViTMAE takes square images only (its position tables are built "
            f"for a square grid); this model's image_shape is {encoder.image_shape}. "
            "Export a model with equal height and width (weights load at another "
            "resolution with from_official_checkpoint(..., image_size=(H, W)))."
        )
    config = {
        "architectures": ["ViTMAEForPreTraining" if full else "ViTMAEModel"],
        "model_type": "vit_mae",
        "attention_probs_dropout_prob": 0.0,
        "dtype": "float32",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": encoder.hidden_dim,
        "image_size": height,
        "initializer_range": 0.02,
        "intermediate_size": int(encoder.blocks[0].fc1.units),
        "layer_norm_eps": float(encoder.layer_norm_epsilon),
        "mask_ratio": float(model.mask_ratio) if full else 0.0,
        "norm_pix_loss": bool(model.norm_pix_loss) if full else False,
        "num_attention_heads": encoder.num_heads,
        "num_channels": channels,
        "num_hidden_layers": encoder.num_layers,
        "patch_size": encoder.patch_size,
        "qkv_bias": True,
        **HF_DECODER_DEFAULTS,
    }
    if full:
        decoder = model.decoder
        config.update(
            {
                "decoder_hidden_size": decoder.hidden_dim,
                "decoder_num_hidden_layers": decoder.num_layers,
                "decoder_num_attention_heads": decoder.num_heads,
                "decoder_intermediate_size": int(decoder.blocks[0].fc1.units),
            }
        )
    return dict(sorted(config.items()))


def export_to_transformers(model, directory):
    """Write a keras-mae model as a Hugging Face transformers ViTMAE directory.

    A `MaskedAutoencoder` becomes a `ViTMAEForPreTraining` (the same `pred` for
    the same `noise`), a `MAEEncoder` a `ViTMAEModel` with `mask_ratio` 0 (the
    same tokens as `encoder(images)` when given `noise` that keeps the patch
    order, e.g. `torch.arange(L).expand(B, L)`). The directory holds
    `config.json` and `model.safetensors` (float32, whatever the model's dtype);
    it is created if needed, and both files are replaced as a whole (written
    aside, then renamed). Settings transformers has no place for
    (`augmentation`, `attention_padding`, `drop_path_rate`, `seed`) are not
    written.

    Args:
        model: a `keras_mae.MaskedAutoencoder` or `keras_mae.MAEEncoder`.
        directory: str or path-like, the directory to write.

    Returns:
        The directory, as a str.

    Example:

    ```python
    mae.export_to_transformers("vit-mae-mine")  # or this function
    from transformers import ViTMAEForPreTraining
    hf_model = ViTMAEForPreTraining.from_pretrained("vit-mae-mine")
    ```
    """
    if not hasattr(model, "patch_encoder") and not hasattr(model, "decoder"):
        raise TypeError(
            "export_to_transformers takes a keras_mae.MaskedAutoencoder or "
            f"keras_mae.MAEEncoder. Received: {type(model).__name__}"
        )
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ImportError(
            "writing a transformers directory needs the safetensors package: "
            "`pip install safetensors` (torch is not needed)."
        ) from None
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(
            f"{directory!r} exists and is not a directory: give a directory to write "
            "config.json and model.safetensors into."
        )
    config = hf_config(model)  # refuses what transformers cannot hold, before writing
    prefix = "vit." if hasattr(model, "decoder") else ""
    tensors = {
        name: np.ascontiguousarray(value, dtype="float32")
        for name, value in official_to_hf(official_state_dict(model), prefix).items()
    }
    os.makedirs(directory, exist_ok=True)
    for filename, write in (
        ("model.safetensors", lambda path: save_file(tensors, path, metadata={"format": "pt"})),
        ("config.json", lambda path: write_json(config, path)),
    ):
        temporary = os.path.join(directory, f".{filename}.partial")
        try:
            write(temporary)
            os.replace(temporary, os.path.join(directory, filename))
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    return directory


def write_json(config, path):
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
