"""The constructor arguments of a model for a checkpoint.

From a named preset, a Hugging Face `config.json`, or the checkpoint's shapes
(with the head counts of the preset of the same shape). The class to build is
given by the caller; its `presets`, `preset_config` and `constructor_arguments`
answer for presets and for which arguments it takes.

Conflicts are refused, not settled in silence: a `config.json` describes the
checkpoint's architecture, so a preset or a keyword argument that contradicts it
on an architecture field (`ARCHITECTURE`, or the channel count) is a
`ValueError` listing each field; other settings (image size, `mask_ratio`,
`norm_pix_loss`, `layer_norm_epsilon`, dtype, ...) may differ. Without a
`config.json` or a preset, what the shapes cannot tell is named in a warning.
"""

import inspect
import warnings

from keras_mae.weights.key_map import hf_to_official
from keras_mae.weights.key_map import is_hf_layout

# The fields that must match the weights (widths, depths, head counts); the head
# counts and the MLP ratio change no shape the assignment could check.
ARCHITECTURE = (
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "mlp_ratio",
    "decoder_hidden_dim",
    "decoder_num_layers",
    "decoder_num_heads",
)
# Settings a state dict does not hold; without a config.json or a preset they take
# the class defaults.
UNSTATED = ("mask_ratio", "norm_pix_loss", "layer_norm_epsilon")
BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
# Keys listed per kind in a message.
MAX_LISTED = 12


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


def block_count(sd, prefix):
    """Blocks `prefix.0`, `prefix.1`, ... present in full, counted from 0."""
    count = 0
    while all(
        f"{prefix}.{count}.{part}.{p}" in sd for part in BLOCK_PARTS for p in ("weight", "bias")
    ):
        count += 1
    return count


def official_keys(num_layers, decoder_num_layers=None):
    """The keys of an official state dict (`decoder_num_layers=None`: encoder only)."""
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"}
    keys |= {"norm.weight", "norm.bias"}
    layers = [("blocks", num_layers)]
    if decoder_num_layers is not None:
        keys |= {"mask_token", "decoder_pos_embed"}
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            keys |= {f"{name}.weight", f"{name}.bias"}
        layers.append(("decoder_blocks", decoder_num_layers))
    for prefix, count in layers:
        for i in range(count):
            keys |= {f"{prefix}.{i}.{part}.{p}" for part in BLOCK_PARTS for p in ("weight", "bias")}
    return keys


def listed(keys):
    keys = sorted(keys)
    more = len(keys) - MAX_LISTED
    return ", ".join(keys[:MAX_LISTED]) + (f", ... ({more} more)" if more > 0 else "")


def infer_config(state_dict, presets):
    """Constructor arguments from an official state dict, with the head counts
    of the preset of the same shape (`presets`: `keras_mae.PRESETS`).

    Also returns what does not fit the official layout: `(config, preset_name,
    unexpected, missing)`, `preset_name` the preset whose head counts were
    taken (or None)."""
    sd = hf_to_official(state_dict) if is_hf_layout(state_dict) else state_dict
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise ValueError(
            "cannot infer the architecture: the checkpoint has no patch_embed.proj.weight "
            "or pos_embed (found: "
            + listed(sd)
            + "). Pass preset=... (one of: "
            + ", ".join(sorted(presets))
            + ")."
        )
    hidden, channels, patch, _ = sd["patch_embed.proj.weight"].shape
    side = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    num_layers = block_count(sd, "blocks")
    config = {
        "image_shape": (side * patch, side * patch, channels),
        "patch_size": patch,
        "hidden_dim": hidden,
        "num_layers": num_layers,
    }
    if "blocks.0.mlp.fc1.weight" in sd:
        config["mlp_ratio"] = sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden
    decoder_layers = None
    if "decoder_embed.weight" in sd:
        decoder_layers = block_count(sd, "decoder_blocks")
        config["decoder_hidden_dim"] = sd["decoder_embed.weight"].shape[0]
        config["decoder_num_layers"] = decoder_layers
    expected = official_keys(num_layers, decoder_layers)
    unexpected, missing = sorted(set(sd) - expected), sorted(expected - set(sd))
    matched = None
    for name, preset in presets.items():
        known = preset["config"]
        if all(known.get(k) == config[k] for k in ("patch_size", "hidden_dim", "num_layers")):
            config["num_heads"] = known["num_heads"]
            if known.get("decoder_hidden_dim") == config.get("decoder_hidden_dim"):
                config["decoder_num_heads"] = known["decoder_num_heads"]
            matched = name
            break
    return config, matched, unexpected, missing


def class_defaults(cls, names):
    parameters = inspect.signature(cls.__init__).parameters
    return {n: parameters[n].default for n in names if n in parameters}


def conflicts_with_hf(hf, given, accepted, what):
    """`field: <what> value, config.json value` for each architecture field that differs."""
    lines = [
        f"{key}: {what} {given[key]!r}, config.json {hf[key]!r}"
        for key in ARCHITECTURE
        if key in given and key in accepted and given[key] != hf[key]
    ]
    if "image_shape" in given and tuple(given["image_shape"])[-1] != hf["image_shape"][2]:
        lines.append(
            f"channels: {what} {tuple(given['image_shape'])[-1]} "
            f"(image_shape={tuple(given['image_shape'])}), config.json {hf['image_shape'][2]}"
        )
    return lines


