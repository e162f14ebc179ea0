"""MAE's forward pass in plain torch, straight on an official-layout state dict.

Test code: a second oracle that reads the official names (`patch_embed.proj`,
fused `blocks.N.attn.qkv`, `decoder_*`) directly, written from the semantics in
of the official `models_mae.py` (timm-style blocks: qkv reshaped to (B, N, 3, heads, head_dim)),
with no Hugging Face and no keras-mae code in between. It checks that the
official layout itself, not only our HF -> official key map, means what the
converter assumes.
"""

import torch
import torch.nn.functional as F


def block(sd, prefix, x, num_heads, eps):
    def lin(name, h):
        return F.linear(h, sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"])

    def norm(name, h):
        dim = h.shape[-1]
        return F.layer_norm(
            h, (dim,), sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], eps
        )

    batch, tokens, dim = x.shape
    qkv = lin("attn.qkv", norm("norm1", x))  # (B, N, 3D), q | k | v
    qkv = qkv.reshape(batch, tokens, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
    attn = (q @ k.transpose(-2, -1)) * (dim // num_heads) ** -0.5
    out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, dim)
    x = x + lin("attn.proj", out)
    return x + lin("mlp.fc2", F.gelu(lin("mlp.fc1", norm("norm2", x))))


def official_forward(
    state_dict,
    images,
    noise,
    mask_ratio,
    num_heads,
    decoder_num_heads,
    norm_pix_loss=False,
    eps=1e-6,
):
    """pred (B, L, p*p*C), mask (B, L), loss; images NHWC float32 numpy."""
    sd = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    x = torch.as_tensor(images).permute(0, 3, 1, 2)  # NCHW
    noise = torch.as_tensor(noise)
    weight = sd["patch_embed.proj.weight"]
    p = weight.shape[-1]
    tokens = F.conv2d(x, weight, sd["patch_embed.proj.bias"], stride=p)
    tokens = tokens.flatten(2).transpose(1, 2)  # (B, L, D)
    batch, length, dim = tokens.shape
    tokens = tokens + sd["pos_embed"][:, 1:]

    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    keep = ids_shuffle[:, :len_keep]
    tokens = torch.gather(tokens, 1, keep[:, :, None].expand(-1, -1, dim))
    mask = torch.ones(batch, length)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)

    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(batch, -1, -1)
    h = torch.cat([cls, tokens], dim=1)
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        h = block(sd, f"blocks.{i}", h, num_heads, eps)
        i += 1
    h = F.layer_norm(h, (dim,), sd["norm.weight"], sd["norm.bias"], eps)

    h = F.linear(h, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    dd = h.shape[-1]
    fill = sd["mask_token"].expand(batch, length + 1 - h.shape[1], -1)
    rest = torch.cat([h[:, 1:], fill], dim=1)
    rest = torch.gather(rest, 1, ids_restore[:, :, None].expand(-1, -1, dd))
    h = torch.cat([h[:, :1], rest], dim=1) + sd["decoder_pos_embed"]
    i = 0
    while f"decoder_blocks.{i}.norm1.weight" in sd:
        h = block(sd, f"decoder_blocks.{i}", h, decoder_num_heads, eps)
        i += 1
    h = F.layer_norm(h, (dd,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps)
    pred = F.linear(h, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]

    channels = x.shape[1]
    grid = x.shape[2] // p
    target = x.reshape(batch, channels, grid, p, grid, p)
    target = torch.einsum("nchpwq->nhwpqc", target).reshape(batch, length, p * p * channels)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, torch's default
        target = (target - mean) / (var + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    return pred.numpy(), mask.numpy(), float(loss)
