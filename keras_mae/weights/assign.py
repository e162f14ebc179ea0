"""Match an official-layout state dict to the variables of a keras-mae model.

A checkpoint that does not fit the model is refused as a whole, with the
missing, unexpected and mis-shaped entries listed; nothing is assigned until
everything fits. The model is told apart by what it has (a `decoder` or not),
so this module imports no model class.
"""

import warnings

import numpy as np

from keras_mae.weights.key_map import DECODER_KEY
from keras_mae.weights.key_map import hf_to_official
from keras_mae.weights.key_map import is_hf_layout
from keras_mae.weights.position import resample_position_table
from keras_mae.weights.readers import read_checkpoint

# Zero-row tolerance for the cls row of a position table.
CLS_ROW_TOLERANCE = 1e-6
# Entries listed per kind of problem in an error message.
MAX_LISTED = 24


class Mismatch:
    """Collects everything wrong with a checkpoint before reporting it at once."""

    def __init__(self):
        self.missing, self.shapes, self.other = [], [], []
        self.used = set()

    def check(self, state_dict, key, expected_shape):
        self.used.add(key)
        if key not in state_dict:
            self.missing.append(key)
            return None
        value = state_dict[key]
        if tuple(value.shape) != tuple(expected_shape):
            self.shapes.append(
                f"{key}: checkpoint {tuple(value.shape)}, model {tuple(expected_shape)}"
            )
            return None
        return value

    def raise_if_any(self, unexpected, source):
        if not (self.missing or self.shapes or self.other or unexpected):
            return
        lines = [f"the checkpoint {source} does not fit the model; nothing was loaded."]
        for title, items in (
            ("missing keys", self.missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", self.shapes),
            ("other problems", self.other),
        ):
            if items:
                shown = ", ".join(items[:MAX_LISTED])
                more = len(items) - MAX_LISTED
                lines.append(
                    f"{title} ({len(items)}): {shown}"
                    + (f", ... ({more} more)" if more > 0 else "")
                )
        lines.append(
            "Check that the preset (or overrides such as image_shape, num_layers, "
            "hidden_dim, decoder_hidden_dim) matches the checkpoint, and use "
            "MAEEncoder for encoder-only checkpoints."
        )
        raise ValueError("\n".join(lines))


def linear(mismatch, sd, key, dense, out):
    """torch Linear `(out, in)` -> Keras Dense kernel `(in, out)` and bias."""
    weight = mismatch.check(sd, f"{key}.weight", tuple(dense.kernel.shape)[::-1])
    if weight is not None:
        out.append((dense.kernel, weight.T))
    bias = mismatch.check(sd, f"{key}.bias", dense.bias.shape)
    if bias is not None:
        out.append((dense.bias, bias))


def layer_norm(mismatch, sd, key, norm, out):
    for param, variable in (("weight", norm.gamma), ("bias", norm.beta)):
        value = mismatch.check(sd, f"{key}.{param}", variable.shape)
        if value is not None:
            out.append((variable, value))


def block(mismatch, sd, key, layer, out):
    layer_norm(mismatch, sd, f"{key}.norm1", layer.norm1, out)
    linear(mismatch, sd, f"{key}.attn.qkv", layer.qkv, out)
    linear(mismatch, sd, f"{key}.attn.proj", layer.proj, out)
    layer_norm(mismatch, sd, f"{key}.norm2", layer.norm2, out)
    linear(mismatch, sd, f"{key}.mlp.fc1", layer.fc1, out)
    linear(mismatch, sd, f"{key}.mlp.fc2", layer.fc2, out)


def position_table(mismatch, sd, key, variable, grid_size, notices):
    """Official `(1, 1 + L, D)` table -> ours `(L, D)`; resampled if L differs.

    Returns the cls row (or None)."""
    mismatch.used.add(key)
    if key not in sd:
        mismatch.missing.append(key)
        return None, None
    value = sd[key]
    length, dim = variable.shape
    if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != dim:
        mismatch.shapes.append(
            f"{key}: checkpoint {tuple(value.shape)}, model (1, {1 + length}, {dim})"
        )
        return None, None
    cls_row, table = value[0, 0], value[0, 1:]
    if table.shape[0] != length:
        side = int(round(table.shape[0] ** 0.5))
        if side * side != table.shape[0]:
            mismatch.shapes.append(
                f"{key}: checkpoint {tuple(value.shape)} is not a square grid and "
                f"cannot be resampled to the model's (1, {1 + length}, {dim})"
            )
            return None, None
        notices.append(
            f"{key}: resampled the position table from a {side}x{side} grid to "
            f"{grid_size[0]}x{grid_size[1]} (bicubic, cls row kept), as MAE fine-tuning does."
        )
        table = resample_position_table(table, grid_size)
    return table, cls_row


def official_assignments(state_dict, model, source="given"):
    """Match an official-layout state dict to the variables of `model`.

    Validates everything first and returns the full list of
    `(variable, array)` pairs; raises `ValueError` listing every missing,
    unexpected or mis-shaped entry otherwise. Assigns nothing.

    Args:
        state_dict: dict, official names -> arrays.
        model: a `MaskedAutoencoder` or a `MAEEncoder`.
        source: str, how to name the checkpoint in messages.

    Returns:
        A tuple `(pairs, notices)`: `pairs` a list of `(variable, array)`,
        `notices` a list of str (resampled tables, ignored decoder entries).
    """
    sd = dict(state_dict)
    if is_hf_layout(sd):
        sd = hf_to_official(sd)
    full = hasattr(model, "decoder")  # a MaskedAutoencoder, not an encoder
    encoder = model.encoder if full else model
    mismatch, pairs, notices = Mismatch(), [], []
    if not full:
        decoder_keys = [k for k in sd if DECODER_KEY.match(k)]
        if decoder_keys:
            notices.append(
                f"loading the encoder only: ignored {len(decoder_keys)} decoder entries."
            )
        for key in decoder_keys:
            del sd[key]

    # === Encoder ===
    patch = encoder.patch_encoder
    kernel = patch.projection.kernel
    p, channels = patch.patch_size, kernel.shape[0] // patch.patch_size**2
    weight = mismatch.check(sd, "patch_embed.proj.weight", (kernel.shape[1], channels, p, p))
    if weight is not None:
        # (D, C, p, p) -> (p, p, C, D) -> (p*p*C, D): rows follow the (i, j, c) patch order.
        pairs.append((kernel, weight.transpose(2, 3, 1, 0).reshape(kernel.shape)))
    bias = mismatch.check(sd, "patch_embed.proj.bias", patch.projection.bias.shape)
    if bias is not None:
        pairs.append((patch.projection.bias, bias))
    table, cls_row = position_table(
        mismatch, sd, "pos_embed", patch.position_embedding, encoder.grid_size, notices
    )
    if table is not None:
        pairs.append((patch.position_embedding, table))
    cls_token = mismatch.check(sd, "cls_token", encoder.class_token.token.shape)
    if cls_token is not None:
        # The cls token is always used with its position row added: fold it in.
        extra = 0.0 if cls_row is None else cls_row
        pairs.append((encoder.class_token.token, cls_token + extra))
    for i, layer in enumerate(encoder.blocks):
        block(mismatch, sd, f"blocks.{i}", layer, pairs)
    layer_norm(mismatch, sd, "norm", encoder.norm, pairs)

    # === Decoder ===
    if full:
        decoder = model.decoder
        mask_token = mismatch.check(sd, "mask_token", decoder.mask_token.shape)
        if mask_token is not None:
            pairs.append((decoder.mask_token, mask_token))
        linear(mismatch, sd, "decoder_embed", decoder.embed, pairs)
        table, cls_row = position_table(
            mismatch,
            sd,
            "decoder_pos_embed",
            decoder.position_embedding,
            decoder.grid_size,
            notices,
        )
        if table is not None:
            pairs.append((decoder.position_embedding, table))
        if cls_row is not None and np.max(np.abs(cls_row)) > CLS_ROW_TOLERANCE:
            mismatch.other.append(
                "decoder_pos_embed: the cls row is not zero "
                f"(max |value| {np.max(np.abs(cls_row)):.3g}); keras-mae's decoder "
                "adds no position to the cls token, as the official model's zero row."
            )
        for i, layer in enumerate(decoder.blocks):
            block(mismatch, sd, f"decoder_blocks.{i}", layer, pairs)
        layer_norm(mismatch, sd, "decoder_norm", decoder.norm, pairs)
        linear(mismatch, sd, "decoder_pred", decoder.head, pairs)
    unexpected = sorted(set(sd) - mismatch.used)
    mismatch.raise_if_any(unexpected, source)
    return pairs, notices


def load_official_weights(model, checkpoint, source=None):
    """Load official-layout or Hugging Face weights into an existing model.

    All-or-nothing: the checkpoint is checked against every variable before any
    is assigned, so a failed load leaves the model unchanged.

    Args:
        model: a `MaskedAutoencoder` or a `MAEEncoder`.
        checkpoint: a path (see `keras_mae.weights.readers.read_checkpoint`) or a
            state dict of arrays (official or Hugging Face names).
        source: str, how error messages name the checkpoint.

    Returns:
        `model`.
    """
    if isinstance(checkpoint, dict):
        state_dict, source = checkpoint, source or "given"
    else:
        state_dict, _ = read_checkpoint(checkpoint)
        source = source or repr(str(checkpoint))
    state_dict = {k: np.asarray(v, dtype="float32") for k, v in state_dict.items()}
    pairs, notices = official_assignments(state_dict, model, source)
    for notice in notices:
        warnings.warn(notice, stacklevel=2)
    for variable, value in pairs:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return model
