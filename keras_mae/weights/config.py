"""The constructor arguments of a model for a checkpoint.

From a named preset, a Hugging Face `config.json`, or the checkpoint's shapes
(with the head counts of the preset of the same shape). The class to build is
given by the caller; its `presets`, `preset_config` and `constructor_arguments`
answer for presets and for which arguments it takes.
"""

from keras_mae.weights.key_map import hf_to_official
from keras_mae.weights.key_map import is_hf_layout


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


def infer_config(state_dict, presets):
    """Constructor arguments from an official state dict, with the head counts
    of the preset of the same shape (`presets`: `keras_mae.PRESETS`)."""
    sd = hf_to_official(state_dict) if is_hf_layout(state_dict) else state_dict
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise ValueError(
            "cannot infer the architecture: the checkpoint has no patch_embed.proj.weight "
            "or pos_embed. Pass preset=... (one of: " + ", ".join(sorted(presets)) + ")."
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
    for preset in presets.values():
        known = preset["config"]
        if all(known.get(k) == config[k] for k in ("patch_size", "hidden_dim", "num_layers")):
            config["num_heads"] = known["num_heads"]
            if known.get("decoder_hidden_dim") == config.get("decoder_hidden_dim"):
                config["decoder_num_heads"] = known["decoder_num_heads"]
            break
    return config


def build_config(state_dict, hf_config, preset, overrides, cls):
    """The constructor arguments of `cls` for this checkpoint.

    Args:
        state_dict: the checkpoint's arrays (official or Hugging Face names).
        hf_config: the parsed `config.json` of a Hugging Face directory, or None.
        preset: a key of `cls.presets`, or None.
        overrides: dict of constructor arguments that win over all of the above;
            `image_size=(H, W)` replaces the height and width of `image_shape`.
        cls: the model class, with a `presets` table, `preset_config` and
            `constructor_arguments` (`keras_mae.models.base.PresetMixin`).
    """
    if preset is not None:
        config = cls.preset_config(preset)
    elif hf_config is not None:
        config = config_from_hf(hf_config)
    else:
        config = infer_config(state_dict, cls.presets)
    accepted = cls.constructor_arguments()
    config = {k: v for k, v in config.items() if k in accepted}
    overrides = dict(overrides)
    if "image_size" in overrides:  # (H, W): keep the channels of the architecture
        height, width = overrides.pop("image_size")
        config["image_shape"] = (height, width, config["image_shape"][2])
    config.update(overrides)
    needed = [k for k in ("num_heads", "decoder_num_heads") if k in accepted]
    unknown = [k for k in needed if k not in config]
    if unknown:
        raise ValueError(
            f"cannot tell {', '.join(unknown)} from the checkpoint's shapes and no "
            "preset has them: pass preset=... or the value(s) as keyword "
            "arguments (e.g. num_heads=12, decoder_num_heads=16)."
        )
    return config