def build_config(state_dict, hf_config, preset, overrides, cls, source=None):
    """The constructor arguments of `cls` for this checkpoint.

    Args:
        state_dict: the checkpoint's arrays (official or Hugging Face names).
        hf_config: the parsed `config.json` of a Hugging Face directory, or None.
        preset: a key of `cls.presets`, or None. With a `config.json`, it must
            agree with it on every architecture field; its other settings are
            used.
        overrides: dict of constructor arguments that win over all of the above,
            except architecture fields that contradict a `config.json` (refused);
            `image_size=(H, W)` replaces the height and width of `image_shape`.
        cls: the model class, with a `presets` table, `preset_config` and
            `constructor_arguments` (`keras_mae.models.base.PresetMixin`).
        source: str, how messages name the checkpoint. Defaults to "the checkpoint".

    Raises:
        ValueError: a preset or override contradicts `config.json`, or the head
            counts cannot be told (with the keys that do not fit the official
            layout, when some do not).
    """
    source = source or "the checkpoint"
    accepted = cls.constructor_arguments()
    overrides = dict(overrides)
    hf = config_from_hf(hf_config) if hf_config is not None else None
    if hf is not None:
        from_preset = []
        if preset is not None:
            from_preset = conflicts_with_hf(hf, cls.preset_config(preset), accepted, "preset")
        from_arguments = conflicts_with_hf(hf, overrides, accepted, "argument")
        if from_preset or from_arguments:
            culprits = [f"preset={preset!r}"] if from_preset else []
            culprits += ["the keyword arguments"] if from_arguments else []
            raise ValueError(
                f"{source}: its config.json describes the architecture of its weights, and "
                + " and ".join(culprits)
                + (" contradicts" if culprits == [f"preset={preset!r}"] else " contradict")
                + " it:\n  "
                + "\n  ".join(from_preset + from_arguments)
                + "\nDrop "
                + (
                    " and ".join(
                        ["the preset"] * bool(from_preset)
                        + ["those arguments"] * bool(from_arguments)
                    )
                )
                + ": config.json gives the whole architecture. Settings such as image_size, "
                "mask_ratio, norm_pix_loss, layer_norm_epsilon or dtype may still be given."
            )
    inferred = None
    if preset is not None:
        config = cls.preset_config(preset)
    elif hf is not None:
        config = hf
    else:
        config, matched, unexpected, missing = infer_config(state_dict, cls.presets)
        inferred = matched
    config = {k: v for k, v in config.items() if k in accepted}
    if "image_size" in overrides:  # (H, W): keep the channels of the architecture
        height, width = overrides.pop("image_size")
        config["image_shape"] = (height, width, config["image_shape"][2])
    config.update(overrides)
    needed = [k for k in ("num_heads", "decoder_num_heads") if k in accepted]
    unknown = [k for k in needed if k not in config]
    if unknown:
        if hf is None and preset is None and (unexpected or missing):
            lines = [
                f"{source} does not have the layout of an official MAE checkpoint, so its "
                "architecture cannot be inferred from its shapes:"
            ]
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): {listed(unexpected)}")
            if missing:
                lines.append(f"  missing keys ({len(missing)}): {listed(missing)}")
            lines.append(
                "Remove the keys that are not the model's (or load the file's model "
                "state dict only), or pass preset=... for the architecture it has."
            )
            raise ValueError("\n".join(lines))
        raise ValueError(
            f"cannot tell {', '.join(unknown)} from the checkpoint's shapes and no "
            "preset has them: pass preset=... or the value(s) as keyword "
            "arguments (e.g. num_heads=12, decoder_num_heads=16)."
        )
    if hf is None and preset is None:
        notice_inferred(config, inferred, overrides, accepted, cls, source)
    return config


def notice_inferred(config, matched, overrides, accepted, cls, source):
    """Warn which settings neither a config.json nor a preset gave."""
    heads = [k for k in ("num_heads", "decoder_num_heads") if k in accepted and k not in overrides]
    defaults = class_defaults(cls, [k for k in UNSTATED if k in accepted and k not in overrides])
    if not heads and not defaults:
        return
    parts = []
    if heads:
        parts.append(
            ", ".join(f"{k}={config[k]}" for k in heads)
            + f" from the preset {matched!r} of the same shape"
        )
    if defaults:
        parts.append(", ".join(f"{k}={v!r}" for k, v in defaults.items()) + " (defaults)")
    warnings.warn(
        f"{source} comes with no config.json and no preset was given: the architecture "
        "was inferred from its shapes, with " + "; ".join(parts) + ". If the checkpoint "
        "was trained otherwise, pass preset=... or these as keyword arguments "
        "(--preset, --mask-ratio, ... on the command line).",
        UserWarning,
        stacklevel=4,
    )
