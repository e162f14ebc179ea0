"""Hugging Face ViTMAE names -> the official MAE names.

Hugging Face `ViTMAEForPreTraining` / `ViTMAEModel` directories hold the
weights of the official release under other names, with q, k and v as three
linears. They are mapped onto the official names first, so that one key map
(`keras_mae.weights.assign`) onto the Keras variables is all there is to trust.
"""

import re

import numpy as np

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
HF_DECODER_BLOCK = re.compile(r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)$")
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
        short = name[len("vit.") :] if name.startswith("vit.") else name
        if short in HF_TOP_LEVEL:
            official[HF_TOP_LEVEL[short]] = value
            continue
        match = HF_ENCODER_BLOCK.match(name) or HF_DECODER_BLOCK.match(name)
        prefix = "blocks" if HF_ENCODER_BLOCK.match(name) else "decoder_blocks"
        rest = match and next(
            (
                new + match.group(2)[len(old) :]
                for old, new in HF_BLOCK_NAMES
                if match.group(2).startswith(old)
            ),
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
