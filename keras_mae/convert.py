"""Import official MAE and Hugging Face ViTMAE weights into keras-mae models.

The official release stores a PyTorch state dict under `"model"`
(`mae_visualize_vit_*.pth`: encoder + decoder; `mae_pretrain_vit_*.pth`: the
encoder only). Hugging Face `ViTMAEForPreTraining` / `ViTMAEModel` directories
(`save_pretrained`: `config.json` + safetensors) hold the same weights under
other names, with q, k and v as three linears. Both are mapped onto the
official names first (`hf_to_official`) and then onto the Keras variables, so
there is one key map to trust. A checkpoint that does not fit the model is
refused as a whole, with the missing, unexpected and mis-shaped entries listed;
nothing is assigned until everything fits.

Command line (prints the model summary and where it wrote the file):

    python -m keras_mae.convert mae_visualize_vit_base.pth \
        --preset mae_vit_base_patch16 --output mae_vit_base.keras
    python -m keras_mae.convert mae_pretrain_vit_base.pth --encoder-only \
        --preset mae_vit_base_patch16 --output vit_base_encoder.keras
    python -m keras_mae.convert ./vit-mae-base --output mae.keras  # HF directory
"""

import argparse
import re
import warnings

import numpy as np

from keras_mae.checkpoint_io import read_checkpoint
from keras_mae.mae_encoder import MAEEncoder
from keras_mae.masked_autoencoder import MaskedAutoencoder
from keras_mae.presets import PRESETS
from keras_mae.presets import preset_config

# Zero-row tolerance for the cls row of a position table.
CLS_ROW_TOLERANCE = 1e-6
# Entries listed per kind of problem in an error message.
MAX_LISTED = 24

ENCODER_KWARGS = (
    "image_shape", "patch_size", "hidden_dim", "num_layers", "num_heads",
    "mlp_ratio", "layer_norm_epsilon",
)

# Hugging Face block sub-modules -> official names. Covers the Hub layout
# (`attention.attention.query`, `intermediate.dense`, ...) and the renamed one of
# transformers 5 (`attention.q_proj`, `mlp.fc1`, ...).
HF_BLOCK_NAMES = (
    ("attention.attention.query.", "q."),
    ("attention.attention.key.", "k."),
    ("attention.attention.value.", "v."),
    ("attention.q_proj.", "q."),
    ("attention.k_proj.", "k."),
    ("attention.v_proj.", "v."),
    ("attention.output.dense.", "attn.proj."),
    ("attention.o_proj.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("mlp.fc1.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("mlp.fc2.", "mlp.fc2."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
)
HF_ENCODER_BLOCK = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
HF_DECODER_BLOCK = re.compile(
    r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)$"
)
HF_TOP_LEVEL = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
    "decoder.decoder_embed.weight": "decoder_embed.weight",
    "decoder.decoder_embed.bias": "decoder_embed.bias",
    "decoder.decoder_norm.weight": "decoder_norm.weight",
    "decoder.decoder_norm.bias": "decoder_norm.bias",
    "decoder.decoder_pred.weight": "decoder_pred.weight",
    "decoder.decoder_pred.bias": "decoder_pred.bias",
}
DECODER_KEY = re.compile(r"^(mask_token|decoder_)")


def is_hf_layout(state_dict):
    """True when the names are Hugging Face ViTMAE ones rather than official."""
    return any(
        name.startswith(("vit.", "embeddings.", "decoder.")) or HF_ENCODER_BLOCK.match(name)
        for name in state_dict
    )


