"""Tiny Hugging Face ViTMAE models as an independent numerical oracle (test code).

torch and transformers are test-only dependencies; this module imports them.
"""

import numpy as np
import torch

from keras_mae.weights.key_map import hf_to_official

# 32x32 RGB, patch 8 (16 patches, 4 visible at 75%), 32-d x 2 blocks, decoder 16-d x 1.
TINY = dict(
    image_size=32,
    patch_size=8,
    num_channels=3,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
    layer_norm_eps=1e-6,
    mask_ratio=0.75,
)


def random_hf_model(seed=0, perturbation=0.1, **overrides):
    """A `ViTMAEForPreTraining` with every trainable parameter randomised.

    HF's own initialisation plus `perturbation * normal` on every trainable
    parameter: LayerNorm scales/offsets and biases start at 1 / 0, and moving
    them makes a wrong key map (a swapped norm, a dropped bias) visible.
    """
    from transformers import ViTMAEConfig
    from transformers import ViTMAEForPreTraining

    torch.manual_seed(seed)
    model = ViTMAEForPreTraining(ViTMAEConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(perturbation * torch.randn_like(param))
    return model


def numpy_state_dict(model):
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def official_state_dict(model):
    """The official MAE layout of a HF model's weights, through the key map."""
    return hf_to_official(numpy_state_dict(model))


def save_official(model, path, encoder_only=False):
    """Write `{"model": state_dict}` with torch.save, as the official release."""
    sd = official_state_dict(model)
    if encoder_only:
        sd = {k: v for k, v in sd.items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    return path


def images_and_noise(batch=2, size=32, channels=3, num_patches=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, size, size, channels)).astype("float32")
    noise = rng.random((batch, num_patches)).astype("float32")
    return images, noise


def hf_outputs(model, images, noise, grads=False):
    """pred, mask, ids_restore, loss (and official-layout gradients) of a HF model.

    A float64 model (`model.double()`) gets float64 inputs: a reference for
    float32 rounding."""
    model.zero_grad()
    dtype = next(model.parameters()).dtype
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dtype)  # NCHW
    with torch.set_grad_enabled(grads):
        out = model(pixel_values=pixels, noise=torch.from_numpy(noise))
        if grads:
            out.loss.backward()
    result = {
        "pred": out.logits.detach().numpy(),
        "mask": out.mask.detach().numpy(),
        "ids_restore": out.ids_restore.detach().numpy(),
        "loss": float(out.loss.detach()),
    }
    if grads:
        named = {
            k: (p.grad.numpy().copy() if p.grad is not None else np.zeros_like(p.detach().numpy()))
            for k, p in model.named_parameters(remove_duplicate=False)
        }
        # Fixed position tables have no gradient; zeros keep the key map whole.
        for k, v in model.state_dict().items():
            named.setdefault(k, np.zeros_like(v.numpy()))
        result["grads"] = hf_to_official(named)
    return result


def hf_encoder_tokens(model, images, interpolate=False):
    """HF encoder output on all patches in order: mask_ratio 0, increasing noise."""
    vit = model.vit
    num_patches = (images.shape[1] // model.config.patch_size) ** 2
    noise = np.tile(np.arange(num_patches, dtype="float32"), (images.shape[0], 1))
    old = vit.embeddings.config.mask_ratio
    vit.embeddings.config.mask_ratio = 0.0
    try:
        with torch.no_grad():
            out = vit(
                pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                noise=torch.from_numpy(noise),
                interpolate_pos_encoding=interpolate,
            )
    finally:
        vit.embeddings.config.mask_ratio = old
    return out.last_hidden_state.numpy()
