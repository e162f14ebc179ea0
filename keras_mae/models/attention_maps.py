"""Where the encoder looks: its attention weights, the cls token's maps, rollout.

Each function runs the encoder's own layers eagerly, block by block, and asks
each block for its softmax weights (`ViTBlock.attention_weights`, which
recomputes q and k from the block's `norm1` and `qkv`); the encoder's call,
and so training, is untouched.

- `attention_weights(encoder, images)`: per block `(batch, heads, T, T)`,
  `T = 1 + L` tokens, the cls token first.
- `cls_attention(encoder, images, layer=-1)`: the cls token's attention over
  the patches of one block, `(batch, heads, grid_h, grid_w)`.
- `attention_rollout(encoder, images)`: attention rollout (Abnar & Zuidema
  2020, https://arxiv.org/abs/2005.00928): per block the heads' mean plus the
  identity (the residual connection), rows renormalised to sum to 1, multiplied
  through the blocks (`R = A_L ... A_1`): `(batch, T, T)`.
- `rollout_map(encoder, images)`: the rollout's cls row over the patches,
  `(batch, grid_h, grid_w)`, summing to at most 1 per image.

Example:
>>> encoder = keras_mae.MAEEncoder.from_preset("mae_vit_micro_patch2")
>>> images = np.zeros((2, 8, 8, 1))
>>> [tuple(w.shape) for w in attention_weights(encoder, images)]
[(2, 4, 17, 17), (2, 4, 17, 17), (2, 4, 17, 17), (2, 4, 17, 17)]
>>> tuple(cls_attention(encoder, images).shape)
(2, 4, 4, 4)
"""

from keras import ops


def attention_weights(encoder, images):
    """The softmax attention weights of every block of `encoder`.

    Args:
        encoder: a `keras_mae.MAEEncoder` (e.g. `mae.encoder`).
        images: `(batch, H, W, C)`, as the encoder takes them.

    Returns:
        A list of `encoder.num_layers` float32 tensors `(batch, num_heads, T,
        T)`, `T = 1 + num_patches`; row `i` of a head is token `i`'s
        attention over all tokens (sums to 1). Token 0 is the cls token, then
        the patches row-major over the grid.
    """
    x = encoder.class_token(encoder.patch_encoder(images))  # (B, T, D)
    weights = []
    for block in encoder.blocks:
        weights.append(block.attention_weights(x))  # (B, heads, T, T)
        x = block(x, training=False)
    return weights


def patch_map(encoder, row):
    """`(..., T)` over all tokens -> `(..., grid_h, grid_w)` over the patches."""
    return ops.reshape(row[..., 1:], (*row.shape[:-1], *encoder.grid_size))


def cls_attention(encoder, images, layer=-1):
    """The cls token's attention over the patches, per head, in one block.

    Args:
        encoder: a `keras_mae.MAEEncoder`.
        images: `(batch, H, W, C)`.
        layer: int, the block (Python indexing: -1 is the last). Defaults
            to -1.

    Returns:
        `(batch, num_heads, grid_h, grid_w)` float32: what the cls token
        gives each patch (each head's map sums to 1 minus its weight on the
        cls token itself).
    """
    num_layers = len(encoder.blocks)
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"layer must index one of the encoder's {num_layers} blocks "
            f"({-num_layers} to {num_layers - 1}). Received: layer={layer}"
        )
    weights = attention_weights(encoder, images)[layer]  # (B, heads, T, T)
    return patch_map(encoder, weights[:, :, 0])  # (B, heads, gh, gw)


def rollout(weights):
    """Attention rollout of per-block weights `[(batch, heads, T, T), ...]`.

    Returns:
        `(batch, T, T)`: `R = A_L ... A_1` with `A_l` the mean over heads of
        block `l` plus the identity, rows renormalised.
    """
    tokens = weights[0].shape[-1]
    identity = ops.eye(tokens, dtype="float32")
    result = None
    for w in weights:
        a = ops.mean(w, axis=1) + identity  # (B, T, T)
        a = a / ops.sum(a, axis=-1, keepdims=True)
        result = a if result is None else ops.matmul(a, result)
    return result


def attention_rollout(encoder, images):
    """Attention rollout through all blocks (Abnar & Zuidema 2020).

    Args:
        encoder: a `keras_mae.MAEEncoder`.
        images: `(batch, H, W, C)`.

    Returns:
        `(batch, T, T)` float32, rows summing to 1: how much each output token
        draws on each input token through the residual stream and every
        block's attention.
    """
    return rollout(attention_weights(encoder, images))


def rollout_map(encoder, images):
    """The rollout's cls row over the patches: `(batch, grid_h, grid_w)`."""
    result = attention_rollout(encoder, images)  # (B, T, T)
    return patch_map(encoder, result[:, 0])  # (B, gh, gw)