def hf_to_official(state_dict):
    """Rename a Hugging Face ViTMAE state dict to the official MAE layout.

    q, k and v are concatenated into the fused `attn.qkv` (q | k | v, as the
    official checkpoints). Works for `ViTMAEForPreTraining` and `ViTMAEModel`
    (with or without the `vit.` prefix), in the Hub layout and in the renamed
    layout of transformers 5. Names it does not know are kept as they are, so
    they surface as unexpected keys.

    Args:
        state_dict: dict of name -> array.

    Returns:
        A new dict in the official layout (arrays are shared, not copied).
    """
    official, qkv = {}, {}
    for name, value in state_dict.items():
        short = name[len("vit."):] if name.startswith("vit.") else name
        if short in HF_TOP_LEVEL:
            official[HF_TOP_LEVEL[short]] = value
            continue
        match = HF_ENCODER_BLOCK.match(name) or HF_DECODER_BLOCK.match(name)
        prefix = "blocks" if HF_ENCODER_BLOCK.match(name) else "decoder_blocks"
        rest = match and next(
            (new + match.group(2)[len(old):] for old, new in HF_BLOCK_NAMES
             if match.group(2).startswith(old)),
            None,
        )
        if not rest:
            official[name] = value
        elif rest[:2] in ("q.", "k.", "v."):
            qkv.setdefault((prefix, match.group(1), rest[2:]), {})[rest[0]] = value
        else:
            official[f"{prefix}.{match.group(1)}.{rest}"] = value
    for (prefix, index, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(parts))
            raise ValueError(
                f"{prefix}.{index}: attention {param} lacks the {missing} part(s); "
                "a Hugging Face checkpoint must hold query, key and value."
            )
        official[f"{prefix}.{index}.attn.qkv.{param}"] = np.concatenate(
            [parts["q"], parts["k"], parts["v"]], axis=0
        )
    return official


def bicubic_matrix(in_size, out_size):
    """`(out, in)` weights of 1-D bicubic resampling, as torch's
    `F.interpolate(mode="bicubic", align_corners=False)` (cubic a = -0.75,
    half-pixel centres, border samples repeated)."""
    a = -0.75
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        x = scale * (i + 0.5) - 0.5
        x0 = int(np.floor(x))
        t = x - x0
        weights = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        for k, w in enumerate(weights):
            matrix[i, min(max(x0 - 1 + k, 0), in_size - 1)] += w
    return matrix


def resample_position_table(table, grid_size, source_grid=None):
    """Resample a patch position table to another grid, bicubic, as the official
    `interpolate_pos_embed` of MAE fine-tuning.

    Args:
        table: `(L, D)` array, rows in row-major grid order (no cls row).
        grid_size: tuple `(new_h, new_w)`.
        source_grid: tuple `(h, w)` of `table`; defaults to the square grid.

    Returns:
        `(new_h * new_w, D)` float32 array.
    """
    table = np.asarray(table, dtype=np.float64)
    length, dim = table.shape
    if source_grid is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(
                f"cannot resample a position table of {length} rows: it is not a "
                "square grid. Build the model with the checkpoint's image size."
            )
        source_grid = (side, side)
    grid = table.reshape(source_grid[0], source_grid[1], dim)
    rows = bicubic_matrix(source_grid[0], grid_size[0])  # (new_h, h)
    cols = bicubic_matrix(source_grid[1], grid_size[1])  # (new_w, w)
    out = np.einsum("ah,hwd,bw->abd", rows, grid, cols)  # (new_h, new_w, D)
    return out.reshape(-1, dim).astype("float32")


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
            self.shapes.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(expected_shape)}")
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
                lines.append(f"{title} ({len(items)}): {shown}" + (f", ... ({more} more)" if more > 0 else ""))
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
    full = not isinstance(model, MAEEncoder)
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
            mismatch, sd, "decoder_pos_embed", decoder.position_embedding,
            decoder.grid_size, notices,
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
        checkpoint: a path (see `keras_mae.checkpoint_io.read_checkpoint`) or a
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


def config_from_hf(hf_config):
    """Constructor arguments of `MaskedAutoencoder` from a HF `ViTMAEConfig` dict."""
    problems = []
    if hf_config.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act={hf_config['hidden_act']!r} (keras-mae uses exact 'gelu')")
    if not hf_config.get("qkv_bias", True):
        problems.append("qkv_bias=False (keras-mae's attention has a qkv bias)")
    hidden = hf_config["hidden_size"]
    mlp_ratio = hf_config.get("intermediate_size", 4 * hidden) / hidden
    decoder_hidden = hf_config.get("decoder_hidden_size", 512)
    decoder_ratio = hf_config.get("decoder_intermediate_size", 4 * decoder_hidden) / decoder_hidden
    if decoder_ratio != mlp_ratio:
        problems.append(
            f"decoder MLP ratio {decoder_ratio} differs from the encoder's {mlp_ratio} "
            "(keras-mae shares one mlp_ratio)"
        )
    if problems:
        raise ValueError("unsupported Hugging Face ViTMAE config: " + "; ".join(problems))
    size = hf_config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else size
    return {
        "image_shape": (height, width, hf_config.get("num_channels", 3)),
        "patch_size": hf_config.get("patch_size", 16),
        "hidden_dim": hidden,
        "num_layers": hf_config["num_hidden_layers"],
        "num_heads": hf_config["num_attention_heads"],
        "mlp_ratio": mlp_ratio,
        "decoder_hidden_dim": decoder_hidden,
        "decoder_num_layers": hf_config.get("decoder_num_hidden_layers", 8),
        "decoder_num_heads": hf_config.get("decoder_num_attention_heads", 16),
        "mask_ratio": hf_config.get("mask_ratio", 0.75),
        "norm_pix_loss": hf_config.get("norm_pix_loss", False),
        "layer_norm_epsilon": hf_config.get("layer_norm_eps", 1e-12),
    }


def infer_config(state_dict):
    """Constructor arguments from an official state dict, with the head counts
    of the official preset of the same shape."""
    sd = hf_to_official(state_dict) if is_hf_layout(state_dict) else state_dict
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise ValueError(
            "cannot infer the architecture: the checkpoint has no patch_embed.proj.weight "
            "or pos_embed. Pass preset=... (one of: " + ", ".join(sorted(PRESETS)) + ")."
        )
    hidden, channels, patch, _ = sd["patch_embed.proj.weight"].shape
    side = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    num_layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    config = {
        "image_shape": (side * patch, side * patch, channels),
        "patch_size": patch,
        "hidden_dim": hidden,
        "num_layers": num_layers,
    }
    if "blocks.0.mlp.fc1.weight" in sd:
        config["mlp_ratio"] = sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden
    if "decoder_embed.weight" in sd:
        config["decoder_hidden_dim"] = sd["decoder_embed.weight"].shape[0]
        config["decoder_num_layers"] = len(
            {k.split(".")[1] for k in sd if k.startswith("decoder_blocks.")}
        )
    for name, preset in PRESETS.items():
        known = preset["config"]
        if all(known.get(k) == config[k] for k in ("patch_size", "hidden_dim", "num_layers")):
            config["num_heads"] = known["num_heads"]
            if known.get("decoder_hidden_dim") == config.get("decoder_hidden_dim"):
                config["decoder_num_heads"] = known["decoder_num_heads"]
            break
    return config


def build_config(state_dict, hf_config, preset, overrides, encoder_only):
    if preset is not None:
        config = preset_config(preset)
    elif hf_config is not None:
        config = config_from_hf(hf_config)
    else:
        config = infer_config(state_dict)
    if encoder_only:
        config = {k: v for k, v in config.items() if k in ENCODER_KWARGS}
    overrides = dict(overrides)
    if "image_size" in overrides:  # (H, W): keep the channels of the architecture
        height, width = overrides.pop("image_size")
        config["image_shape"] = (height, width, config["image_shape"][2])
    config.update(overrides)
    needed = ["num_heads"] if encoder_only else ["num_heads", "decoder_num_heads"]
    unknown = [k for k in needed if k not in config]
    if unknown:
        raise ValueError(
            f"cannot tell {', '.join(unknown)} from the checkpoint's shapes and no "
            "official preset has them: pass preset=... or the value(s) as keyword "
            "arguments (e.g. num_heads=12, decoder_num_heads=16)."
        )
    return config


def load_masked_autoencoder(path, preset=None, cls=None, **overrides):
    """A `MaskedAutoencoder` with the weights of a full official or HF checkpoint.

    Args:
        path: an official `.pth` (a `{"model": state_dict}` torch file with encoder
            and decoder, e.g. `mae_visualize_vit_base.pth`), a `.safetensors`
            file, or a Hugging Face `save_pretrained` directory.
        preset: str or None, the architecture (a key of `keras_mae.PRESETS`).
            None reads a HF directory's `config.json`, or infers the
            architecture from the checkpoint's shapes.
        cls: the class to build (a subclass of `MaskedAutoencoder`).
        **overrides: constructor arguments, e.g. `norm_pix_loss=True`, or
            `image_size=(256, 256)` (or `image_shape=(256, 256, 3)`): another
            resolution, to which the position tables are resampled.
    """
    state_dict, hf_config = read_checkpoint(path)
    config = build_config(state_dict, hf_config, preset, overrides, encoder_only=False)
    model = (cls or MaskedAutoencoder)(**config)
    return load_official_weights(model, state_dict, source=repr(str(path)))


def load_encoder(path, preset=None, cls=None, **overrides):
    """A `MAEEncoder` with the weights of an official or HF checkpoint.

    Takes encoder-only checkpoints (`mae_pretrain_vit_*.pth`, `ViTMAEModel`) and
    full ones (the decoder entries are then ignored, with a notice). Arguments
    as `load_masked_autoencoder`.
    """
    state_dict, hf_config = read_checkpoint(path)
    config = build_config(state_dict, hf_config, preset, overrides, encoder_only=True)
    model = (cls or MAEEncoder)(**config)
    return load_official_weights(model, state_dict, source=repr(str(path)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_mae.convert",
        description="Convert an official MAE checkpoint (.pth) or a Hugging Face "
        "ViTMAE directory into a Keras model file.",
    )
    parser.add_argument("checkpoint", help=".pth / .safetensors file or HF directory")
    parser.add_argument("--output", required=True, help="model.keras or name.weights.h5")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="architecture; default: config.json or the checkpoint's shapes")
    parser.add_argument("--encoder-only", action="store_true",
                        help="build the MAEEncoder backbone (for mae_pretrain_vit_*.pth)")
    parser.add_argument("--image-size", type=int, nargs="+", default=None,
                        help="H [W]: another resolution; position tables are resampled")
    parser.add_argument("--norm-pix-loss", action="store_true",
                        help="set norm_pix_loss (the released pretrain weights used it)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="encoder heads, for a checkpoint that is no preset")
    parser.add_argument("--decoder-num-heads", type=int, default=None,
                        help="decoder heads, for a checkpoint that is no preset")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = {}
    if args.image_size:
        overrides["image_size"] = tuple((args.image_size * 2)[:2])
    if args.norm_pix_loss:
        if args.encoder_only:
            raise SystemExit("--norm-pix-loss applies to the full model, not --encoder-only")
        overrides["norm_pix_loss"] = True
    if args.num_heads:
        overrides["num_heads"] = args.num_heads
    if args.decoder_num_heads and not args.encoder_only:
        overrides["decoder_num_heads"] = args.decoder_num_heads
    load = load_encoder if args.encoder_only else load_masked_autoencoder
    try:
        model = load(args.checkpoint, preset=args.preset, **overrides)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.output.endswith(".weights.h5"):
        model.save_weights(args.output)
    else:
        model.save(args.output)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"{type(model).__name__}: {params:,} trainable parameters; wrote {args.output}")


if __name__ == "__main__":
    main()
